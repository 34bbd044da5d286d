"""Translation throughput of `i2i_jax.translator.Translator`: images/s per size, dtype, batch.

  PYTHONPATH=. python benchmarks/translate.py                      # paper generator
  PYTHONPATH=. python benchmarks/translate.py --config=tiny --sizes=512x1024 --batch_sizes=1,8
  PYTHONPATH=. python benchmarks/translate.py --calls=0 --frames=300 --batch_sizes=8 \
      --dtypes=bfloat16                                            # steady state only

The generator is the paper's (9 residual blocks, 64 base channels; `--config=tiny` for
the test model) with random weights: throughput does not depend on the values. Each row
compiles its batch shape once (the first call, reported apart), runs `--warmup` calls,
then times `--calls` calls of `Translator.translate` on uint8 images already in host
memory: a row includes the reflection padding and the host<->device copies, not file
decoding. With --folder_images, one more row per size and dtype runs `translate_dataset`
over JPEG files of noise (decode, translate, PNG encode, overlapped).

Prints a Markdown table: device, size (WxH), dtype, batch, images/s, ms/image, seconds of
the first call (compile + one batch).

With --frames=N, a second table shows the steady state on realistic frames: N toy_streets
scenes (--frames_style, default "real": textured and noisy, ~4 MB PNGs at 1914x1052 like
GTA5's frames) rendered at each size as PNG files (once, into --frames_dir when given), for
each size, dtype and batch:

  generator only  `Translator.translate` on batches of the decoded frames, in memory;
                  timed after `--steady_skip` untimed batches.
  end to end      `translate_dataset` over the PNG folder (decode threads, device,
                  encode workers, atomic writes), the CLI's thread counts; `--steady_skip`
                  batches at each end are fill and drain (their seconds are printed),
                  the batches between them are the steady state.

The device's work is timed from the batches themselves: for each batch the end-to-end run
dispatches, the time its call returned (inputs handed to the device) and the time its output
was ready (a watcher thread waits on each in turn). A device runs its batches in order, so
batch i keeps it busy from max(dispatched_i, ready_{i-1}) to ready_i; "device idle" is the
rest of the steady window (from the ready time of the last fill batch to that of the last
steady batch). It counts as idle the host->device copy made before the call returns and the
device->host copy after the output is ready, and a ready time is seen late by the
watcher's wake-up (GIL: well under a millisecond per batch on an idle host).
"""

import argparse
import concurrent.futures
import dataclasses
import io
import multiprocessing
import os
import tempfile
import time
from collections.abc import Sequence

import jax
import numpy as np
from PIL import Image

from i2i_jax.configs import tiny, vsait as vsait_config
from i2i_jax import checkpoint
from i2i_jax import storage
from i2i_jax import translator as translator_lib
from i2i_jax.data import sources
from i2i_jax.data import toy_streets
from i2i_jax.models import vsait

CONFIGS = {"vsait": vsait_config.get_config, "tiny": tiny.get_config}


def random_generator(config_name: str, dtype: str) -> checkpoint.LoadedGenerator:
  """The generator of `config_name`, randomly initialised, as `load_generator` returns it."""
  config = CONFIGS[config_name]()
  module = vsait.build_modules(config.model, dtype).generator
  variables = jax.jit(module.init)(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  return checkpoint.LoadedGenerator(config=config, step=0, module=module,
                                    variables=variables, path=f"random:{config_name}")


def time_translate(translator: translator_lib.Translator, height: int, width: int, warmup: int,
                   calls: int) -> tuple[float, float]:
  """(images/s, compile seconds) of `calls` full batches of [height, width] images."""
  images = np.random.default_rng(0).integers(
      0, 256, (translator.batch_size, height, width, 3), dtype=np.uint8)
  start = time.perf_counter()
  translator.translate(images[:1])  # compiles the bucket's batch shape
  compile_seconds = time.perf_counter() - start
  for _ in range(warmup):
    translator.translate(images)
  start = time.perf_counter()
  for _ in range(calls):
    translator.translate(images)
  return calls * len(images) / (time.perf_counter() - start), compile_seconds


def time_folder(translator: translator_lib.Translator, height: int, width: int,
                count: int) -> float:
  """images/s of `translate_dataset` over `count` JPEG files (decode + translate + encode)."""
  with tempfile.TemporaryDirectory() as root:
    rng = np.random.default_rng(0)
    for index in range(count):
      Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
          os.path.join(root, f"{index:04d}.jpg"), quality=90)
    summary = translator_lib.translate_dataset(
        translator, sources.FolderSource(root), os.path.join(root, "out"), progress=False)
  return summary.images_per_second


