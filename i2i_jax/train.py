"""Trains VSAIT.

  python -m i2i_jax.train --config=configs/demo.py --workdir=/tmp/vsait_demo

Flags that matter:
  --config=FILE          a config file (configs/vsait.py: the paper; demo.py:
                         toy data on a CPU in minutes; gta2cityscapes.py).
  --workdir=DIR          checkpoints/, tensorboard/ and samples/ go here; a
                         workdir with a checkpoint is resumed from its last step.
  --config.KEY=VALUE     overrides any config field, e.g.
                           --config.total_steps=1000
                           --config.data.batch_size=8  (global, over all devices)
                           --config.grad_accum_steps=4
                           --config.compute_dtype=bfloat16
                           --config.sharding.fsdp=True
                           --config.checkpoint.every_steps=500
                           --config.log_images_every=100
                         An unknown key or a value of the wrong type is an error
                         naming the key, before anything is compiled.

SIGTERM (TPU/SLURM preemption) finishes the current step, saves a checkpoint
and exits 0; a non-finite loss stops the run with the step and the loss named,
saving nothing new. View the logs with `tensorboard --logdir DIR/tensorboard`.
"""

import functools
import signal
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
from PIL import Image
import tensorboardX

from i2i_jax import checkpoint
from i2i_jax import convert
from i2i_jax import sharding
from i2i_jax import training
from i2i_jax.data import pipeline
from i2i_jax.metrics import fid
from i2i_jax.models import vsait

# Crops used only to trace shapes at initialisation (the nets are fully convolutional).
_INIT_IMAGE_SHAPE = (64, 64)


