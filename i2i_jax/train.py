"""Trains a translator of the model family config.model.family names (VSAIT by default).

  python -m i2i_jax.train --config=configs/demo.py --workdir=/tmp/vsait_demo

Flags that matter:
  --config=FILE          a config file (configs/vsait.py: the paper; demo.py:
                         toy data on a CPU in minutes; gta2cityscapes.py); its
                         model.family picks the model (i2i_jax/families/).
  --workdir=DIR          checkpoints/, tensorboard/, metrics.jsonl and samples/
                         go here; a workdir with a checkpoint is resumed from
                         its last step.
  --config.KEY=VALUE     overrides any config field, e.g.
                           --config.total_steps=1000
                           --config.data.batch_size=8  (global, over all devices)
                           --config.grad_accum_steps=4
                           --config.compute_dtype=bfloat16
                           --config.sharding.fsdp=True
                           --config.checkpoint.every_steps=500
                           --config.log_images_every=100
                           --config.evals.NAME.every_steps=500  (an evaluator
                             the config declares, see i2i_jax/evaluators.py)
                         An unknown key or a value of the wrong type is an error
                         naming the key, before anything is compiled.

Stopping and bad input (exit codes as in i2i_jax/cli.py):
  SIGTERM (TPU/SLURM preemption) finishes the current step, saves a checkpoint
  and exits 0; Ctrl-C (SIGINT) does the same and exits 130 (twice: at once).
  A bad flag, config file or key, or a workdir trained with another model
  config: one line naming it, exit 2, nothing written. A damaged newest
  checkpoint is moved to DIR/damaged_checkpoints/ with a warning and the run
  resumes from the newest intact one; none intact, a non-finite loss (the step
  and the loss named, nothing new saved) or an unwritable workdir: one line,
  exit 3. A run already at config.total_steps says so and writes nothing.
View the logs with `tensorboard --logdir DIR/tensorboard`.
"""

import dataclasses
from collections.abc import Sequence
import datetime
import difflib
import functools
import re
import time
from typing import Any

from absl import flags
from absl import logging
from clu import parameter_overview
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
# The module behind config_flags, for its config file loader (ConfigFileFlagParser).
from ml_collections.config_flags import config_flags as config_flags_module
import numpy as np
from PIL import Image

from i2i_jax import checkpoint
from i2i_jax import cli
from i2i_jax import compile_options
from i2i_jax import evaluators
from i2i_jax import families
from i2i_jax import metric_writer
from i2i_jax import sharding
from i2i_jax import storage
from i2i_jax.data import pipeline
from i2i_jax.metrics import fid

# The command's own flags (not absl's global FLAGS), so that every entry point
# imports next to the others although their flag names overlap (cli.py).
FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training configuration file (see configs/).", flag_values=FLAGS,
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.",
                               flag_values=FLAGS)
flags.mark_flags_as_required(["config", "workdir"], flag_values=FLAGS)

# TensorBoard tag of the image grids ("|" is not allowed in tags).
IMAGE_GRID_TAG = "samples/source_translated_target"


class ConfigError(ValueError):
  """A setting, or an input the config names, cannot work; found before anything is written."""


def image_grid(source: np.ndarray, translated: np.ndarray, target: np.ndarray) -> np.ndarray:
  """One row per example, source | translated | target.

  Args:
    source, translated, target: [N, H, W, 3] in [-1, 1].
  Returns:
    [N * H, 3 * W, 3] float32 in [0, 1].
  """
  rows = np.concatenate([source, translated, target], axis=2)
  grid = rows.reshape(-1, *rows.shape[2:])
  return np.clip((grid.astype(np.float32) + 1) / 2, 0, 1)


def style_statistics(images: np.ndarray) -> np.ndarray:
  """Colour and texture of each image: [N, H, W, 3] in [-1, 1] -> [N, 9].

  Per channel: mean, standard deviation, and mean absolute Laplacian (fine
  texture and noise, which flat rendered images lack).
  """
  images = images.astype(np.float64)
  laplacian = (4 * images[:, 1:-1, 1:-1] - images[:, :-2, 1:-1] - images[:, 2:, 1:-1]
               - images[:, 1:-1, :-2] - images[:, 1:-1, 2:])
  return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2)),
                         np.abs(laplacian).mean(axis=(1, 2))], axis=1)


def style_distance(images: np.ndarray, target_statistics: np.ndarray) -> float:
  """Frechet distance between the style statistics of `images` and the target's."""
  return fid.frechet_distance(style_statistics(images), target_statistics)


