"""Orbax checkpoints of a run: what is saved, where, and how to load it back.

Layout of a workdir:

  WORKDIR/checkpoints/<step>/state/          the TrainState (all networks' variables,
                                             both optimizer states, step)
  WORKDIR/checkpoints/<step>/data_iterator/  the grain iterator's position (per host)
  WORKDIR/checkpoints/<step>/config/         the ConfigDict the run was started with

Orbax writes each step to a temporary directory and renames it when complete,
so a process killed mid-save leaves the previous checkpoint intact.
"""

import dataclasses
import logging as py_logging
import os
from typing import Any

from absl import logging
import grain
import grain.checkpoint
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from i2i_jax.models import generator as generator_lib
from i2i_jax.models import vsait


class _OrbaxInfoFilter(py_logging.Filter):
  """Drops Orbax's INFO records (a dozen lines per save) unless verbosity is >= 1."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return (record.levelno > py_logging.INFO or logging.get_verbosity() >= 1
            or f"{os.sep}orbax{os.sep}" not in record.pathname)


def quiet_orbax_logs() -> None:
  """Keeps Orbax's per-save INFO lines out of the log; `-v 1` brings them back.

  Called by the command-line entry points; warnings and errors always show.
  """
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _OrbaxInfoFilter) for f in handler.filters):
    handler.addFilter(_OrbaxInfoFilter())


def checkpoint_dir(workdir: str | epath.PathLike) -> epath.Path:
  """WORKDIR/checkpoints, made absolute for local paths (Orbax refuses relative ones)."""
  if "://" not in os.fspath(workdir):
    workdir = os.path.abspath(workdir)
  return epath.Path(workdir) / "checkpoints"


def make_manager(workdir: str | epath.PathLike,
                 checkpoint_config: ml_collections.ConfigDict | None = None,
                 *, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over WORKDIR/checkpoints with the keep policies of the config.

  Args:
    workdir: local path or any epath (gs://, s3://).
    checkpoint_config: `config.checkpoint` (every_steps, keep, keep_every_steps,
      async_save); None for reading.
    read_only: open an existing run without creating or deleting anything.
  """
  options = ocp.CheckpointManagerOptions(create=not read_only, read_only=read_only)
  if checkpoint_config is not None:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=checkpoint_config.every_steps,
        max_to_keep=checkpoint_config.keep or None,
        keep_period=checkpoint_config.keep_every_steps or None,
        enable_async_checkpointing=checkpoint_config.async_save,
        create=True)
  return ocp.CheckpointManager(
      checkpoint_dir(workdir), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "data_iterator": grain.checkpoint.CheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_iterator: grain.DatasetIterator | None, config: ml_collections.ConfigDict,
         *, force: bool = False) -> bool:
  """Saves (asynchronously when configured) if the policy or `force` says so."""
  items = {"state": ocp.args.StandardSave(state),
           "config": ocp.args.JsonSave(config.to_dict())}
  if data_iterator is not None:
    items["data_iterator"] = grain.checkpoint.CheckpointSave(data_iterator)
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore(manager: ocp.CheckpointManager, state_template: Any,
            data_iterator: grain.DatasetIterator | None, step: int | None = None) -> Any:
  """Restores the state (into the shardings of `state_template`) and the iterator in place."""
  step = manager.latest_step() if step is None else step
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
  items = {"state": ocp.args.StandardRestore(abstract)}
  if data_iterator is not None:
    items["data_iterator"] = grain.checkpoint.CheckpointRestore(data_iterator)
  return manager.restore(step, args=ocp.args.Composite(**items))["state"]


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
  """A trained generator ready to apply: `module.apply(variables, images)`."""
  config: ml_collections.ConfigDict
  step: int
  module: generator_lib.ResNetGenerator
  variables: dict[str, Any]
  path: str


def load_generator(path: str | epath.PathLike, step: int | None = None,
                   compute_dtype: str | None = None) -> LoadedGenerator:
  """Loads the generator of a run (its workdir or its `checkpoints` directory).

  Args:
    path: a training workdir, or the `checkpoints` directory inside one (what
      `python -m i2i_jax.convert` writes too).
    step: which checkpoint; the latest by default.
    compute_dtype: overrides the run's `config.compute_dtype` (e.g. "bfloat16").
  Raises:
    FileNotFoundError: naming the directory when it holds no checkpoint.
  """
  path = epath.Path(path)
  directory = path if path.name == "checkpoints" else checkpoint_dir(path)
  if not directory.exists():
    raise FileNotFoundError(f"no checkpoints directory at {directory} (expected a training "
                            "workdir or its checkpoints/ directory)")
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "config": ocp.JsonCheckpointHandler()})
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoint in {directory}")
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(), config=ocp.args.JsonRestore()))
  config = ml_collections.ConfigDict(restored["config"])
  modules = vsait.build_modules(config.model, jnp.dtype(compute_dtype or config.compute_dtype))
  variables = restored["state"]["variables"]["generator"]
  return LoadedGenerator(config=config, step=int(step), module=modules.generator,
                         variables=variables, path=str(directory))