class MetricWriter:
  """Scalars, images and texts to TensorBoard event files (process 0) and the log.

  tensorboardX rather than clu.metric_writers: every clu writer module imports
  TensorFlow (through `clu.metric_writers.__init__`), which this project does
  not otherwise need. tensorboardX writes the same event files, on a
  background thread, from numpy and protobuf alone.
  """

  def __init__(self, logdir: epath.Path):
    self._writer = None
    if jax.process_index() == 0:
      self._writer = tensorboardX.SummaryWriter(logdir=str(logdir))

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, global_step=step)

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """images: {name: [H, W, 3] float in [0, 1]}."""
    if self._writer is not None:
      for name, image in images.items():
        self._writer.add_image(name, image, global_step=step, dataformats="HWC")

  def write_texts(self, step: int, texts: dict[str, str]) -> None:
    if self._writer is not None:
      for name, text in texts.items():
        self._writer.add_text(name, text, global_step=step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


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
    self.target_statistics = style_statistics(batch["target"])
    self.source_distance = style_distance(self.source, self.target_statistics)


def _init_fn(fns: training.StepFunctions, rng: jax.Array) -> training.TrainState:
  return training.create_train_state(
      fns, vsait.init_variables(fns.modules, rng, _INIT_IMAGE_SHAPE))


def create_state(config: ml_collections.ConfigDict, fns: training.StepFunctions,
                 mesh: jax.sharding.Mesh) -> tuple[training.TrainState, Any]:
  """A fresh TrainState laid out on `mesh`, VGG weights from config.model.vgg_weights.

  Returns:
    (state, its NamedShardings).
  """
  init = functools.partial(_init_fn, fns)
  rng = jax.random.key(config.seed)
  shardings = sharding.state_shardings(jax.eval_shape(init, rng), mesh, config.sharding)
  state = jax.jit(init, out_shardings=shardings)(rng)
  if config.model.vgg_weights != "random":
    vgg = convert.load_vgg_variables(config.model.vgg_weights, None)
    vgg = jax.device_put(vgg, shardings.variables["vgg"])
    state = state.replace(variables={**state.variables, "vgg": vgg})
  return state, shardings


class _Preemption:
  """Turns SIGTERM into a flag the loop checks after each step (single process).

  Multi-process runs use Orbax's `reached_preemption`, which makes every host
  stop at the same step (JAX's coordination service catches the signal).
  """

  def __init__(self):
    self.signalled = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    logging.warning("received signal %d: stopping after this step", signum)
    self.signalled = True

  def reached(self, manager, step: int) -> bool:
    if jax.process_count() == 1:
      return self.signalled
    return manager.reached_preemption(step)

  def restore_handler(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> training.TrainState:
  """Trains (or resumes) up to config.total_steps; returns the final state.

  Args:
    config: the run's configuration (configs/vsait.py documents the keys).
    workdir: where checkpoints, TensorBoard events and sample PNGs go.
  Raises:
    ValueError: naming the config key, for inconsistent settings (before compiling).
    FloatingPointError: a loss became NaN/Inf (names the step and the loss).
  """
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh()
  sharding.check_batch_split(config.data.batch_size, config.grad_accum_steps, mesh)
  fns = training.make_step_functions(config)
  data_iterator = pipeline.make_train_iterator(config.data, seed=config.seed)
  state, state_shardings = create_state(config, fns, mesh)

  manager = checkpoint.make_manager(workdir, config.checkpoint)
  if manager.latest_step() is not None:
    logging.info("resuming from %s, step %d", checkpoint.checkpoint_dir(workdir),
                 manager.latest_step())
    state = checkpoint.restore(manager, state, data_iterator)
  start_step = int(state.step)

  batch_sharding = sharding.batch_sharding(mesh)
  train_step = jax.jit(functools.partial(training.train_step, fns=fns),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, None), donate_argnums=0)
  translate = jax.jit(fns.modules.generator.apply)

  writer = MetricWriter(workdir / "tensorboard")
  if start_step == 0:
    writer.write_texts(0, {"config": config.to_json_best_effort(indent=2)})
  probe = _StyleProbe(config) if config.style_distance_images > 0 else None
  if probe is not None:
    writer.write_scalars(start_step, {"style_distance/source": probe.source_distance})
  preemption = _Preemption()
  batch_size = config.data.batch_size
  logging.info("training steps %d..%d: %d devices, global batch %d (%d micro-batches), %s",
               start_step + 1, config.total_steps, jax.device_count(), batch_size,
               config.grad_accum_steps, config.compute_dtype)

  def log_images(step: int, batch: dict[str, jax.Array]) -> None:
    rows = config.image_grid_rows
    translated = multihost_utils.process_allgather(
        translate(state.variables["generator"], batch["source"]), tiled=True)
    source, target = (multihost_utils.process_allgather(batch[k], tiled=True)
                      for k in ("source", "target"))
    grid = image_grid(source[:rows], translated[:rows], target[:rows])
    writer.write_images(step, {"source|translated|target": grid})
    if jax.process_index() == 0:
      (workdir / "samples").mkdir(exist_ok=True)
      # Through epath, so that gs:// and s3:// workdirs work too.
      with (workdir / "samples" / f"step_{step:08d}.png").open("wb") as f:
        Image.fromarray(np.round(grid * 255).astype(np.uint8)).save(f, format="PNG")
    if probe is not None:
      probe_translated = np.asarray(translate(state.variables["generator"], probe.source))
      writer.write_scalars(step, {"style_distance/translated": style_distance(
          probe_translated, probe.target_statistics)})

  pending = None  # (step, device metrics) not yet checked: read one step late
  history = []
  timer = (time.perf_counter(), start_step)
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        host_batch = next(data_iterator)
        batch = sharding.global_batch(
            {"source": host_batch["source"], "target": host_batch["target"]}, mesh)
        state, metrics = train_step(state, batch)
      if pending is not None:
        history.append(jax.device_get(pending[1]))
        _check_finite(pending[0], history[-1], manager)
      pending = (step, metrics)

      stop = preemption.reached(manager, step)
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
        logging.info("step %d/%d (%.1f%%): g_total %.4f d_total %.4f, %.2f steps/s, "
                     "%.1f images/s, ETA %s", step, config.total_steps,
                     100 * step / config.total_steps, scalars["g_total"],
                     scalars["d_total"], steps_per_sec, steps_per_sec * batch_size,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))
      if step % config.log_images_every == 0 or is_last:
        log_images(step, batch)
      if stop or is_last or manager.should_save(step):
        checkpoint.save(manager, step, state, data_iterator, config, force=stop or is_last)
      if stop:
        manager.wait_until_finished()
        logging.warning("preempted: saved checkpoint %d in %s; exiting", step,
                        checkpoint.checkpoint_dir(workdir))
        break
  finally:
    preemption.restore_handler()
    manager.wait_until_finished()
    writer.close()
  logging.info(data_iterator.skipped_summary())
  return state


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  checkpoint.quiet_orbax_logs()
  sharding.maybe_initialize_distributed()
  train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  # Flags are defined only when run as a program, so that the library parts of
  # this module can be imported next to the other entry points (whose flag
  # names overlap: --workdir, --labels, --batch_size).
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Training configuration file (see configs/).", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
