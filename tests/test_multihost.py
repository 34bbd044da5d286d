"""Multi-process training: 2 processes x 4 CPU devices train like 1 process x 8.

Two real `python -m i2i_jax.train` processes join through jax.distributed on
127.0.0.1 (i2i_jax.sharding reads JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID; cross-process CPU collectives go through gloo, JAX's CPU
default), each feeding its own shard of the data, and write one checkpoint.

Why a tolerance and not bit equality: the input pipeline gives every global
batch the same examples in the same order for any number of hosts (see
`i2i_jax.data.pipeline._HostSlots`; checked exactly below), so the runs differ
only in float32 summation order (gloo's cross-process all-reduce vs the
in-process one): ~1e-5 of a step after two steps. The paper's Adam (b1 = 0,
eps = 1e-8) makes the first update ~lr * sign(g), which turns that rounding into
+-lr flips wherever g ~ 0 (conv biases ahead of instance norm); the test sets
eps = 1 (update ~ lr * g / (|g| + 1), smooth in g) and lr = 0.1, and bounds the
difference by 0.1% of the last step: a host reading the wrong data changes the
gradient, and so the step, by order 100%.
"""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from i2i_jax.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
BATCH = 8
STEPS = 2
# Parameters that trained: |1x8 - 2x4| <= STEP_RTOL * |last step| + ATOL * sqrt(size).
STEP_RTOL = 1e-3
ATOL = 1e-6


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train_flags(workdir):
  return [
      "--config=configs/tiny.py", f"--workdir={workdir}", f"--config.total_steps={STEPS}",
      f"--config.data.batch_size={BATCH}",
      "--config.checkpoint.every_steps=1", "--config.log_images_every=1000",
      "--config.optimizer.g.eps=1.0", "--config.optimizer.d.eps=1.0",
      "--config.optimizer.g.learning_rate=0.1", "--config.optimizer.d.learning_rate=0.1",
  ]


def _start(flags, devices, log, **env):
  clean = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "SLURM_", "TPU_", "MEGASCALE_", "XLA_FLAGS"))}
  return subprocess.Popen(
      [sys.executable, "-m", "i2i_jax.train", *flags], cwd=REPO, stdout=log,
      stderr=subprocess.STDOUT, env={**clean, "JAX_PLATFORMS": "cpu",
                                     "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
                                     **env})


def _wait(processes, logs, timeout):
  try:
    for process in processes:
      process.wait(timeout=timeout)
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process, log in zip(processes, logs):
    if process.returncode:
      tail = pathlib.Path(log.name).read_text()[-4000:]
      raise AssertionError(f"{process.args} exited {process.returncode}; log tail:\n{tail}")


def _load_variables(workdir, step):
  """The checkpoint's variables as numpy arrays, whatever device layout wrote them."""
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  return state["variables"]


def test_the_hosts_together_feed_the_single_host_global_batch():
  """Host i's batch is slots [i*b, (i+1)*b) of the 1-host batch: same images, same crops."""
  from i2i_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config().data
  config.batch_size = BATCH

  def step_batches(process_index, process_count):
    iterator = pipeline.make_train_iterator(config, seed=0, process_index=process_index,
                                            process_count=process_count)
    return [next(iterator) for _ in range(STEPS)]

  single = step_batches(0, 1)
  hosts = [step_batches(i, 2) for i in range(2)]
  for step in range(STEPS):
    for domain in ("source", "target"):
      assert all(h[step][domain].shape[0] == BATCH // 2 for h in hosts)
      np.testing.assert_array_equal(np.concatenate([h[step][domain] for h in hosts]),
                                    single[step][domain])


def test_two_processes_of_four_devices_match_one_process_of_eight(tmp_path):
  one, two = tmp_path / "one_process", tmp_path / "two_processes"
  distributed = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}",
                 "JAX_NUM_PROCESSES": "2"}
  logs = [open(tmp_path / name, "w") for name in ("one.log", "two_0.log", "two_1.log")]
  processes = [_start(_train_flags(one), 8, logs[0])]
  processes += [_start(_train_flags(two), 4, logs[1 + i], JAX_PROCESS_ID=str(i),
                       **distributed) for i in range(2)]
  try:
    _wait(processes, logs, timeout=900)
  finally:
    for log in logs:
      log.close()

  two_log = (tmp_path / "two_0.log").read_text()
  assert "jax.distributed: process 0 of 2, 4 local of 8 devices" in two_log
  assert (two / "checkpoints" / str(STEPS) / "data_iterator" / "process_1-of-2.json").exists()

  final_one, final_two = _load_variables(one, STEPS), _load_variables(two, STEPS)
  previous_one = _load_variables(one, STEPS - 1)
  assert jax.tree.structure(final_one) == jax.tree.structure(final_two)
  moved = 0
  for (path, a), b, before in zip(jax.tree_util.tree_leaves_with_path(final_one),
                                  jax.tree.leaves(final_two), jax.tree.leaves(previous_one)):
    name = jax.tree_util.keystr(path)
    step_size, difference = np.linalg.norm(a - before), np.linalg.norm(a - b)
    if step_size == 0:  # constants (VGG, LSH projections and their norms)
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=name)
      continue
    moved += step_size > 100 * ATOL * np.sqrt(a.size)
    assert difference <= STEP_RTOL * step_size + ATOL * np.sqrt(a.size), (
        f"{name}: 1x8 and 2x4 differ by {difference:.3g} (norm); the last step moved it "
        f"by {step_size:.3g}")
  assert moved >= 10, "the last step barely moved the parameters: the comparison is vacuous"
