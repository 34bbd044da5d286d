"""Orbax checkpoints of a run: what is saved, where, and how to load it back.

Layout of a workdir:

  WORKDIR/checkpoints/<step>/state/          the model family's train state (step, all
                                             networks' variables, optimizer states)
  WORKDIR/checkpoints/<step>/data_iterator/  the grain iterator's position (per host)
  WORKDIR/checkpoints/<step>/config/         the ConfigDict the run was started with

Orbax writes each step to a temporary directory and renames it when complete,
so a process killed mid-save leaves the previous checkpoint intact. A step
damaged later (a truncated or missing file) is skipped with a warning naming
it: reading falls back to the newest step that can be read, and resuming
training moves the damaged ones to WORKDIR/damaged_checkpoints/<step> (kept,
never deleted), so that new saves neither collide with them nor let the keep
policy delete the intact step before newer ones exist.
"""

from collections.abc import Callable
import dataclasses
import json
import logging as py_logging
import os
import sys
import threading
from typing import Any, TypeVar

from absl import logging
import grain
import grain.checkpoint
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from i2i_jax import families


# Config keys that decide the shapes and contents of the saved state: the
# model family and its networks (config.model). The optimizer settings do not
# change the optax state's structure, and everything else (steps, logging,
# data, sharding, dtypes) may change when a run is resumed, e.g. to train it
# further.
STATE_DEFINING_KEYS = ("model",)

_T = TypeVar("_T")


class CheckpointError(Exception):
  """A checkpoint of a run cannot be used; the message names it and says why."""


class DamagedCheckpointError(CheckpointError):
  """The requested checkpoint, or every checkpoint of a run, cannot be read."""


class ConfigMismatchError(CheckpointError):
  """The run was trained with other values of STATE_DEFINING_KEYS than the given config."""


