"""Translation throughput of `i2i_jax.translator.Translator`: images/s per size, dtype, batch.

  PYTHONPATH=. python benchmarks/translate.py                      # paper generator
  PYTHONPATH=. python benchmarks/translate.py --config=tiny --sizes=512x1024 --batch_sizes=1,8

The generator is the paper's (9 residual blocks, 64 base channels; `--config=tiny` for
the test model) with random weights: throughput does not depend on the values. Each row
compiles its batch shape once (the first call, reported apart), runs `--warmup` calls,
then times `--calls` calls of `Translator.translate` on uint8 images already in host
memory: a row includes the reflection padding and the host<->device copies, not file
decoding. With --folder_images, one more row per size and dtype runs `translate_dataset`
over JPEG files (decode, translate, PNG encode, overlapped): the end-to-end figure.

Prints a Markdown table: device, size (WxH), dtype, batch, images/s, ms/image, seconds of
the first call (compile + one batch).
"""

import argparse
import os
import tempfile
import time

import jax
import numpy as np
from PIL import Image

from i2i_jax.configs import tiny, vsait as vsait_config
from i2i_jax import checkpoint
from i2i_jax import translator as translator_lib
from i2i_jax.data import sources
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
  parser.add_argument("--calls", type=int, default=3)
  parser.add_argument("--folder_images", type=int, default=0,
                      help="files for the end-to-end row per size and dtype (0: none)")
  args = parser.parse_args()

  devices = jax.local_devices()
  device_name = f"{len(devices)}x {devices[0].device_kind}"
  print(f"{args.config} generator on {device_name} ({jax.default_backend()}), jax "
        f"{jax.__version__}, {args.calls} timed calls after {args.warmup} warm-up\n")
  print("| device | size (WxH) | dtype | batch | images/s | ms/image | first call s |")
  print("|---|---|---|---:|---:|---:|---:|")
  sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
  for height, width in sizes:
    for dtype in args.dtypes.split(","):
      generator = random_generator(args.config, dtype)
      batch_size = 1
      for batch_size in sorted({-(-int(b) // len(devices)) * len(devices)
                                for b in args.batch_sizes.split(",")}):
        translator = translator_lib.Translator(generator, batch_size=batch_size)
        rate, compile_seconds = time_translate(translator, height, width, args.warmup,
                                               args.calls)
        print(f"| {device_name} | {width}x{height} | {dtype} | {batch_size} | {rate:.3g} | "
              f"{1000 / rate:.0f} | {compile_seconds:.1f} |", flush=True)
      if args.folder_images:
        translator = translator_lib.Translator(generator, batch_size=batch_size)
        rate = time_folder(translator, height, width, args.folder_images)
        print(f"| {device_name} | {width}x{height} | {dtype} | {batch_size}, "
              f"{args.folder_images} JPEG files end to end | {rate:.3g} | {1000 / rate:.0f} "
              "| |", flush=True)


if __name__ == "__main__":
  main()
