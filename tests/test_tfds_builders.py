"""TFDS builders on tiny fake trees with the real layouts, read back via grain sources."""

import os

import numpy as np
from PIL import Image
import pytest
import scipy.io

from i2i_jax.data import sources
from i2i_jax.data import tfds as i2i_tfds
from i2i_jax.data.tfds import cityscapes


def _save(path, array):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _image(seed, size=(12, 20)):
  return np.random.default_rng(seed).integers(0, 256, (*size, 3), np.uint8)


def _label_ids(seed, size=(12, 20)):
  """Cityscapes label ids, including ids that map to "ignore" (0, 4, 9)."""
  ids = np.array([0, 4, 7, 8, 9, 11, 21, 23, 26, 33], np.uint8)
  return ids[np.random.default_rng(seed).integers(0, len(ids), size)]


def _read_all(spec, data_dir):
  source = sources.open_source(spec, tfds_data_dir=data_dir)
  return {r["relpath"]: r for r in (source[i] for i in range(len(source)))}


def test_gta5_uses_the_official_split_and_train_ids(tmp_path):
  manual = tmp_path / "gta5"
  for frame in range(1, 7):
    _save(str(manual / "images" / f"{frame:05d}.png"), _image(frame))
    # GTA labels are palette PNGs of Cityscapes label ids.
    label = Image.frombytes("P", (20, 12), _label_ids(frame).tobytes())
    label.putpalette(np.random.default_rng(0).integers(0, 256, 768).tolist())
    os.makedirs(manual / "labels", exist_ok=True)
    label.save(manual / "labels" / f"{frame:05d}.png")
  # Frame 6's label has the wrong size: skipped, not fatal.
  _save(str(manual / "labels" / "00006.png"), _label_ids(6, (10, 20)))
  scipy.io.savemat(manual / "split.mat", {
      "trainIds": np.array([[1], [3], [4], [6]]), "valIds": np.array([[2]]),
      "testIds": np.array([[5]])})

  builder = i2i_tfds.prepare("gta5", str(manual), str(tmp_path / "data"))
  assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
      "train": 3, "validation": 1, "test": 1}
  assert builder.info.file_format.value == "array_record"
  train = _read_all("tfds:gta5:train", str(tmp_path / "data"))
  assert sorted(train) == ["images/00001.png", "images/00003.png", "images/00004.png"]
  record = train["images/00003.png"]
  np.testing.assert_array_equal(record["image"], _image(3))
  np.testing.assert_array_equal(
      record["label"], cityscapes.label_ids_to_train_ids(_label_ids(3)))
  assert set(np.unique(record["label"])) <= {0, 1, 2, 8, 10, 13, 18, 255}


def test_gta5_missing_split_file_is_an_error_naming_it(tmp_path):
  (tmp_path / "gta5" / "images").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="split.mat"):
    i2i_tfds.prepare("gta5", str(tmp_path / "gta5"), str(tmp_path / "data"))


def test_cityscapes_fine_stores_label_ids_and_train_ids(tmp_path):
  manual = tmp_path / "cityscapes"
  frames = {"train": [("aachen", 0), ("aachen", 1), ("bremen", 2)],
            "val": [("frankfurt", 3)]}
  for split, items in frames.items():
    for city, i in items:
      stem = f"{city}_{i:06d}_000019"
      _save(str(manual / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"),
            _image(i))
      _save(str(manual / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"),
            _label_ids(i))
      _save(str(manual / "gtFine" / split / city / f"{stem}_gtFine_color.png"),
            _image(i + 100))  # other gtFine files are ignored
  # A frame without its gtFine labels is skipped, not fatal.
  _save(str(manual / "leftImg8bit" / "train" / "bremen" /
            "bremen_000009_000019_leftImg8bit.png"), _image(9))

  builder = i2i_tfds.prepare("cityscapes_fine", str(manual), str(tmp_path / "data"))
  assert builder.info.splits["train"].num_examples == 3
  assert builder.info.splits["val"].num_examples == 1
  train = _read_all("tfds:cityscapes_fine:train", str(tmp_path / "data"))
  relpath = "train/aachen/aachen_000001_000019_leftImg8bit.png"
  assert relpath in train
  np.testing.assert_array_equal(train[relpath]["image"], _image(1))
  np.testing.assert_array_equal(
      train[relpath]["label"], cityscapes.label_ids_to_train_ids(_label_ids(1)))
  raw = builder.as_data_source("val")[0]["label_ids"]
  np.testing.assert_array_equal(raw[..., 0], _label_ids(3))


def test_label_id_to_train_id_table_matches_cityscapes():
  ids = np.array([[7, 8, 11, 26, 33, 0, 6, 34]], np.uint8)
  np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(ids),
                                [[0, 1, 2, 13, 18, 255, 255, 255]])


def test_image_folder_builds_one_split_per_folder(tmp_path):
  manual = tmp_path / "domains"
  for split, n in (("sim", 3), ("real", 2)):
    for i in range(n):
      _save(str(manual / split / "images" / "sub" / f"{i}.png"), _image(i))
      _save(str(manual / split / "labels" / "sub" / f"{i}.png"),
            np.full((12, 20), i, np.uint8))
  (manual / "real" / "images" / "sub" / "broken.png").write_bytes(b"\x89PNG")
  _save(str(manual / "real" / "labels" / "sub" / "broken.png"),
        np.zeros((12, 20), np.uint8))

  builder = i2i_tfds.prepare("image_folder/with_labels", str(manual),
                             str(tmp_path / "data"))
  assert builder.info.splits["sim"].num_examples == 3
  assert builder.info.splits["real"].num_examples == 3
  real = _read_all("tfds:image_folder/with_labels:real", str(tmp_path / "data"))
  assert sources.is_bad(real["sub/broken.png"])  # stored, skipped at read time
  np.testing.assert_array_equal(real["sub/1.png"]["image"], _image(1))
  np.testing.assert_array_equal(real["sub/1.png"]["label"],
                                np.full((12, 20), 1, np.uint8))

  images_only = i2i_tfds.prepare("image_folder/images", str(manual),
                                 str(tmp_path / "data"))
  assert "label" not in images_only.info.features
  with pytest.raises(ValueError, match="no split 'train'"):
    sources.open_source("tfds:image_folder/images", tfds_data_dir=str(tmp_path / "data"))


def test_image_folder_matches_labels_by_stem_and_names_a_missing_label_folder(tmp_path):
  manual = tmp_path / "domains"
  for name in ("a/0.jpg", "a/1.png", "2.png"):
    _save(str(manual / "sim" / "images" / name), _image(len(name)))
  for name in ("a/0.png", "2.png"):  # a/1.png has no label: not stored
    _save(str(manual / "sim" / "labels" / name), np.zeros((12, 20), np.uint8))
  builder = i2i_tfds.prepare("image_folder/with_labels", str(manual),
                             str(tmp_path / "data"))
  assert builder.info.splits["sim"].num_examples == 2
  stored = _read_all("tfds:image_folder/with_labels:sim", str(tmp_path / "data"))
  assert sorted(stored) == ["2.png", "a/0.jpg"]

  _save(str(manual / "real" / "images" / "0.png"), _image(0))
  with pytest.raises(FileNotFoundError, match=str(manual / "real" / "labels")):
    i2i_tfds.prepare("image_folder/with_labels", str(manual), str(tmp_path / "data2"))
