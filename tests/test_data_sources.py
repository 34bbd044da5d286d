"""Sources named by config strings, over real files written to tmp_path."""

import os
import struct
import zlib

import numpy as np
from PIL import Image
import pytest

from i2i_jax.data import sources


def _save(path, array, **kwargs):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _image(value, size=(6, 8)):
  return np.full((*size, 3), value, np.uint8)


def test_folder_lists_images_recursively_sorted_and_ignores_other_files(tmp_path):
  _save(tmp_path / "b" / "z.png", _image(1))
  _save(tmp_path / "a" / "deep" / "y.JPG", _image(2), format="JPEG")
  _save(tmp_path / "a" / "x.jpeg", _image(3), format="JPEG")
  (tmp_path / "notes.txt").write_text("not an image")
  source = sources.open_source(f"folder:{tmp_path}")
  assert source.files == ("a/deep/y.JPG", "a/x.jpeg", "b/z.png")
  assert len(source) == 3
  record = source[2]
  assert record["relpath"] == "b/z.png"
  assert record["image"].dtype == np.uint8 and record["image"].shape == (6, 8, 3)
  np.testing.assert_array_equal(record["image"], _image(1))
  assert "label" not in record


def test_folder_labels_match_by_relative_path_and_stem(tmp_path):
  _save(tmp_path / "img" / "city" / "f1.jpg", _image(10), format="JPEG")
  _save(tmp_path / "img" / "city" / "f2.png", _image(20))
  label = np.arange(48, dtype=np.uint8).reshape(6, 8)
  _save(tmp_path / "lbl" / "city" / "f1.png", label)
  _save(tmp_path / "lbl" / "city" / "f2.png", label[::-1])
  source = sources.open_source(f"folder:{tmp_path / 'img'}",
                               labels=str(tmp_path / "lbl"))
  assert source.has_labels
  np.testing.assert_array_equal(source[0]["label"], label)
  np.testing.assert_array_equal(source[1]["label"], label[::-1])