class _StyleProbe:
  """A fixed set of source and target images for the logged style distance."""

  def __init__(self, config: ml_collections.ConfigDict):
    count = config.style_distance_images
    data_config = config.data.copy_and_resolve_references()
    with data_config.unlocked():
      data_config.batch_size = count
      data_config.worker_count = 0
    # Another seed than training's: these images are held out of the stream.
    batch = next(pipeline.make_train_iterator(data_config, seed=config.seed + 1,
                                              process_index=0, process_count=1))
    self.source = batch["source"]
    self.source_label = batch.get("source_label")  # for a generator that reads labels
    self.target_statistics = style_statistics(batch["target"])
    self.source_distance = style_distance(self.source, self.target_statistics)


def create_state(config: ml_collections.ConfigDict, family: families.Family, fns: Any,
                 mesh: jax.sharding.Mesh, pretrained_variables: dict[str, Any]) -> tuple[Any, Any]:
  """A fresh train state of `family` laid out on `mesh`.

  Args:
    config: the run's config (seed, sharding).
    family: the model family; `fns` its static step object.
    mesh: from `sharding.make_mesh`.
    pretrained_variables: {network: variables} that replace the initialised ones
      (the family's `pretrained_variables`).
  Returns:
    (state, its NamedShardings).
  """
  init = functools.partial(family.init_state, fns)
  rng = jax.random.key(config.seed)
  shardings = sharding.state_shardings(jax.eval_shape(init, rng), mesh, config.sharding,
                                       family.is_fsdp_leaf)
  state = jax.jit(init, out_shardings=shardings)(rng)
  placed = {name: jax.device_put(variables, shardings.variables[name])
            for name, variables in pretrained_variables.items()}
  return state.replace(variables={**state.variables, **placed}), shardings


@dataclasses.dataclass
class _NetworkSize:
  """A row of the parameter overview."""
  network: str
  parameters: int


def parameter_table(trainable: dict[str, Any]) -> str:
  """The trained networks' parameter counts as a table.

  Args:
    trainable: {network: parameters}, the family's `parameter_groups` (for
      VSAIT: generator, map network, discriminator).
  Counts come from the shapes alone, so sharded global arrays need no gathering.
  """
  rows = [_NetworkSize(name, int(parameter_overview.count_parameters(params)))
          for name, params in trainable.items()]
  rows.append(_NetworkSize("total", sum(row.parameters for row in rows)))
  return parameter_overview.make_table(rows)


class _StopRequests:
  """SIGTERM (preemption) and SIGINT (Ctrl-C) as requests to stop after the current step.

  One process: `cli.StopSignals` catches both (a second Ctrl-C stops at once).
  Several processes: Orbax's `reached_preemption` makes every host stop at the
  same step on SIGTERM (JAX's coordination service catches it); Ctrl-C keeps its
  default there, as one host stopping alone would leave the others waiting.
  """

  def __init__(self):
    self._signals = cli.StopSignals() if jax.process_count() == 1 else None

  def __enter__(self) -> "_StopRequests":
    if self._signals is not None:
      self._signals.__enter__()
    return self

  def __exit__(self, *exc_info) -> None:
    if self._signals is not None:
      self._signals.__exit__(*exc_info)

  def reached(self, manager, step: int) -> bool:
    if self._signals is None:
      return manager.reached_preemption(step)
    return self._signals.event.is_set()

  @property
  def interrupted(self) -> bool:
    """Whether the stop came from Ctrl-C (SIGINT) rather than a preemption."""
    return self._signals is not None and self._signals.exit_code == cli.EXIT_SIGINT


def format_duration(seconds: float) -> str:
  """55 h -> "2 days, 7:00:00"; 21 s -> "0:00:21"."""
  return str(datetime.timedelta(seconds=round(seconds)))


def _compile(train_step, state: Any, batch: dict[str, jax.Array],
             compiler_options: dict[str, Any] | None):
  """The compiled train step for these shapes, with the compile time logged."""
  logging.info("compiling the train step%s",
               f" with {compiler_options}" if compiler_options else "")
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile(compiler_options=compiler_options)
  logging.info("compiled the train step in %.1f s", time.perf_counter() - start)
  return compiled


