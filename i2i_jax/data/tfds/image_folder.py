"""image_folder: any folders of images (and label maps) as one TFDS data set.

Each sub-folder of manual_dir is a split, e.g. the two domains of an unpaired
translation task, or the output of `python -m i2i_jax.data.toy_streets`:

  <split>/images/**/*.{png,jpg,jpeg}
  <split>/labels/**/*.png     (config "with_labels"; matched by relative path
                               and stem; images without one are skipped)

Configs: "image_folder/images" (the default) and "image_folder/with_labels".
Image bytes are stored as they are (no re-encoding). Prepare with
`python -m i2i_jax.data.tfds image_folder/with_labels MANUAL_DIR`.
"""

import os

from absl import logging
import tensorflow_datasets as tfds

from i2i_jax.data import files


class ImageFolder(tfds.core.GeneratorBasedBuilder):
  """Images (and, in config with_labels, label maps), one folder per split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="images", description="Images only."),
      tfds.core.BuilderConfig(name="with_labels",
                              description="Images and label maps."),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    features = {"image": tfds.features.Image(shape=(None, None, 3)),
                "file_name": tfds.features.Text()}
    if self.builder_config.name == "with_labels":
      features["label"] = tfds.features.Image(shape=(None, None, 1),
                                              use_colormap=False)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        description="Images and optional label maps, one folder per split.")

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(root):
      raise FileNotFoundError(f"image_folder: manual_dir {root!r} does not exist")
    splits = sorted(s for s in os.listdir(root)
                    if os.path.isdir(os.path.join(root, s, "images")))
    if not splits:
      raise ValueError(f"image_folder: no <split>/images folder under {root!r}")
    return {split: self._generate_examples(os.path.join(root, split))
            for split in splits}

  def _generate_examples(self, split_dir):
    images = os.path.join(split_dir, "images")
    # files.py lists and matches the files exactly as folder: sources do.
    relpaths = files.list_images(images)
    if not relpaths:
      raise ValueError(f"image_folder: no {'/'.join(files.IMAGE_EXTENSIONS)} "
                       f"files under {images!r}")
    labels = None
    if self.builder_config.name == "with_labels":
      label_root = os.path.join(split_dir, "labels")
      if not os.path.isdir(label_root):
        raise FileNotFoundError(f"image_folder: label folder {label_root!r} does not exist")
      labels = files.LabelFolder(label_root)
    skipped = 0
    for relpath in relpaths:
      example = {"image": os.path.join(images, relpath), "file_name": relpath}
      if labels is not None:
        label = labels.path(relpath)
        if label is None:
          logging.warning("image_folder: skipped %s: no label under %s",
                          example["image"], labels.root)
          skipped += 1
          continue
        example["label"] = label
      yield relpath, example
    logging.info("image_folder: %s: skipped %d images", split_dir, skipped)