def test_bad_files_become_error_records_naming_the_problem(tmp_path):
  images, labels = tmp_path / "img", tmp_path / "lbl"
  _save(images / "0_good.png", _image(5))
  _save(labels / "0_good.png", np.zeros((6, 8), np.uint8))
  _save(images / "1_truncated.png", np.random.default_rng(0).integers(
      0, 255, (64, 64, 3), np.uint8))
  data = (images / "1_truncated.png").read_bytes()
  (images / "1_truncated.png").write_bytes(data[: len(data) // 2])
  _save(labels / "1_truncated.png", np.zeros((64, 64), np.uint8))
  (images / "2_empty.jpg").write_bytes(b"")
  _save(labels / "2_empty.png", np.zeros((6, 8), np.uint8))
  (images / "3_text.png").write_text("hello")
  _save(labels / "3_text.png", np.zeros((6, 8), np.uint8))
  _save(images / "4_wrong_size.png", _image(5))
  _save(labels / "4_wrong_size.png", np.zeros((6, 9), np.uint8))
  _save(images / "5_no_label.png", _image(5))
  _save(images / "6_rgb_label.png", _image(5))
  _save(labels / "6_rgb_label.png", _image(1))
  (images / "7_corrupt_no_label.png").write_text("hello")

  source = sources.open_source(f"folder:{images}", labels=str(labels))
  records = [source[i] for i in range(len(source))]
  assert not sources.is_bad(records[0])
  reasons = {r["relpath"]: r[sources.ERROR_KEY] for r in records[1:]}
  assert all(sources.is_bad(r) for r in records[1:])
  assert "truncated" in reasons["1_truncated.png"]
  assert "UnidentifiedImageError" in reasons["2_empty.jpg"]
  assert "UnidentifiedImageError" in reasons["3_text.png"]
  assert "8x6" in reasons["4_wrong_size.png"] and "9x6" in reasons["4_wrong_size.png"]
  assert "no label" in reasons["5_no_label.png"]
  assert "mode RGB" in reasons["6_rgb_label.png"]
  # The image's own problem comes first: a label would not make it readable.
  assert "UnidentifiedImageError" in reasons["7_corrupt_no_label.png"]


def test_missing_and_empty_folders_are_errors_that_name_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing_dir"):
    sources.open_source(f"folder:{tmp_path / 'missing_dir'}")
  (tmp_path / "empty_dir").mkdir()
  with pytest.raises(ValueError, match="empty_dir"):
    sources.open_source(f"folder:{tmp_path / 'empty_dir'}")
  _save(tmp_path / "img" / "a.png", _image(0))
  with pytest.raises(FileNotFoundError, match="no_labels_here"):
    sources.open_source(f"folder:{tmp_path / 'img'}",
                        labels=str(tmp_path / "no_labels_here"))


def test_toy_streets_source_renders_paired_val_and_unpaired_train():
  sim_val = sources.open_source("toy_streets:sim:val")
  real_val = sources.open_source("toy_streets:real:val")
  sim_train = sources.open_source("toy_streets:sim")
  real_train = sources.open_source("toy_streets:real")
  assert len(sim_train) > len(sim_val) > 0
  a, b = sim_val[7], real_val[7]
  assert a["relpath"] == b["relpath"] == "val/00007.png"
  np.testing.assert_array_equal(a["label"], b["label"])
  assert not np.array_equal(sim_train[7]["label"], real_train[7]["label"])


def test_a_bare_path_is_a_folder_and_an_existing_folder_wins_over_a_kind(tmp_path, monkeypatch):
  _save(tmp_path / "plain" / "a.png", _image(0))
  _save(tmp_path / "tfds:maps" / "b.png", _image(1))  # a folder named like a tfds: spec
  assert sources.open_source(str(tmp_path / "plain")).files == ("a.png",)
  monkeypatch.chdir(tmp_path)
  assert sources.open_source("plain").files == ("a.png",)
  assert sources.open_source("tfds:maps").files == ("b.png",)
  with pytest.raises(FileNotFoundError, match="'nope:x'"):
    sources.open_source("nope:x")  # not a source kind: a folder path, and it is missing


def test_unknown_specs_are_errors_that_name_them():
  with pytest.raises(ValueError, match="'tfds:'"):
    sources.open_source("tfds:")
  with pytest.raises(ValueError, match="'watercolour'"):
    sources.open_source("toy_streets:watercolour")
  with pytest.raises(ValueError, match="label folder"):
    sources.open_source("toy_streets:sim", labels="/some/labels")


def _write_png_16_bit_rgb(path, array):
  """A 16-bit-per-sample RGB PNG (Pillow cannot write one): [H, W, 3] uint16."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data)))
  height, width, _ = array.shape
  rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in array)
  path.write_bytes(b"\x89PNG\r\n\x1a\n" +
                   chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)) +
                   chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_grey_png_decodes_to_its_gradient_not_white(tmp_path):
  gradient = np.linspace(256, 65535, 6 * 8).astype(np.uint16).reshape(6, 8)
  _save(tmp_path / "depth16.png", gradient)
  image = sources.decode_image(tmp_path / "depth16.png")
  assert image.dtype == np.uint8 and image.shape == (6, 8, 3)
  np.testing.assert_array_equal(image, np.repeat((gradient >> 8)[..., None], 3, -1))
  # 16-bit RGB (which Pillow reads itself) gives the same 8 bits.
  _write_png_16_bit_rgb(tmp_path / "rgb16.png", np.repeat(gradient[..., None], 3, -1))
  np.testing.assert_array_equal(sources.decode_image(tmp_path / "rgb16.png"), image)


def test_every_png_and_jpeg_mode_decodes_to_rgb_or_is_refused_by_name(tmp_path):
  grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
  colour = np.stack([grey, 255 - grey, np.full_like(grey, 90)], -1)
  Image.fromarray(grey > 100).save(tmp_path / "bits.png")
  Image.fromarray(np.stack([grey, np.full_like(grey, 7)], -1), "LA").save(
      tmp_path / "grey_alpha.png")
  Image.fromarray(np.dstack([colour, np.full_like(grey, 0)])).save(
      tmp_path / "rgba_clear.png")
  palette = Image.fromarray(colour).quantize(16)
  palette.save(tmp_path / "palette_transparent.png", transparency=3)
  Image.fromarray(colour).convert("CMYK").save(tmp_path / "print.jpg", quality=100)
  Image.fromarray(grey.astype(np.int32) * 1000).save(tmp_path / "int32.png", format="TIFF")
  Image.fromarray(grey / 255.0).save(tmp_path / "float.png", format="TIFF")

  source = sources.open_source(f"folder:{tmp_path}")
  records = {source[i]["relpath"]: source[i] for i in range(len(source))}
  for relpath, record in records.items():
    if not sources.is_bad(record):
      assert record["image"].shape == (6, 8, 3), relpath
      assert record["image"].dtype == np.uint8, relpath
  np.testing.assert_array_equal(records["bits.png"]["image"][..., 0],
                                np.where(grey > 100, 255, 0))
  np.testing.assert_array_equal(records["grey_alpha.png"]["image"][..., 1], grey)
  np.testing.assert_array_equal(records["rgba_clear.png"]["image"], colour)
  np.testing.assert_array_equal(records["palette_transparent.png"]["image"],
                                np.asarray(palette.convert("RGB")))
  assert np.abs(records["print.jpg"]["image"].astype(int) - colour).max() < 8
  assert "mode I " in records["int32.png"][sources.ERROR_KEY]
  assert "mode F " in records["float.png"][sources.ERROR_KEY]


def test_symlink_loop_and_folder_named_like_an_image_list_each_image_once(tmp_path):
  _save(tmp_path / "a" / "x.png", _image(1))
  _save(tmp_path / "looks_like.png" / "y.png", _image(2))
  (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
  source = sources.open_source(f"folder:{tmp_path}")
  assert source.files == ("a/x.png", "looks_like.png/y.png")


def test_canonical_spec_is_equal_for_specs_of_the_same_data(tmp_path):
  (tmp_path / "data").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
  same = {sources.canonical_spec(spec) for spec in (
      f"folder:{tmp_path}/data", f"folder:{tmp_path}/data/",
      f"folder:{tmp_path}/link", f"folder:{tmp_path}/data/../data")}
  assert same == {f"folder:{os.path.realpath(tmp_path / 'data')}"}
  assert (sources.canonical_spec("toy_streets:sim") ==
          sources.canonical_spec("toy_streets:sim:train") != "toy_streets:sim:val")
  assert sources.canonical_spec("tfds:gta5") == "tfds:gta5:train"
