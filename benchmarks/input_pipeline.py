"""Input pipeline throughput: on-the-fly decoding vs prepared data, grain vs a PIL loop.

Three tables (--tables, default all), each printed as markdown:

  formats   GTA-sized (1914x1052, upscaled toy_streets) JPEG and PNG files: images/s
            of the paper's preprocessing
            (resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)) through
            `make_train_iterator` with 0/1/2 worker processes (both domains read the
            folder; each batch holds 2 * batch_size images) and through a
            single-threaded PIL + Python loop doing the same work.
  prepared  toy_streets "real" frames rendered at 1914x1052 (PNG): the same training
            input on the fly (decode + resize every step; also the PIL loop, the
            decoder before issue 15) and from `prepared:DIR`
            (`python -m i2i_jax.prepare`, resize done once), per worker/thread count:
            images/s and CPU ms per image (this process and its grain workers), with
            the images/s those CPU ms allow on a 16-core host.
  codecs    the prepared storage codecs: size per image, CPU ms to read and decode
            one record, and the training input's CPU ms per image (0 workers, 1 thread).

  python benchmarks/input_pipeline.py [--tables=formats,prepared,codecs] [--images 48]
      [--files 24] [--batch_size 4] [--pipelines=0x1,0x2,2x1]
"""

import argparse
import os
import platform
import tempfile
import time

from absl import flags
import grain
import numpy as np
from PIL import Image
import psutil

from i2i_jax import prepare
from i2i_jax.configs import vsait
from i2i_jax.data import pipeline
from i2i_jax.data import prepared
from i2i_jax.data import toy_streets

GTA_SIZE = (1914, 1052)  # width, height


def write_images(folder: str, n: int, ext: str):
  """n 1914x1052 street scenes (upscaled toy_streets "real" frames)."""
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    image, _ = toy_streets.render(i, "real")
    large = Image.fromarray(image).resize(GTA_SIZE, Image.BICUBIC)
    large.save(os.path.join(folder, f"{i:05d}.{ext}"), quality=90)


def pil_loop(folder: str, n: int) -> float:
  """Images/s of decode + the paper's preprocessing in a plain Python loop."""
  rng = np.random.default_rng(0)
  files = sorted(os.listdir(folder))
  start = time.perf_counter()
  for i in range(n):
    with Image.open(os.path.join(folder, files[i % len(files)])) as f:
      image = np.asarray(f.convert("RGB").resize((512, 256), Image.BILINEAR))
    left = rng.integers(512 - 256 + 1)
    image = image[:, left:left + 256]
    if rng.random() < 0.5:
      image = image[:, ::-1]
    image = image.astype(np.float32) / 127.5 - 1.0
  return n / (time.perf_counter() - start)