class _OrbaxInfoFilter(py_logging.Filter):
  """Drops Orbax's INFO records (a dozen lines per save) unless verbosity is >= 1."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if logging.get_verbosity() >= 1 or f"{os.sep}orbax{os.sep}" not in record.pathname:
      return True
    # Also a warning on every read-only open (what load_generator does).
    return (record.levelno > py_logging.INFO
            and not str(record.msg).startswith("Given directory is read only"))


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
  options = ocp.CheckpointManagerOptions(
      create=not read_only, read_only=read_only,
      save_interval_steps=0 if read_only else 1)
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
            data_iterator: grain.DatasetIterator | None, step: int | None = None, *,
            config: ml_collections.ConfigDict | None = None,
            set_aside_damaged: bool = False) -> Any:
  """Restores the state (into the shardings of `state_template`) and the iterator in place.

  Args:
    manager: over the run's checkpoints (`make_manager`).
    state_template: a TrainState of the run's shapes, laid out as restored.
    data_iterator: set to the saved position; None to leave the data alone.
    step: which checkpoint; by default the newest one that can be read (newer,
      damaged ones are named in a warning).
    config: the new run's config; its STATE_DEFINING_KEYS must equal the
      saved ones (None: not checked).
    set_aside_damaged: move damaged steps newer than the restored one to
      WORKDIR/damaged_checkpoints/ (needs a writable manager; what resuming
      training does, so that it can save those steps anew).
  Returns:
    The restored state; its `step` says which checkpoint it came from.
  Raises:
    ConfigMismatchError: the run was trained with another model config.
    DamagedCheckpointError: `step` (or, without `step`, every step) cannot be read.
  """
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)

  def read(candidate: int) -> Any:
    if config is not None:
      stored = manager.restore(candidate, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
      check_same_model(stored["config"], config, _step_path(manager, candidate))
    items = {"state": ocp.args.StandardRestore(abstract)}
    if data_iterator is not None and (_step_path(manager, candidate) / "data_iterator").exists():
      items["data_iterator"] = grain.checkpoint.CheckpointRestore(data_iterator)
    elif data_iterator is not None:
      logging.info("checkpoint %d holds no data position (an imported model): the data "
                   "starts from the beginning", candidate)
    return manager.restore(candidate, args=ocp.args.Composite(**items))["state"]

  _, state, damaged = _read_newest_intact(manager, read, step)
  if damaged and set_aside_damaged:
    _set_aside(manager, damaged)
  elif damaged:
    _advise_moving(manager, damaged)
  return state


def check_same_model(stored: dict[str, Any], config: ml_collections.ConfigDict,
                     where: epath.Path) -> None:
  """Raises ConfigMismatchError naming every STATE_DEFINING_KEYS value that differs.

  Args:
    stored: the `config` item of a checkpoint (a JSON dict).
    config: the config of the run about to restore it.
    where: the checkpoint's directory, for the message.
  """
  # Through JSON, as saved: tuples become lists.
  new = _flatten(json.loads(json.dumps(config.to_dict())))
  old = _flatten(stored)
  # Keys only one side has were added or removed by a code change, not by the
  # user; their defaults keep the old behaviour.
  differences = [f"{key}={old[key]!r} there, {new[key]!r} now" for key in sorted(old)
                 if key.split(".")[0] in STATE_DEFINING_KEYS and key in new
                 and old[key] != new[key]]
  if differences:
    raise ConfigMismatchError(
        f"{where} was trained with another model config: {'; '.join(differences)}. "
        "Use another --workdir for this config, or keep these values to resume this run")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"model": {"res_blocks": 9}} -> {"model.res_blocks": 9}."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _step_path(manager: ocp.CheckpointManager, step: int) -> epath.Path:
  return manager.directory / str(step)


def _damaged_dir(manager: ocp.CheckpointManager) -> epath.Path:
  return manager.directory.parent / "damaged_checkpoints"


def _describe(error: BaseException) -> str:
  """The first line of the error at the root of `error`'s chain.

  Orbax wraps TensorStore's one-line cause ("OUT_OF_RANGE: Error reading ...
  in OCDBT database at local file ...") in dozens of lines of spec.
  """
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  lines = str(error).strip().splitlines() or [type(error).__name__]
  return lines[0][:400]


def _is_leftover_read_error(error: BaseException | None) -> bool:
  """Whether `error` is an abandoned read of a damaged checkpoint, or its aftermath."""
  message = str(error)
  return (message == "Event loop is closed"
          or message.startswith("Encountered error while reading array index"))


class _LeftoverReadErrorFilter(py_logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" records of abandoned reads."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return not (record.exc_info and _is_leftover_read_error(record.exc_info[1]))


def _hide_leftover_read_errors() -> None:
  """Keeps the other reads of a failed restore from printing tracebacks later.

  When one array of a checkpoint cannot be read, Orbax abandons the reads of
  the others; their errors (the same damage) surface later, from garbage
  collection, TensorStore's threads and asyncio, as "Exception ignored in
  <coroutine ...>", "Task exception was never retrieved" and "Event loop is
  closed" tracebacks — when exactly depends on the machine's load. The damage is
  already reported; every other error still prints.
  """
  if getattr(sys.unraisablehook, "hides_leftover_read_errors", False):
    return

  def keep_others(previous):
    def hook(*args):
      # unraisablehook and threading.excepthook get one record with .exc_value;
      # sys.excepthook gets (type, value, traceback).
      error = args[0].exc_value if len(args) == 1 else args[1]
      if not _is_leftover_read_error(error):
        previous(*args)
    hook.hides_leftover_read_errors = True
    return hook

  sys.unraisablehook = keep_others(sys.unraisablehook)  # (unraisable,)
  threading.excepthook = keep_others(threading.excepthook)  # (thread args,)
  sys.excepthook = keep_others(sys.excepthook)  # (type, value, traceback)
  py_logging.getLogger("asyncio").addFilter(_LeftoverReadErrorFilter())


def _read_newest_intact(manager: ocp.CheckpointManager, read: Callable[[int], _T],
                        step: int | None) -> tuple[int, _T, list[int]]:
  """`read(step)`, or `read` of the newest step it succeeds on.

  Damage shows up as whatever the reader hit: TensorStore's bare Exception
  (a truncated file), OSError (a missing one), ValueError (a broken JSON or
  metadata file), so any Exception but ConfigMismatchError counts as damage.

  Returns:
    (the step read, what `read` returned, the damaged steps newer than it).
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if step is not None:
    if step not in steps:
      raise DamagedCheckpointError(
          f"no checkpoint for step {step} in {manager.directory} "
          f"(it has steps {sorted(steps)})")
    steps = [step]
  damaged = []
  for candidate in steps:
    try:
      return candidate, read(candidate), damaged
    except ConfigMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      _hide_leftover_read_errors()
      if step is not None:
        raise DamagedCheckpointError(
            f"checkpoint {_step_path(manager, candidate)} cannot be read ({_describe(e)}); "
            "leave out the step to use the newest intact one") from e
      logging.warning("checkpoint %s cannot be read (%s); trying the previous one",
                      _step_path(manager, candidate), _describe(e))
      damaged.append(candidate)
  raise DamagedCheckpointError(
      f"no checkpoint in {manager.directory} can be read (steps {sorted(damaged)} are "
      "damaged, the warnings above say how); move the directory away to start afresh")