def _check_finite(step: int, metrics: dict[str, float], manager) -> None:
  """Raises FloatingPointError naming the step and every non-finite loss (not the lrs)."""
  bad = {name: value for name, value in metrics.items()
         if not name.endswith("_lr") and not np.isfinite(value)}
  if bad:
    manager.wait_until_finished()
    raise FloatingPointError(
        f"non-finite loss at step {step}: "
        + ", ".join(f"{name}={value}" for name, value in bad.items())
        + f"; stopped without saving (last checkpoint: step {manager.latest_step()})")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """Trains (or resumes) up to config.total_steps; returns the final train state.

  The model, its state and its step come from the family config.model.family
  names (`i2i_jax.families`); everything else here is the same for every family.

  A workdir with checkpoints resumes from the newest one that can be read (see
  `checkpoint.restore`); one already at `config.total_steps` is left as it is.

  Args:
    config: the run's configuration (configs/vsait.py documents the keys).
    workdir: where checkpoints, TensorBoard events, metrics.jsonl (see
      `metric_writer`) and sample PNGs go.
  Raises:
    ConfigError: naming the config key or the input, for settings that cannot
      work (before anything is written or compiled).
    checkpoint.ConfigMismatchError: the workdir holds a run of another model config.
    checkpoint.DamagedCheckpointError: no checkpoint in the workdir can be read.
    FloatingPointError: a loss became NaN/Inf (names the step and the loss).
    OSError: the workdir cannot be created or written.
    KeyboardInterrupt: Ctrl-C (SIGINT), after finishing and saving the step.
  """
  workdir = epath.Path(workdir)
  try:
    mesh = sharding.make_mesh()
    sharding.check_batch_split(config.data.batch_size, config.grad_accum_steps, mesh)
    family = families.get(config)
    fns = family.make_step_functions(config)
    if config.profile_steps and config.profile_start_step < 1:
      raise ValueError(f"config.profile_start_step={config.profile_start_step}: steps count "
                       "from 1, so nothing would be traced")
    pretrained_variables = family.pretrained_variables(config, fns)
    logging.info("building the input pipeline: %s -> %s", config.data.source, config.data.target)
    data_iterator = pipeline.make_train_iterator(config.data, seed=config.seed)
    # Their evaluation images are rendered here, once.
    evals = evaluators.build(config.evals)
  except (ValueError, FileNotFoundError) as e:
    raise ConfigError(str(e)) from e
  logging.info("initialising the networks of %s%s", families.family_name(config),
               f" (pretrained: {', '.join(sorted(pretrained_variables))})"
               if pretrained_variables else "")
  state, state_shardings = create_state(config, family, fns, mesh, pretrained_variables)

  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise OSError(f"cannot create the workdir {workdir} ({e.strerror or e})") from e
  manager = checkpoint.make_manager(workdir, config.checkpoint)
  if manager.latest_step() is not None:
    logging.info("restoring checkpoint %d from %s", manager.latest_step(),
                 checkpoint.checkpoint_dir(workdir))
    state = checkpoint.restore(manager, state, data_iterator, config=config,
                               set_aside_damaged=True)
    logging.info("resuming from %s, step %d", checkpoint.checkpoint_dir(workdir),
                 int(state.step))
  start_step = int(state.step)
  if start_step >= config.total_steps:
    logging.info("already finished at step %d (config.total_steps=%d); raise "
                 "--config.total_steps to train further", start_step, config.total_steps)
    manager.close()
    return state

  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(functools.partial(family.train_step, fns=fns),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, None), donate_argnums=0)
  translate = jax.jit(functools.partial(family.translate, fns=fns))
  compiler_options = compile_options.cpu_compiler_options(config)
  batches = sharding.prefetch_global_batches(data_iterator, family.batch_keys(fns), mesh,
                                             config.data.get("device_prefetch", 2))

  writer = metric_writer.MetricWriter(workdir)
  if start_step == 0:
    writer.write_texts(0, {"config": config.to_json_best_effort(indent=2)})
  probe = _StyleProbe(config) if config.style_distance_images > 0 else None
  if probe is not None:
    writer.write_scalars(start_step, {"style_distance/source": probe.source_distance})
  logging.info("trainable parameters:\n%s",
               parameter_table(family.parameter_groups(state.variables)))
  batch_size = config.data.batch_size
  logging.info("training steps %d..%d: %d devices, global batch %d (%d micro-batches), %s",
               start_step + 1, config.total_steps, jax.device_count(), batch_size,
               config.grad_accum_steps, config.compute_dtype)

  def log_images(step: int, batch: dict[str, jax.Array]) -> None:
    rows = config.image_grid_rows
    translated = multihost_utils.process_allgather(
        translate(state.variables, batch["source"], source_label=batch.get("source_label")),
        tiled=True)
    source, target = (multihost_utils.process_allgather(batch[k], tiled=True)
                      for k in ("source", "target"))
    grid = image_grid(source[:rows], translated[:rows], target[:rows])
    writer.write_images(step, {IMAGE_GRID_TAG: grid})
    if jax.process_index() == 0:
      # Through epath, so that gs:// and s3:// workdirs work too.
      with storage.atomic_write(workdir / "samples" / f"step_{step:08d}.png") as f:
        Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(f, format="PNG")
    if probe is not None:
      probe_translated = np.asarray(translate(state.variables, probe.source,
                                              source_label=probe.source_label))
      writer.write_scalars(step, {"style_distance/translated": style_distance(
          probe_translated, probe.target_statistics)})

  def run_evals(step: int, is_last: bool) -> None:
    def translate_fn(images: np.ndarray) -> np.ndarray:
      return np.asarray(translate(state.variables, images))
    for name, (every_steps, evaluator) in evals.items():
      if step % every_steps == 0 or is_last:
        start = time.perf_counter()
        metrics = evaluator.run(translate_fn)
        writer.write_scalars(step, {f"eval/{name}/{k}": v for k, v in metrics.items()})
        picture = evaluator.picture() if hasattr(evaluator, "picture") else None
        if picture is not None:
          writer.write_images(step, {f"eval/{name}": picture.astype(np.float32) / 255})
          if jax.process_index() == 0:
            path = workdir / "samples" / f"eval_{name}_step_{step:08d}.png"
            with storage.atomic_write(path) as f:
              Image.fromarray(picture).save(f, format="PNG")
        logging.info("evaluator %s at step %d: %.1f s", name, step, time.perf_counter() - start)

  pending = None  # (step, device metrics) not yet checked: read one step late
  history = []
  compiled_step = None
  # config.profile_steps steps from config.profile_start_step, traced into WORKDIR/profile.
  profiled = range(config.profile_start_step, config.profile_start_step + config.profile_steps)
  tracing = False
  try:
    with _StopRequests() as stop_requests:
      for step in range(start_step + 1, config.total_steps + 1):
        if profiled and step == profiled.start:
          jax.profiler.start_trace(str(workdir / "profile"), create_perfetto_trace=True)
          tracing = True
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = next(batches)
          if compiled_step is None:
            compiled_step = _compile(train_step, state, batch, compiler_options)
            timer = (time.perf_counter(), start_step)
          state, metrics = compiled_step(state, batch)
        if tracing and step == profiled[-1]:
          jax.block_until_ready(state)
          jax.profiler.stop_trace()
          tracing = False
          logging.info("profiled steps %d-%d into %s", profiled.start, step, workdir / "profile")
        if step == start_step + 1:
          jax.block_until_ready(metrics)
          logging.info("first step done in %.1f s", time.perf_counter() - timer[0])
        if pending is not None:
          history.append(jax.device_get(pending[1]))
          _check_finite(pending[0], history[-1], manager)
        pending = (step, metrics)

        stop = stop_requests.reached(manager, step)
        is_last = step == config.total_steps
        if stop or is_last or manager.should_save(step) or step % config.log_every_steps == 0:
          history.append(jax.device_get(metrics))
          _check_finite(step, history[-1], manager)
          pending = None
        if step % config.log_every_steps == 0 or is_last:
          now = time.perf_counter()
          steps_per_sec = (step - timer[1]) / (now - timer[0])
          timer = (now, step)
          scalars = {k: float(np.mean([m[k] for m in history])) for k in history[-1]}
          scalars.update(steps_per_sec=steps_per_sec, images_per_sec=steps_per_sec * batch_size)
          writer.write_scalars(step, scalars)
          history = []
          eta = (config.total_steps - step) / steps_per_sec
          totals = " ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k.endswith("_total"))
          logging.info("step %d/%d (%.1f%%): %s, %.2f steps/s, %.1f images/s, ETA %s", step,
                       config.total_steps, 100 * step / config.total_steps, totals,
                       steps_per_sec, steps_per_sec * batch_size, format_duration(eta))
        if step % config.log_images_every == 0 or is_last:
          log_images(step, batch)
        run_evals(step, is_last)
        if stop or is_last or manager.should_save(step):
          checkpoint.save(manager, step, state, batches, config, force=stop or is_last)
        if stop and not is_last:
          manager.wait_until_finished()
          if stop_requests.interrupted:
            logging.warning("interrupted: saved checkpoint %d in %s; run the same command to "
                            "resume", step, checkpoint.checkpoint_dir(workdir))
            raise KeyboardInterrupt
          logging.warning("preempted: saved checkpoint %d in %s; exiting", step,
                          checkpoint.checkpoint_dir(workdir))
          break
  finally:
    batches.close()
    if tracing:
      jax.profiler.stop_trace()
    manager.wait_until_finished()
    writer.close()
  logging.info(data_iterator.skipped_summary())
  return state


