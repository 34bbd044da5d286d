"""Session-wide test setup, applied before JAX initialises its backend.

  * 8 fake CPU devices (`--xla_force_host_platform_device_count=8`), so that
    sharded code runs as on an 8-chip host; code that uses one device is
    unaffected (it runs on device 0).
  * A persistent compilation cache in a per-session temporary directory,
    exported to the environment so that training subprocesses reuse the
    programs that earlier tests (or their own earlier runs) compiled.
"""

import atexit
import os
import shutil
import tempfile

_FLAGS = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _FLAGS:
  os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_force_host_platform_device_count=8".strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="i2i_jax_test_jax_cache_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