def _render_frame(path: str, seed: int, style: str, height: int, width: int):
  """Writes toy_streets scene `seed` as a PNG (level 1) at `path`, atomically."""
  image, _ = toy_streets.render(seed, style, height, width)
  encoded = io.BytesIO()
  Image.fromarray(image).save(encoded, format="PNG", compress_level=1)
  with storage.atomic_write(path) as f:
    f.write(encoded.getvalue())


def render_frames(folder: str, count: int, style: str, height: int, width: int,
                  workers: int = os.cpu_count() or 1) -> str:
  """`count` toy_streets scenes of `style` at [height, width] as folder/00000.png, ...

  The scenes are the style's first `count` train seeds; files already there are kept
  (a scene renders the same every time), so a folder is rendered once. Rendering
  runs in `workers` spawned processes (~0.6 s per 1914x1052 "real" frame per core).
  Returns `folder`.
  """
  seeds = toy_streets.split_seeds(style)
  if not 0 < count <= len(seeds):
    raise ValueError(f"render_frames: count={count} outside 1..{len(seeds)}")
  os.makedirs(folder, exist_ok=True)
  todo = [(os.path.join(folder, f"{i:05d}.png"), seeds[i]) for i in range(count)]
  todo = [(path, seed) for path, seed in todo if not os.path.exists(path)]
  if todo:
    with concurrent.futures.ProcessPoolExecutor(
        max(1, min(workers, len(todo))), mp_context=multiprocessing.get_context("spawn")) as pool:
      for future in [pool.submit(_render_frame, path, seed, style, height, width)
                     for path, seed in todo]:
        future.result()
  return folder


@dataclasses.dataclass(frozen=True)
class BatchTiming:
  """One batch the device ran: its image count, when its call returned, when its output was
  ready (`time.perf_counter()` seconds)."""
  images: int
  dispatched: float
  ready: float


@dataclasses.dataclass(frozen=True)
class SteadyState:
  """The steady window of a run: `images` from `start` to `end` (perf_counter seconds),
  the device busy for `busy_seconds` of it."""
  images: int
  start: float
  end: float
  busy_seconds: float

  @property
  def images_per_second(self) -> float:
    return self.images / (self.end - self.start)

  @property
  def idle_fraction(self) -> float:
    return 1.0 - self.busy_seconds / (self.end - self.start)


def steady_state(batches: Sequence[BatchTiming], skip: int) -> SteadyState:
  """The steady state of a run of in-order `batches`, `skip` batches at each end left out.

  The window runs from the ready time of batch skip-1 (the last fill batch) to that of
  batch len-skip-1 (the last steady batch) and holds the images of the batches between.
  Batch i keeps the device busy from max(dispatched_i, ready_{i-1}) to ready_i: the
  device runs batches in order, one at a time.

  Raises:
    ValueError: fewer than 2 * skip + 1 batches, or skip < 1 (no window).
  """
  if skip < 1 or len(batches) < 2 * skip + 1:
    raise ValueError(f"steady_state: {len(batches)} batches leave no steady window between "
                     f"{skip} fill and {skip} drain batches (need >= {2 * skip + 1}, skip >= 1)")
  steady = range(skip, len(batches) - skip)
  busy = sum(batches[i].ready - max(batches[i].dispatched, batches[i - 1].ready)
             for i in steady)
  return SteadyState(images=sum(batches[i].images for i in steady),
                     start=batches[skip - 1].ready, end=batches[steady[-1]].ready,
                     busy_seconds=busy)


