"""Input pipeline throughput: grain (0/1/2 worker processes) vs a plain PIL loop.

Writes GTA-sized (1914x1052) JPEG and PNG street scenes to a temporary
folder, then measures images/s of the paper's preprocessing
(resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)) through
`make_train_iterator` (both domains read the folder; each batch holds
2 * batch_size images) and through a single-threaded PIL + Python loop doing
the same work, in the same process. Prints a markdown table.

  python benchmarks/input_pipeline.py [--images 48] [--batch_size 4]
"""

import argparse
import os
import platform
import tempfile
import time

from absl import flags
import numpy as np
from PIL import Image

from i2i_jax.configs import vsait
from i2i_jax.data import pipeline
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


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=48,
                      help="images timed per configuration")
  parser.add_argument("--files", type=int, default=24,
                      help="distinct files written per format")
  parser.add_argument("--batch_size", type=int, default=4)
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags

  print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{GTA_SIZE[0]}x{GTA_SIZE[1]} files -> 256x256 crops; "
        f"{args.images} images timed per row\n")
  print("| format | loader | images/s | vs PIL loop |")
  print("|---|---|---:|---:|")
  with tempfile.TemporaryDirectory() as tmp:
    for ext in ("jpg", "png"):
      folder = os.path.join(tmp, ext)
      write_images(folder, args.files, ext)
      baseline = pil_loop(folder, args.images)
      print(f"| {ext} | PIL + Python loop | {baseline:.1f} | 1.00x |", flush=True)
      for workers in (0, 1, 2):
        rate = grain_pipeline(folder, args.images, workers, args.batch_size)
        print(f"| {ext} | grain, {workers} worker processes | {rate:.1f} | "
              f"{rate / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
  main()
