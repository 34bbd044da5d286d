"""Where arrays live: the device mesh, partition rules, host-local -> global batches.

All partition decisions of training are made here; models and the step never
name devices.

  * One mesh axis, "data", over every device of every host.
  * Batches are split over "data" along their first axis.
  * Everything else is replicated, unless `config.sharding.fsdp`: then the
    state leaves the model family allows (its `is_fsdp_leaf`, e.g. VSAIT's
    fixed LSH projections and optimizer states) are split over "data" too
    (FSDP-style; XLA gathers them where the step needs them).

Multi-host runs call `maybe_initialize_distributed()` before anything touches
a device; each host then feeds only its own part of the global batch
(`global_batch`).
"""

from collections.abc import Callable, Sequence
import os
from typing import Any

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> bool:
  """Starts `jax.distributed` when the environment describes a multi-process job.

  Recognised environments:
    * JAX_COORDINATOR_ADDRESS (host:port of process 0) with JAX_NUM_PROCESSES
      and JAX_PROCESS_ID: any launcher, e.g. several processes on localhost.
    * SLURM with more than one task (SLURM_NTASKS > 1): one process per task.
    * A multi-host Cloud TPU slice (TPU_WORKER_HOSTNAMES lists several hosts,
      or MEGASCALE_COORDINATOR_ADDRESS is set).
    * I2I_JAX_DISTRIBUTED=1, set by a launcher (launch/tpu_pod.sh) that knows
      the job has several processes: JAX finds the rest itself (GCE TPU VM
      metadata, SLURM, ...). TPU VMs made with `gcloud compute tpus tpu-vm`
      do not set TPU_WORKER_HOSTNAMES.
  Must run before the first JAX computation. Returns whether it initialised.
  """
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS"):
    missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
    if missing:
      raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} "
                       "is not; set all three for a multi-process run")
    jax.distributed.initialize(
        coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(env["JAX_NUM_PROCESSES"]),
        process_id=int(env["JAX_PROCESS_ID"]))
  elif int(env.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
  elif ("," in env.get("TPU_WORKER_HOSTNAMES", "")
        or env.get("MEGASCALE_COORDINATOR_ADDRESS")
        or env.get("I2I_JAX_DISTRIBUTED") == "1"):
    jax.distributed.initialize()
  else:
    return False
  logging.info("jax.distributed: process %d of %d, %d local of %d devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def make_mesh(devices: list[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh ("data",) over `devices` (default: all devices of all hosts).

  Auto axes: shardings are given at the jit boundary and XLA propagates them.
  """
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def fsdp_spec(shape: tuple[int, ...], axis_size: int, min_size: int) -> P:
  """Splits the largest axis that `axis_size` divides; replicates small arrays.

  Args:
    shape: the array's shape.
    axis_size: devices on the "data" axis.
    min_size: arrays with fewer elements stay replicated (gathering them costs
      more than storing them).
  """
  if int(np.prod(shape, dtype=np.int64)) < min_size or axis_size == 1:
    return P()
  candidates = [i for i, n in enumerate(shape) if n % axis_size == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], i))  # ties: the later (output) axis
  return P(*[DATA_AXIS if i == axis else None for i in range(len(shape))])


def state_shardings(state: Any, mesh: jax.sharding.Mesh,
                    sharding_config: ml_collections.ConfigDict,
                    is_fsdp_leaf: Callable[[str], bool]) -> Any:
  """NamedShardings for every leaf of a train state (or its `jax.eval_shape`).

  Args:
    state: a model family's train state of arrays or ShapeDtypeStructs.
    mesh: from `make_mesh`.
    sharding_config: `config.sharding` (fsdp, fsdp_min_size).
    is_fsdp_leaf: the model family's rule: a leaf's path, as
      "variables/lsh/constants/weight_0" or "g_opt_state/1/mu/...", -> whether
      FSDP may split it (the rest stays replicated).
  Returns:
    A pytree like `state` of NamedShardings.
  """
  axis_size = mesh.shape[DATA_AXIS]

  def rule(path, leaf):
    if sharding_config.fsdp and is_fsdp_leaf(
        jax.tree_util.keystr(path, simple=True, separator="/")):
      return NamedSharding(mesh, fsdp_spec(leaf.shape, axis_size,
                                           sharding_config.fsdp_min_size))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(rule, state)


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis over "data", the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(host_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Host-local batches -> global arrays split over "data".

  Args:
    host_batch: {name: [B_host, ...]}: this host's share of the global batch
      (B = B_host * process_count).
    mesh: from `make_mesh`.
  Returns:
    {name: [B, ...] jax.Array} sharded with `batch_sharding(mesh)`.
  """
  sharding = batch_sharding(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in host_batch.items()}


class _GlobalBatches(grain.DatasetIterator):
  """`global_batch` of each batch of a host-local batch iterator (its state is the parent's)."""

  def __init__(self, host_batches: grain.DatasetIterator, keys: Sequence[str],
               mesh: jax.sharding.Mesh):
    super().__init__(host_batches)
    self._keys, self._mesh = tuple(keys), mesh

  def __next__(self) -> dict[str, jax.Array]:
    host_batch = next(self._parent)
    return global_batch({k: host_batch[k] for k in self._keys}, self._mesh)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]):
    self._parent.set_state(state)


def prefetch_global_batches(host_batches: grain.DatasetIterator, keys: Sequence[str],
                            mesh: jax.sharding.Mesh, buffer_size: int) -> grain.DatasetIterator:
  """Global batches of `keys`, read and copied to the devices ahead of the step that takes them.

  A thread runs `next(host_batches)` and `global_batch` up to `buffer_size`
  batches ahead (grain's `ThreadPrefetchDatasetIterator`), so that the host
  work of the next batch overlaps the running step: at batch 1 on a GPU it is
  a large part of a step. The returned iterator's state is that of the last
  batch handed out (what a checkpoint must store), in `host_batches`'s own
  format, so that checkpoints restore into `host_batches` either way.
  `buffer_size` 0: no thread, each batch read and copied on `next()`.
  """
  return grain.experimental.ThreadPrefetchDatasetIterator(
      _GlobalBatches(host_batches, keys, mesh), buffer_size)


def check_batch_split(global_batch_size: int, grad_accum_steps: int,
                      mesh: jax.sharding.Mesh) -> None:
  """Raises, naming the config keys, unless every micro-batch splits evenly over devices."""
  devices = mesh.shape[DATA_AXIS]
  if global_batch_size % grad_accum_steps or (
      global_batch_size // grad_accum_steps) % devices:
    raise ValueError(
        f"config.data.batch_size={global_batch_size} must be a multiple of "
        f"config.grad_accum_steps={grad_accum_steps} x {devices} devices (each "
        "micro-batch is split evenly over the devices); set "
        f"--config.data.batch_size={grad_accum_steps * devices} for one image per "
        "device and micro-batch")
