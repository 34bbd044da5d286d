"""CPU cost of decoding inputs and encoding translations, codec by codec.

Renders toy_streets scenes at 1052x1914 (H x W, a GTA5 frame size), "real"
(noisy, compresses poorly) and "sim" (flat), then for every codec measures,
side by side in one run, one table per style:

  decode ms   CPU time (`time.process_time`, one thread) to decode one file the
              codec wrote (for PNG candidates: the PIL level-1 file, so every
              decoder reads the same bytes)
  encode ms   CPU time to encode one [H, W, 3] uint8 frame
  size        encoded size relative to PIL's PNG at compress_level 1
  identical   decoders: whether the pixels equal PIL's decode of the same file;
              lossless encoders: whether PIL decodes the file to exactly the
              encoded array (drop-in for every PIL reader)

Medians over the frames. CPU time, not wall time, so that the other processes
of a shared machine change little. Then the I/O CPU per image before (PIL decode
+ PIL level-1 encode) and with `i2i_jax.codecs` (its decode + its default
encode), and what that means on a host with more cores, and whether the default
encoder releases the GIL (two threads encoding at once against one).

  python benchmarks/codecs.py [--frames 12] [--cores 16]
"""

import argparse
import concurrent.futures
import io
import statistics
import time

import fpng
import imagecodecs
import numpy as np
from PIL import Image

try:
  import pillow_jxl  # noqa: F401  pylint: disable=unused-import  (PIL then reads .jxl)
except ImportError:  # no JPEG XL row: Pillow alone cannot read the files
  pillow_jxl = None

from i2i_jax import codecs
from i2i_jax.data import sources
from i2i_jax.data import toy_streets

HEIGHT, WIDTH = 1052, 1914


def pil_encode(array: np.ndarray, **options) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, **options)
  return buffer.getvalue()


def pil_decode(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


# name -> (encode(array) -> bytes, decode(bytes) -> array, lossless)
CODECS = {
    "PIL png level 1": (lambda a: pil_encode(a, format="PNG", compress_level=1),
                        pil_decode, True),
    "imagecodecs png (libpng) level 1": (lambda a: imagecodecs.png_encode(a, level=1),
                                         imagecodecs.png_decode, True),
    "imagecodecs spng level 1": (lambda a: imagecodecs.spng_encode(a, level=1),
                                 imagecodecs.spng_decode, True),
    "fpng": (fpng.from_ndarray, None, True),
    "i2i_jax.codecs png (default)": (lambda a: codecs.encode(a, "png"),
                                     sources.decode_image, True),
    "PIL jpeg q95": (lambda a: pil_encode(a, format="JPEG", quality=95), pil_decode, False),
    "imagecodecs jpeg8 (libjpeg-turbo) q95": (
        lambda a: imagecodecs.jpeg8_encode(a, level=95), imagecodecs.jpeg8_decode, False),
    "i2i_jax.codecs jpg q95": (lambda a: codecs.encode(a, "jpg", quality=95),
                               sources.decode_image, False),
}
if pillow_jxl is not None:
  CODECS["jxl lossless effort 1 (PIL reads it with pillow-jxl-plugin)"] = (
      lambda a: imagecodecs.jpegxl_encode(a, lossless=True, effort=1),
      imagecodecs.jpegxl_decode, True)


def cpu_ms(function, *args):
  """(result, CPU milliseconds of one call)."""
  start = time.process_time()
  result = function(*args)
  return result, 1000 * (time.process_time() - start)


def measure(frames: list[np.ndarray]) -> dict[str, dict]:
  """Per codec: median decode/encode CPU ms, median size ratio, identical pixels."""
  rows = {name: {"encode": [], "decode": [], "size": [], "identical": True}
          for name in CODECS}
  for frame in frames:
    reference_png = pil_encode(frame, format="PNG", compress_level=1)
    for name, (encode, decode, lossless) in CODECS.items():
      row = rows[name]
      data, ms = cpu_ms(encode, frame)
      row["encode"].append(ms)
      row["size"].append(len(data) / len(reference_png))
      # What PIL (every downstream reader) sees in the file.
      seen_by_pil = pil_decode(data)
      if lossless:
        row["identical"] &= np.array_equal(seen_by_pil, frame)
      if decode is None:
        continue
      # PNG decoders all read PIL's level-1 file; JPEG ones their own file.
      encoded = reference_png if lossless and "jxl" not in name else data
      expected = pil_decode(encoded) if "jxl" not in name else frame
      decoded, ms = cpu_ms(decode, encoded)
      row["decode"].append(ms)
      row["identical"] &= np.array_equal(decoded, expected)
  return rows


def releases_gil(frame: np.ndarray, repeats: int = 6) -> float:
  """Wall time of `repeats` default encodes on two threads / on one (~0.5: released)."""
  def run(threads):
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      list(pool.map(lambda _: codecs.encode(frame, "png"), range(repeats)))
    return time.perf_counter() - start
  run(1)
  return run(2) / run(1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--frames", type=int, default=12, help="frames per style")
  parser.add_argument("--cores", type=int, default=16)
  args = parser.parse_args()
  for style in ("real", "sim"):
    frames = [toy_streets.render(seed, style, HEIGHT, WIDTH)[0] for seed in range(args.frames)]
    rows = measure(frames)
    print(f"\n{len(frames)} toy_streets '{style}' frames, {WIDTH}x{HEIGHT}, medians, "
          "CPU ms of one thread\n")
    print("| codec | decode ms | encode ms | size vs PIL png 1 | identical pixels |")
    print("|---|---:|---:|---:|---|")
    for name, row in rows.items():
      decode = f"{statistics.median(row['decode']):.1f}" if row["decode"] else "-"
      print(f"| {name} | {decode} | {statistics.median(row['encode']):.1f} | "
            f"{statistics.median(row['size']):.3f} | {'yes' if row['identical'] else 'NO'} |")
    before = (statistics.median(rows["PIL png level 1"]["decode"])
              + statistics.median(rows["PIL png level 1"]["encode"]))
    after = (statistics.median(rows["i2i_jax.codecs png (default)"]["decode"])
             + statistics.median(rows["i2i_jax.codecs png (default)"]["encode"]))
    print(f"\nI/O CPU per image (PNG in, PNG out): before {before:.1f} ms (PIL decode + PIL "
          f"level-1 encode), after {after:.1f} ms (i2i_jax.codecs); on {args.cores} cores: "
          f"{args.cores * 1000 / before:.0f} -> {args.cores * 1000 / after:.0f} images/s")
  print(f"\ndefault encoder, 2 threads / 1 thread wall time: {releases_gil(frames[0]):.2f} "
        "(~0.5 with 2 free cores: the GIL is released; ~1.0: held)")


if __name__ == "__main__":
  main()
