"""gta5: the 24,966 GTA5 frames of Richter et al. (2016), with Cityscapes labels.

manual_dir layout (download from https://download.visinf.tu-darmstadt.de/data/from_games/):

  images/00001.png ... images/24966.png
  labels/00001.png ... labels/24966.png   (Cityscapes label ids, palette PNG)
  split.mat                               (the official split: trainIds,
                                           valIds, testIds, 1-based frame ids)

Labels are stored as Cityscapes train ids ("label", 255 = ignore); the few
frames whose label size differs from the image are skipped and logged.
Prepare with `python -m i2i_jax.data.tfds gta5 MANUAL_DIR`.
"""

import os

from absl import logging
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from i2i_jax.data.tfds import cityscapes

_SPLITS = {"train": "trainIds", "validation": "valIds", "test": "testIds"}


class Gta5(tfds.core.GeneratorBasedBuilder):
  """GTA5 frames with Cityscapes train-id labels, official split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
            "file_name": tfds.features.Text(),
        }),
        homepage="https://download.visinf.tu-darmstadt.de/data/from_games/",
        description="GTA5 frames with Cityscapes train-id label maps.")

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    split_file = os.path.join(root, "split.mat")
    if not os.path.isfile(split_file):
      raise FileNotFoundError(f"gta5: official split file {split_file!r} is missing")
    split_ids = scipy.io.loadmat(split_file)
    generators = {}
    for split, key in _SPLITS.items():
      if key not in split_ids:
        raise ValueError(f"gta5: {split_file!r} has no {key!r}")
      ids = np.asarray(split_ids[key]).ravel().astype(int)
      if not ids.size:
        raise ValueError(f"gta5: split {split!r} ({key} in {split_file!r}) is empty")
      generators[split] = self._generate_examples(root, split, ids)
    return generators

  def _generate_examples(self, root, split, ids):
    skipped = 0
    for frame in sorted(ids):
      name = f"{frame:05d}.png"
      image_path = os.path.join(root, "images", name)
      labels = cityscapes.convert_label(image_path,
                                        os.path.join(root, "labels", name))
      if labels is None:
        skipped += 1
        continue
      yield name, {"image": image_path, "label": labels[1],
                   "file_name": f"images/{name}"}
    logging.info("gta5: split %s: skipped %d frames", split, skipped)