def _advise_moving(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  logging.warning("move %s away (e.g. to %s/); resuming training in this workdir moves "
                  "it there itself", ", ".join(str(_step_path(manager, s)) for s in steps),
                  _damaged_dir(manager))


def _set_aside(manager: ocp.CheckpointManager, steps: list[int]) -> None:
  """Moves the damaged `steps` to WORKDIR/damaged_checkpoints/ (process 0) and rescans."""
  if jax.process_index() == 0:
    destination_root = _damaged_dir(manager)
    destination_root.mkdir(parents=True, exist_ok=True)
    for step in steps:
      destination = destination_root / str(step)
      copy = 1
      while destination.exists():
        copy += 1
        destination = destination_root / f"{step}.{copy}"
      _step_path(manager, step).rename(destination)
      logging.warning("moved the damaged checkpoint %s to %s (nothing deleted)",
                      _step_path(manager, step), destination)
  multihost_utils.sync_global_devices("i2i_jax: damaged checkpoints set aside")
  manager.reload()


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
  """A trained generator ready to apply: `module.apply(variables, images)`.

  Its model family (config.model.family) chose the module and its variables
  (`trained_generator`); e.g. VSAIT's label-conditioned generator comes with
  the frozen segmenter that gives it the classes of the images it translates.
  """
  config: ml_collections.ConfigDict
  step: int
  module: Any
  variables: dict[str, Any]
  path: str


def load_generator(path: str | epath.PathLike, step: int | None = None,
                   compute_dtype: str | None = None) -> LoadedGenerator:
  """Loads the generator of a run (its workdir or its `checkpoints` directory).

  Args:
    path: a training workdir, or the `checkpoints` directory inside one (what
      `python -m i2i_jax.convert` writes too).
    step: which checkpoint; by default the newest one that can be read (newer,
      damaged ones are named in a warning).
    compute_dtype: overrides the run's `config.compute_dtype` (e.g. "bfloat16").
  Raises:
    FileNotFoundError: naming the directory when it holds no checkpoint.
    DamagedCheckpointError: `step` (or, without `step`, every step) cannot be read.
    ValueError: the run's model family cannot make a generator of it (unknown
      config.model.family, or e.g. a label-conditioned VSAIT generator without
      its frozen segmenter).
  """
  path = epath.Path(path)
  workdir = path.parent if path.name == "checkpoints" else path
  directory = checkpoint_dir(workdir)
  if not directory.exists():
    raise FileNotFoundError(f"no checkpoints directory at {directory} (expected a training "
                            "workdir or its checkpoints/ directory)")
  manager = make_manager(workdir, read_only=True)
  try:
    if not manager.all_steps():
      raise FileNotFoundError(f"no checkpoint in {directory}")
    step, restored, damaged = _read_newest_intact(
        manager, lambda candidate: manager.restore(candidate, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), config=ocp.args.JsonRestore())), step)
  finally:
    manager.close()
  if damaged:
    _advise_moving(manager, damaged)
  config = ml_collections.ConfigDict(restored["config"])
  try:
    module, variables = families.get(config).trained_generator(
        config, restored["state"]["variables"],
        jnp.dtype(compute_dtype or config.compute_dtype))
  except ValueError as e:
    raise ValueError(f"{directory}: {e}") from e
  return LoadedGenerator(config=config, step=int(step), module=module,
                         variables=variables, path=str(directory))