def _config_file_argument(argv: list[str]) -> str | None:
  """FILE of the last `--config=FILE` or `--config FILE` in `argv` (absl's choice), or None."""
  path = None
  for i, argument in enumerate(argv):
    if re.match(r"--?config=", argument):
      path = argument.split("=", 1)[1]
    elif argument in ("--config", "-config") and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def _unknown_config_key(config: ml_collections.ConfigDict, key: str, path: str) -> str | None:
  """Why `key` ("model.res_chanels") is not a field of `config` (from file `path`), or None.

  Names the closest fields at the level where the key breaks off.
  """
  node = config
  parts = key.split(".")
  for depth, part in enumerate(parts):
    parent = ".".join(parts[:depth])
    if not isinstance(node, ml_collections.ConfigDict):
      return f"{parent} in {path} is {node!r}, it has no key {part!r}"
    if part not in node:
      prefix = f"{parent}." if parent else ""
      fields = sorted(node.keys())
      close = difflib.get_close_matches(part, fields, n=3, cutoff=0.5)
      hint = (f"did you mean {', '.join(prefix + c for c in close)}?" if close
              else f"its keys: {', '.join(prefix + f for f in fields)}")
      return f"{path} has no key {prefix}{part} ({hint})"
    node = node[part]
  return None


def _last_line(error: Exception) -> str:
  """config_flags' errors end with the cause ("[Errno 2] No such file ...")."""
  lines = str(error).strip().splitlines()
  return lines[-1].strip() if lines else type(error).__name__


