"""Session-wide test setup, applied before JAX initialises its backend.

  * 8 fake CPU devices (`--xla_force_host_platform_device_count=8`), so that
    sharded code runs as on an 8-chip host; code that uses one device is
    unaffected (it runs on device 0).
  * A persistent compilation cache in a per-session temporary directory,
    exported to the environment so that training subprocesses reuse the
    programs that earlier tests (or their own earlier runs) compiled.
  * `memory_bucket`: a gs:// bucket in memory, for outputs on object stores.
  * `tiny_workdir`: a training workdir with the step-0 checkpoint of the tiny
    config, made once per session (real Orbax files).
"""

import atexit
import os
import shutil
import tempfile
import uuid

from etils import epath
import fsspec
from fsspec.implementations import memory
import pytest

_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _FLAGS:
  os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_force_host_platform_device_count=8".strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="i2i_jax_test_jax_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


@pytest.fixture
def memory_bucket():
  """A gs:// bucket for tests: `gs://` paths served by fsspec's in-memory file system.

  A documented fake of an object store (no network here): `etils.epath` reaches
  gs:// through fsspec's "gcs" protocol when TensorFlow is not installed, and
  fsspec's MemoryFileSystem implements the same file-system interface as gcsfs
  (no real directories, rename = copy + delete). Yields a fresh bucket URL.
  """
  fsspec.register_implementation("gcs", memory.MemoryFileSystem, clobber=True)
  bucket = f"gs://test-bucket-{uuid.uuid4().hex[:8]}"
  yield bucket
  if epath.Path(bucket).exists():
    epath.Path(bucket).rmtree()


@pytest.fixture(scope="session")
def tiny_workdir(tmp_path_factory) -> str:
  """A training workdir holding the step-0 checkpoint of configs/tiny.py."""
  # Imported here: JAX must see the environment set above first.
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from i2i_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from i2i_jax.families import vsait as vsait_family  # pylint: disable=g-import-not-at-top
  from i2i_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  from i2i_jax.models import vsait  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  fns = vsait_family.make_step_functions(config)
  # Jitted: the eager init of all five networks takes ~30 s on 2 cores.
  variables = jax.jit(lambda key: vsait.init_variables(fns.modules, key, (32, 32)))(
      jax.random.key(0))
  path = tmp_path_factory.mktemp("tiny_run")
  manager = checkpoint.make_manager(path, ml_collections.ConfigDict(
      dict(every_steps=1, keep=2, keep_every_steps=0, async_save=False)))
  checkpoint.save(manager, 0, vsait_family.create_train_state(fns, variables), None, config,
                  force=True)
  manager.wait_until_finished()
  return str(path)
