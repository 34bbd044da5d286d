"""Fast image encoding for translated outputs: ordinary PNG/JPEG files that PIL reads.

  png, level 1 (the default)  fpng: ~7 ms for a 1914x1052 frame against PIL's
                              ~200 ms at compress_level 1, files 1-28% larger
                              (see benchmarks/RESULTS.md); holds the GIL, so
                              encode in worker processes (`holds_gil`)
  png, level 0 or 2-9         libpng (zlib-ng) at that zlib level; releases the GIL
  jpg                         libjpeg-turbo at the quality; the same bytes as PIL's
                              `save(format="JPEG", quality=q)`; releases the GIL

Every PNG is lossless: PIL decodes it to exactly the encoded array. This module
imports no JAX, so worker processes start quickly.
"""

import fpng
import imagecodecs
import numpy as np

FPNG_LEVEL = 1  # the PNG level that fpng writes


def holds_gil(image_format: str, png_compress_level: int) -> bool:
  """Whether `encode` with these settings keeps other Python threads waiting."""
  return image_format == "png" and png_compress_level == FPNG_LEVEL


def encode(image: np.ndarray, image_format: str, *, png_compress_level: int = FPNG_LEVEL,
           quality: int = 95) -> bytes:
  """Encodes an [H, W, 3] uint8 RGB image as the bytes of a file.

  Args:
    image: [H, W, 3] uint8.
    image_format: "png" or "jpg".
    png_compress_level: 0-9, png only: 1 is fpng, any other the zlib level.
    quality: 1-95 (as PIL's), jpg only.

  Raises:
    ValueError: naming the shape, dtype, format or level that is not supported.
  """
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"encode takes [H, W, 3] uint8 images, not {image.shape} {image.dtype}")
  image = np.ascontiguousarray(image)
  if image_format == "jpg":
    return imagecodecs.jpeg8_encode(image, level=quality)
  if image_format != "png":
    raise ValueError(f"image format {image_format!r} is not one of png, jpg")
  if not 0 <= png_compress_level <= 9:
    raise ValueError(f"PNG compress level {png_compress_level} is not in 0-9")
  if png_compress_level == FPNG_LEVEL:
    return fpng.from_ndarray(image)
  return imagecodecs.png_encode(image, level=png_compress_level)