def _explain_config_error(argv: list[str], error: Exception) -> str:
  """One line for an error config_flags raised while loading --config and its overrides."""
  path = _config_file_argument(argv)
  try:
    config = config_flags_module.ConfigFileFlagParser("config").parse(path)
    config.get("model")  # the stand-in for a file that did not load raises here
  except Exception as e:  # pylint: disable=broad-except
    return f"--config={path}: cannot load it ({_last_line(e)})"
  for argument in argv[1:]:
    override = re.match(r"--?(?:no)?config\.([^=\[]+)", argument)
    problem = override and _unknown_config_key(config, override.group(1), path)
    if problem:
      return f"{argument.split('=', 1)[0]}: {problem}"
  return f"--config={path}: {type(error).__name__}: {_last_line(error)}"


def _parse_flags(argv: Sequence[str]) -> list[str]:
  """`cli.parse_flags`, with config files and keys that config_flags rejects in one line.

  config_flags loads --config and applies the --config.KEY overrides while the
  flags are parsed, raising KeyError or AttributeError (an unknown key: the
  message names only its last part) or OSError (a file that does not load; with
  no override, only when the config is first used).

  Raises:
    cli.UsageError: naming the file or the key.
  """
  try:
    arguments = cli.parse_flags(argv, FLAGS, __doc__)
    _CONFIG.value.get("model")
  except (AttributeError, KeyError, IndexError, OSError, TypeError, ValueError) as e:
    raise cli.UsageError(_explain_config_error(list(argv), e)) from e
  return arguments


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.train` in this process: `argv` as sys.argv; returns the exit status.

  Raises:
    cli.HelpRequested: --help.
    cli.UsageError: a bad flag, config file or key, or a workdir of another config.
    cli.RunError: no intact checkpoint, a non-finite loss, an unwritable workdir.
    KeyboardInterrupt: Ctrl-C, after saving a checkpoint.
  """
  arguments = _parse_flags(argv)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments: {arguments[1:]}")
  checkpoint.quiet_orbax_logs()
  sharding.maybe_initialize_distributed()
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ConfigError, checkpoint.ConfigMismatchError) as e:
    raise cli.UsageError(str(e)) from e
  except (checkpoint.CheckpointError, FloatingPointError, OSError) as e:
    raise cli.RunError(str(e)) from e
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