def grain_pipeline(folder: str, n: int, workers: int, batch_size: int) -> float:
  """Images/s (both domains) of make_train_iterator after its first batch."""
  config = vsait.get_config().data
  config.update(source=f"folder:{folder}", target=f"folder:{folder}",
                batch_size=batch_size, worker_count=workers)
  iterator = pipeline.make_train_iterator(config, seed=0, process_index=0,
                                          process_count=1)
  next(iterator)  # worker start-up and first fill are not throughput
  steps = max(1, n // (2 * batch_size))
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(iterator)
    assert batch["source"].shape == (batch_size, 256, 256, 3)
  rate = steps * 2 * batch_size / (time.perf_counter() - start)
  iterator.close()
  return rate


def cpu_seconds() -> float:
  """CPU seconds (user + system) of this process and its live children (grain workers)."""
  this = psutil.Process()
  total = sum(this.cpu_times()[:2])
  for child in this.children(recursive=True):
    try:
      total += sum(child.cpu_times()[:2])
    except psutil.NoSuchProcess:
      pass
  return total


def write_frames(folder: str, n: int):
  """n toy_streets "real" scenes rendered at 1914x1052, as PNG (GTA5's format)."""
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    image, _ = toy_streets.render(i, "real", GTA_SIZE[1], GTA_SIZE[0])
    Image.fromarray(image).save(os.path.join(folder, f"{i:05d}.png"), compress_level=1)


def time_training_input(spec: str, n: int, workers: int, threads: int,
                        batch_size: int) -> tuple[float, float]:
  """(images/s, CPU ms per image) of make_train_iterator over `spec`, both domains.

  Timed after the first batch (worker start-up and the first fill are not
  throughput); CPU counts this process and its worker processes.
  """
  config = vsait.get_config().data
  config.update(source=spec, target=spec, batch_size=batch_size, worker_count=workers,
                read_threads=threads, prefetch_buffer_size=max(2, threads))
  iterator = pipeline.make_train_iterator(config, seed=0, process_index=0, process_count=1)
  next(iterator)
  steps = max(1, n // (2 * batch_size))
  cpu, start = cpu_seconds(), time.perf_counter()
  for _ in range(steps):
    batch = next(iterator)
    assert batch["source"].shape == (batch_size, 256, 256, 3)
  wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
  iterator.close()
  images = steps * 2 * batch_size
  return images / wall, 1000 * cpu / images


def shuffle_ms(length: int, calls: int = 300) -> float:
  """CPU ms of grain's shuffle (index_shuffle) per record of a source of `length` records.

  It falls as 1/length (~27/length ms here): ~1 ms for the benchmark's few dozen
  files, 0.005 ms for GTA5's 24,966; every row pays it once per image.
  """
  cpu = time.process_time()
  for i in range(calls):
    grain.experimental.index_shuffle(i % length, max_index=length - 1, seed=i, rounds=4)
  return 1000 * (time.process_time() - cpu) / calls


def prepared_table(tmp: str, args):
  """On-the-fly vs prepared training input, per worker/thread count."""
  frames = os.path.join(tmp, "frames")
  write_frames(frames, args.files)
  out = os.path.join(tmp, "prepared")
  cpu = time.process_time()
  prepare.prepare(f"folder:{frames}", out, vsait.get_config().data.preprocess)
  prepare_ms = 1000 * (time.process_time() - cpu) / args.files
  print(f"\n{args.files} toy_streets real frames rendered at {GTA_SIZE[0]}x{GTA_SIZE[1]} "
        f"(PNG); prepare (resize(256,512), {prepared.DEFAULT_CODEC}, 1 process): "
        f"{prepare_ms:.1f} CPU ms per image, once\n")
  print("| training input | grain workers | read threads | images/s | CPU ms/image "
        "| 16 cores: images/s |")
  print("|---|---:|---:|---:|---:|---:|")
  cpu = time.process_time()
  rate = pil_loop(frames, args.images)
  cpu_ms = 1000 * (time.process_time() - cpu) / args.images
  print(f"| on the fly: PIL decode + resize, plain loop (before issue 15) | - | 1 | {rate:.1f} | "
        f"{cpu_ms:.1f} | {16 * 1000 / cpu_ms:.0f} |", flush=True)
  for label, spec in (("on the fly: PNG decode + resize", f"folder:{frames}"),
                      (f"prepared ({prepared.DEFAULT_CODEC})", f"prepared:{out}")):
    for workers, threads in args.pipelines:
      rate, cpu_ms = time_training_input(spec, args.images, workers, threads, args.batch_size)
      print(f"| {label} | {workers} | {threads} | {rate:.1f} | {cpu_ms:.1f} | "
            f"{16 * 1000 / cpu_ms:.0f} |", flush=True)
  print(f"\ngrain's shuffle, CPU ms per record (in every row above): "
        f"{shuffle_ms(args.files):.3f} for these {args.files} files, "
        f"{shuffle_ms(2975):.3f} for Cityscapes' 2975, {shuffle_ms(24966):.4f} for GTA5's 24966")
  return frames


def codecs_table(tmp: str, frames: str, args):
  """The prepared storage codecs: size, record decode CPU, training input CPU."""
  print("\n| codec | KiB/image | read + decode ms | training input CPU ms/image |")
  print("|---|---:|---:|---:|")
  for codec in prepared.CODECS:
    out = os.path.join(tmp, f"prepared_{codec}")
    prepare.prepare(f"folder:{frames}", out, "resize(256,512)", codec=codec)
    size = sum(os.path.getsize(os.path.join(out, name)) for name in os.listdir(out)
               if name.endswith(".array_record"))
    source = prepared.PreparedSource(out)
    reads = []
    for i in range(max(args.images, len(source))):
      cpu = time.process_time()
      source[i % len(source)]
      reads.append(time.process_time() - cpu)
    _, cpu_ms = time_training_input(f"prepared:{out}", args.images, 0, 1, args.batch_size)
    print(f"| {codec} | {size / 1024 / len(source):.0f} | {1000 * np.median(reads):.2f} | "
          f"{cpu_ms:.2f} |", flush=True)


def formats_table(tmp: str, args):
  """grain with 0/1/2 workers vs a PIL loop, on JPEG and PNG files."""
  print("\n| format | loader | images/s | vs PIL loop |")
  print("|---|---|---:|---:|")
  for ext in ("jpg", "png"):
    folder = os.path.join(tmp, ext)
    write_images(folder, args.files, ext)
    baseline = pil_loop(folder, args.images)
    print(f"| {ext} | PIL + Python loop | {baseline:.1f} | 1.00x |", flush=True)
    for workers in (0, 1, 2):
      rate = grain_pipeline(folder, args.images, workers, args.batch_size)
      print(f"| {ext} | grain, {workers} worker processes | {rate:.1f} | "
            f"{rate / baseline:.2f}x |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tables", default="formats,prepared,codecs",
                      help="comma-separated: formats, prepared, codecs")
  parser.add_argument("--images", type=int, default=48,
                      help="images timed per configuration")
  parser.add_argument("--files", type=int, default=24,
                      help="distinct files written per format")
  parser.add_argument("--batch_size", type=int, default=4)
  parser.add_argument("--pipelines", default="0x1,0x2,2x1",
                      help="prepared table: grain worker processes x read threads, "
                      "comma-separated")
  args = parser.parse_args()
  args.pipelines = [tuple(map(int, p.split("x"))) for p in args.pipelines.split(",")]
  tables = args.tables.split(",")
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags

  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{GTA_SIZE[0]}x{GTA_SIZE[1]} files -> 256x256 crops; {args.images} images timed "
        f"per row; load average {os.getloadavg()[0]:.2f}")
  with tempfile.TemporaryDirectory() as tmp:
    if "formats" in tables:
      formats_table(tmp, args)
    if "prepared" in tables or "codecs" in tables:
      frames = prepared_table(tmp, args) if "prepared" in tables else None
      if "codecs" in tables:
        if frames is None:
          frames = os.path.join(tmp, "frames")
          write_frames(frames, args.files)
        codecs_table(tmp, frames, args)
  print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
