"""Fast codecs: outputs that PIL reads back exactly, inputs decoded to PIL's pixels."""

import io
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from i2i_jax import codecs
from i2i_jax import output_tree
from i2i_jax.data import sources
from i2i_jax.data import toy_streets


@pytest.fixture(scope="module")
def scene():
  return toy_streets.render(3, "real", 96, 160)[0]


def _pil_decode(data):
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def _pil_encode(image, **options):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, **options)
  return buffer.getvalue()


@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_png_at_every_level_is_an_ordinary_png_that_pil_reads_exactly(scene, level):
  data = codecs.encode(scene, "png", png_compress_level=level)
  with Image.open(io.BytesIO(data)) as image:
    assert image.format == "PNG" and image.mode == "RGB"
  np.testing.assert_array_equal(_pil_decode(data), scene)


def test_jpg_is_the_file_pil_writes_at_the_same_quality(scene):
  for quality in (75, 95):
    assert codecs.encode(scene, "jpg", quality=quality) == _pil_encode(
        scene, format="JPEG", quality=quality)


def test_only_fpng_holds_the_gil_and_bad_inputs_are_named(scene):
  assert codecs.holds_gil("png", 1)
  assert not codecs.holds_gil("png", 6) and not codecs.holds_gil("jpg", 1)
  with pytest.raises(ValueError, match="tiff"):
    codecs.encode(scene, "tiff")
  with pytest.raises(ValueError, match="10"):
    codecs.encode(scene, "png", png_compress_level=10)
  with pytest.raises(ValueError, match="float32"):
    codecs.encode(scene.astype(np.float32), "png")
  # A non-contiguous view encodes its own pixels.
  np.testing.assert_array_equal(_pil_decode(codecs.encode(scene[:, ::2], "png")), scene[:, ::2])


def test_output_tree_encode_follows_the_settings(scene):
  png = output_tree.encoder(output_tree.Settings(format="png", png_compress_level=9))(scene)
  assert png == codecs.encode(scene, "png", png_compress_level=9)
  jpg = output_tree.encoder(output_tree.Settings(format="jpg", quality=80))(scene)
  assert jpg == _pil_encode(scene, format="JPEG", quality=80)


def _png_with_chunks(image, extra_chunks):
  def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
  height, width = image.shape[:2]
  rows = b"".join(b"\0" + row.tobytes() for row in image)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + b"".join(chunk(kind, data) for kind, data in extra_chunks)
          + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_fast_decode_gives_pils_pixels_for_png_jpeg_and_alpha(scene, tmp_path):
  rgba = np.dstack([scene, np.full(scene.shape[:2], 9, np.uint8)])
  files = {
      "level1.png": _pil_encode(scene, format="PNG", compress_level=1),
      "fpng.png": codecs.encode(scene, "png"),
      "rgba.png": _pil_encode(rgba, format="PNG"),
      # gamma and a transparent colour: PIL ignores both in convert("RGB")
      "gamma_trns.png": _png_with_chunks(scene, [(b"gAMA", struct.pack(">I", 100000)),
                                                 (b"tRNS", b"\0\1\0\2\0\3")]),
      "q95.jpg": _pil_encode(scene, format="JPEG", quality=95),
      "q50_444.jpg": _pil_encode(scene, format="JPEG", quality=50, subsampling=0),
  }
  for name, data in files.items():
    assert sources._decode_fast(data) is not None, name  # the fast path is taken
    (tmp_path / name).write_bytes(data)
    for encoded in (data, io.BytesIO(data), tmp_path / name, str(tmp_path / name)):
      decoded = sources.decode_image(encoded)
      np.testing.assert_array_equal(decoded, _pil_decode(data), err_msg=name)
      assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
  np.testing.assert_array_equal(sources.decode_image(files["rgba.png"]), scene)


def test_other_modes_and_broken_files_are_left_to_pil(scene):
  grey = scene[..., 0]
  assert sources._decode_fast(_pil_encode(grey, format="PNG")) is None
  assert sources._decode_fast(_pil_encode(grey, format="JPEG")) is None
  cmyk = Image.fromarray(scene).convert("CMYK")
  cmyk_jpeg = io.BytesIO()
  cmyk.save(cmyk_jpeg, format="JPEG")
  assert sources._decode_fast(cmyk_jpeg.getvalue()) is None
  data = _pil_encode(scene, format="PNG")
  assert sources._decode_fast(data[: len(data) // 2]) is None
  assert sources._decode_fast(b"") is None
  with pytest.raises(OSError, match="truncated"):
    sources.decode_image(data[: len(data) // 2])