class TimedTranslator(translator_lib.Translator):
  """A Translator that records a `BatchTiming` for every batch it dispatches."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._timings: list[tuple[int, float, concurrent.futures.Future]] = []
    self._watcher = concurrent.futures.ThreadPoolExecutor(1)

  def start(self, padded_images, sizes, padded_labels=None) -> translator_lib.PendingTranslation:
    pending = super().start(padded_images, sizes, padded_labels)
    dispatched = time.perf_counter()
    ready = self._watcher.submit(
        lambda array: (array.block_until_ready(), time.perf_counter())[1], pending.array)
    self._timings.append((len(sizes), dispatched, ready))
    return pending

  def take_timings(self) -> list[BatchTiming]:
    """The batches dispatched since the last call, in order (waits for their outputs)."""
    timings = [BatchTiming(images, dispatched, ready.result())
               for images, dispatched, ready in self._timings]
    self._timings = []
    return timings


def time_generator_only(translator: translator_lib.Translator, frames: list[np.ndarray],
                        skip: int) -> float:
  """images/s of `Translator.translate` over full batches of `frames` ([H, W, 3] uint8),
  timed after `skip` batches."""
  size = translator.batch_size
  batches = [np.stack(frames[i:i + size]) for i in range(0, len(frames) - size + 1, size)]
  if len(batches) <= skip:
    raise ValueError(f"{len(frames)} frames make {len(batches)} batches of {size}; need "
                     f"more than --steady_skip={skip}")
  for batch in batches[:skip]:
    translator.translate(batch)
  start = time.perf_counter()
  for batch in batches[skip:]:
    translator.translate(batch)
  return (len(batches) - skip) * size / (time.perf_counter() - start)


def time_end_to_end(translator: TimedTranslator, folder: str, skip: int, read_threads: int,
                    write_threads: int) -> tuple[SteadyState, float, float, float]:
  """`translate_dataset` over the images of `folder` into a temporary folder.

  Returns (steady state, images/s over the whole call, fill seconds from the call to the
  start of the steady window, drain seconds from its end to the call's return).
  """
  translator.take_timings()
  with tempfile.TemporaryDirectory() as output:
    start = time.perf_counter()
    summary = translator_lib.translate_dataset(
        translator, sources.FolderSource(folder), output, read_threads=read_threads,
        write_threads=write_threads, progress=False)
    end = time.perf_counter()
  if summary.status != "complete":
    raise RuntimeError(f"translate_dataset over {folder}: {summary}")
  steady = steady_state(translator.take_timings(), skip)
  return steady, summary.translated / (end - start), steady.start - start, end - steady.end


def steady_table(args, device_name: str, frames_root: str):
  """Prints the generator-only vs end-to-end table over --frames rendered frames."""
  print(f"\nSteady state over {args.frames} toy_streets:{args.frames_style} PNG frames per "
        f"size; {args.steady_skip} batches of fill and of drain; end to end with "
        f"{args.read_threads} read and {args.write_threads} write threads\n")
  print("| device | size (WxH) | dtype | batch | generator only images/s | end to end "
        "images/s (steady) | end to end / generator | device idle (steady) | end to end "
        "images/s (whole run) | fill s | drain s |")
  print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  generators = {dtype: random_generator(args.config, dtype) for dtype in args.dtypes}
  for height, width in args.sizes:
    folder = render_frames(os.path.join(frames_root, f"{args.frames_style}_{height}x{width}"),
                           args.frames, args.frames_style, height, width)
    source = sources.FolderSource(folder)
    frames = [source[i]["image"] for i in range(args.frames)]
    for dtype, generator in generators.items():
      for batch_size in args.batch_sizes:
        translator = TimedTranslator(generator, batch_size=batch_size)
        translator.translate(np.stack(frames[:batch_size]))  # compiles
        generator_rate = time_generator_only(translator, frames, args.steady_skip)
        steady, whole_rate, fill, drain = time_end_to_end(
            translator, folder, args.steady_skip, args.read_threads, args.write_threads)
        print(f"| {device_name} | {width}x{height} | {dtype} | {batch_size} | "
              f"{generator_rate:.3g} | {steady.images_per_second:.3g} | "
              f"{steady.images_per_second / generator_rate:.2f} | "
              f"{100 * steady.idle_fraction:.0f}% | {whole_rate:.3g} | {fill:.1f} | "
              f"{drain:.1f} |", flush=True)
    del frames


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", choices=sorted(CONFIGS), default="vsait")
  parser.add_argument("--sizes", default="512x1024,1052x1914",
                      help="comma-separated HxW (the table prints WxH)")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--batch_sizes", default="1,4,8",
                      help="rounded up to multiples of the device count")
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--calls", type=int, default=3,
                      help="timed calls per throughput row (0: no throughput table)")
  parser.add_argument("--folder_images", type=int, default=0,
                      help="noise JPEG files for the end-to-end row per size and dtype (0: none)")
  parser.add_argument("--frames", type=int, default=0,
                      help="toy_streets frames per size for the steady-state table (0: none)")
  parser.add_argument("--frames_style", default="real", choices=toy_streets.STYLES)
  parser.add_argument("--frames_dir", default="",
                      help="where the frames are rendered (kept, reused by later runs); "
                      "default: a temporary folder")
  parser.add_argument("--steady_skip", type=int, default=4,
                      help="batches of fill (and of drain) left out of the steady state")
  parser.add_argument("--read_threads", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--write_threads", type=int, default=os.cpu_count() or 1)
  args = parser.parse_args()

  devices = jax.local_devices()
  device_name = f"{len(devices)}x {devices[0].device_kind}"
  args.sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
  args.dtypes = args.dtypes.split(",")
  args.batch_sizes = sorted({-(-int(b) // len(devices)) * len(devices)
                             for b in args.batch_sizes.split(",")})
  print(f"{args.config} generator on {device_name} ({jax.default_backend()}), jax "
        f"{jax.__version__}")
  if args.calls:
    print(f"\n{args.calls} timed calls after {args.warmup} warm-up\n")
    print("| device | size (WxH) | dtype | batch | images/s | ms/image | first call s |")
    print("|---|---|---|---:|---:|---:|---:|")
    for height, width in args.sizes:
      for dtype in args.dtypes:
        generator = random_generator(args.config, dtype)
        for batch_size in args.batch_sizes:
          translator = translator_lib.Translator(generator, batch_size=batch_size)
          rate, compile_seconds = time_translate(translator, height, width, args.warmup,
                                                 args.calls)
          print(f"| {device_name} | {width}x{height} | {dtype} | {batch_size} | {rate:.3g} | "
                f"{1000 / rate:.0f} | {compile_seconds:.1f} |", flush=True)
        if args.folder_images:
          translator = translator_lib.Translator(generator, batch_size=args.batch_sizes[-1])
          rate = time_folder(translator, height, width, args.folder_images)
          print(f"| {device_name} | {width}x{height} | {dtype} | {args.batch_sizes[-1]}, "
                f"{args.folder_images} JPEG files end to end | {rate:.3g} | {1000 / rate:.0f} "
                "| |", flush=True)
  if args.frames:
    if args.frames_dir:
      steady_table(args, device_name, args.frames_dir)
    else:
      with tempfile.TemporaryDirectory() as frames_root:
        steady_table(args, device_name, frames_root)


if __name__ == "__main__":
  main()
