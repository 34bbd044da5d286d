"""cityscapes_fine: Cityscapes leftImg8bit images with gtFine label maps.

TFDS's own "cityscapes" builder reads the downloaded zip files; this one reads
the extracted folders (the layout every segmentation code base uses) and
stores both the official label ids and the 19 train ids, as ArrayRecord.

manual_dir layout (register and download at https://www.cityscapes-dataset.com):

  leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Prepare with `python -m i2i_jax.data.tfds cityscapes_fine MANUAL_DIR`.
"""

import io
import os

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

# The official Cityscapes label id -> train id table (cityscapesscripts
# helpers/labels.py); everything not listed is 255 ("ignore").
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8,
              22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16,
              32: 17, 33: 18}
LABEL_ID_TO_TRAIN_ID = np.full(256, 255, np.uint8)
for _label_id, _train_id in _TRAIN_IDS.items():
  LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
  """[H, W] uint8 Cityscapes label ids -> [H, W] uint8 train ids (255 ignore)."""
  return LABEL_ID_TO_TRAIN_ID[label_ids]


def png_bytes(array: np.ndarray) -> bytes:
  """Encodes a [H, W] uint8 map as PNG (TFDS needs TensorFlow to do it)."""
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def convert_label(image_path: str, label_path: str):
  """(label ids, train ids) PNG bytes of one frame, or None with a warning.

  A label that cannot be read or whose size differs from its image's is
  skipped here, named in the log, rather than stopping the build.
  """
  try:
    with Image.open(label_path) as label_file:
      label_ids = np.asarray(label_file)
    with Image.open(image_path) as image_file:
      width, height = image_file.size
    if label_ids.ndim != 2:
      raise ValueError(f"label has shape {label_ids.shape}, expected [H, W]")
    if label_ids.shape != (height, width):
      raise ValueError(f"label is {label_ids.shape[1]}x{label_ids.shape[0]}, "
                       f"image is {width}x{height}")
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises many types for broken files; one must not stop the build.
    logging.warning("skipped %s: %s: %s", image_path, type(e).__name__, e)
    return None
  label_ids = label_ids.astype(np.uint8)
  return png_bytes(label_ids), png_bytes(label_ids_to_train_ids(label_ids))


def _features():
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 3)),
      "label": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
      "label_ids": tfds.features.Image(shape=(None, None, 1), use_colormap=False),
      "file_name": tfds.features.Text(),
  })


class CityscapesFine(tfds.core.GeneratorBasedBuilder):
  """Cityscapes fine annotations: image, train-id label, label ids."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_features(),
        homepage="https://www.cityscapes-dataset.com",
        description="Cityscapes leftImg8bit with gtFine labelIds and trainIds.")

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    images = os.path.join(root, "leftImg8bit")
    if not os.path.isdir(images):
      raise FileNotFoundError(f"cityscapes_fine: {images!r} does not exist; "
                              f"see the layout in {__name__}")
    splits = sorted(s for s in os.listdir(images)
                    if os.path.isdir(os.path.join(images, s)))
    return {split: self._generate_examples(root, split) for split in splits}

  def _generate_examples(self, root, split):
    image_dir = os.path.join(root, "leftImg8bit", split)
    skipped = 0
    for city in sorted(os.listdir(image_dir)):
      for name in sorted(os.listdir(os.path.join(image_dir, city))):
        if not name.endswith("_leftImg8bit.png"):
          continue
        frame = name[:-len("_leftImg8bit.png")]
        image_path = os.path.join(image_dir, city, name)
        label_path = os.path.join(root, "gtFine", split, city,
                                  f"{frame}_gtFine_labelIds.png")
        labels = convert_label(image_path, label_path)
        if labels is None:
          skipped += 1
          continue
        relpath = f"{split}/{city}/{name}"
        yield relpath, {"image": image_path, "label_ids": labels[0],
                        "label": labels[1], "file_name": relpath}
    logging.info("cityscapes_fine: split %s: skipped %d frames", split, skipped)
