"""Trains the small Flax U-Net segmenter (`metrics.segmenter`) and saves it as a checkpoint folder.

  python -m i2i_jax.train_segmenter --data=toy_streets:real_detail \
      --data=toy_streets:real_mismatch --size=128x256 --out=/tmp/seg_real
  python -m i2i_jax.train_segmenter --data=folder:gta/images --labels=gta/labels \
      --size=256x512 --steps=4000 --out=/tmp/seg_gta

Two uses, one command:
  * The segmenter of the flip and detail metrics (`config.evals.NAME.segmenter`,
    `python -m i2i_jax.evaluate --segmenter=DIR`): train it on the real domain's
    labelled images, so that it reads F(X) the way it reads real images.
  * The frozen segmenter of label-guided translation: train it on the source
    (simulated) images and their free labels.

Each --data source gives its first --num_images images (all of them when
smaller), resized to --size. Labels are single-channel PNGs of Cityscapes train
ids (255 = ignore); toy_streets and tfds sources carry their own, a folder
source takes them from --labels (one --labels per folder --data, in order).

The output folder holds config.json and the Orbax checkpoint params/; it is
written under a temporary name and renamed when complete, so an interrupted run
leaves no half-written segmenter (a stale `.tmp` folder is replaced on rerun).
An existing --out is refused unless --overwrite, and an --out that is, holds or
lies inside an input or label folder always. Prints the pixel accuracy and
mIoU on --val_images held-out images of each source's val split where it has one.

Exit codes (`i2i_jax.cli`): 0 saved; 2 a usage error naming the flag (a
missing folder, an unreadable image or label, class ids beyond the classes, an
existing --out); 3 the output cannot be written.
"""

from collections.abc import Sequence
import shutil

from absl import flags
from absl import logging
from etils import epath
import numpy as np

from i2i_jax import cli
from i2i_jax import storage
from i2i_jax.data import sources
from i2i_jax.data import toy_streets
from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.metrics import semantic

FLAGS = flags.FlagValues()
_DATA = flags.DEFINE_multi_string(
    "data", None, "A labelled training source (an open_source spec: toy_streets:STYLE, "
    "tfds:NAME, folder:PATH with --labels); repeat for several.", required=True,
    flag_values=FLAGS)
_LABELS = flags.DEFINE_multi_string(
    "labels", [], "Label folder of each folder --data, in the order of the folder --data flags.",
    flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Checkpoint folder to write.", required=True,
                           flag_values=FLAGS)
_SIZE = flags.DEFINE_string("size", "128x256", "HEIGHTxWIDTH the images are resized to.",
                            flag_values=FLAGS)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 300, "Training images per --data source.",
                                   flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 2000, "Adam steps.", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Images per step.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the initialisation and the batch order.",
                             flag_values=FLAGS)
_VAL_IMAGES = flags.DEFINE_integer(
    "val_images", 32, "Held-out images per source (its val split) to report accuracy on; 0: none.",
    flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --out.",
                               flag_values=FLAGS)


def _open_all(specs: Sequence[str], label_folders: Sequence[str]) -> list:
  """The --data sources, each folder one with the next --labels; UsageError naming the flag."""
  label_folders = list(label_folders)
  opened = []
  for spec in specs:
    labels = label_folders.pop(0) if _is_folder_spec(spec) and label_folders else ""
    try:
      source = sources.open_source(spec, labels=labels)
    except (FileNotFoundError, ValueError) as e:
      raise cli.UsageError(f"--data={spec}: {e}") from e
    if not getattr(source, "has_labels", False):
      raise cli.UsageError(f"--data={spec}: has no labels (give --labels=FOLDER for a folder)")
    opened.append(source)
  if label_folders:
    raise cli.UsageError(f"--labels={label_folders[0]}: more --labels than folder --data sources")
  return opened


def _check_out(out: epath.Path, opened: Sequence, label_folders: Sequence[str]) -> None:
  """UsageError when --out is, holds or lies in an input or label folder (--overwrite would
  delete it; a segmenter written among the images would be read back as one)."""
  folders = [getattr(source, "root", "") for source in opened] + list(label_folders)
  for folder in filter(None, folders):
    if storage.is_within(out, folder) or storage.is_within(folder, out):
      raise cli.UsageError(f"--out={out} overlaps the input folder {folder}; write the "
                           "segmenter elsewhere")


def _is_folder_spec(spec: str) -> bool:
  """Whether `open_source` opens `spec` as a folder (its one rule)."""
  return spec.partition(":")[0] not in ("tfds", "toy_streets") or epath.Path(spec).is_dir()


def _pairs(flag_value: str, source, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """The first `count` (image, label) pairs of `source`; UsageError naming an unreadable file."""
  images, labels = [], []
  for index in range(min(count, len(source))):
    record = source[index]
    if sources.is_bad(record):
      raise cli.UsageError(f"--data={flag_value}: cannot read {record['relpath']} "
                           f"({record[sources.ERROR_KEY]}); fix or remove it and rerun.")
    if "label" not in record:
      raise cli.UsageError(f"--data={flag_value}: {record['relpath']} has no label map")
    images.append(record["image"])
    labels.append(record["label"])
  return images, labels


def _val_source(spec: str, source):
  """The val split of a toy_streets or tfds `source`, or None (folders have none)."""
  if isinstance(source, sources.ToyStreetsSource):
    return sources.ToyStreetsSource(source.style, "val", source.height, source.width)
  if isinstance(source, sources.TfdsSource) and source.split != "validation":
    try:
      return sources.open_source(f"tfds:{spec.split(':')[1]}:validation")
    except (FileNotFoundError, ValueError):
      return None
  return None


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.train_segmenter`: `argv` as sys.argv; returns the exit status."""
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments {arguments[1:]}")
  height, width = cli.parse_size("size", _SIZE.value)
  for name, flag in (("num_images", _NUM_IMAGES), ("steps", _STEPS), ("batch_size", _BATCH_SIZE)):
    if flag.value < 1:
      raise cli.UsageError(f"--{name}={flag.value}: expected a positive integer")
  out = epath.Path(_OUT.value)
  opened = _open_all(_DATA.value, _LABELS.value)
  _check_out(out, opened, _LABELS.value)
  if out.exists() and not _OVERWRITE.value:
    raise cli.UsageError(f"--out={out} already exists; choose another folder or pass --overwrite")
  images, labels = [], []
  for spec, source in zip(_DATA.value, opened):
    source_images, source_labels = _pairs(spec, source, _NUM_IMAGES.value)
    images += source_images
    labels += source_labels
  num_classes = len(toy_streets.CLASS_NAMES)
  logging.info("training a U-Net on %d images at %dx%d, %d steps", len(images), height, width,
               _STEPS.value)
  try:
    segmenter = segmenter_lib.train_segmenter(
        images, labels, num_classes, steps=_STEPS.value, batch_size=_BATCH_SIZE.value,
        image_size=(height, width), seed=_SEED.value, progress=True)
  except segmenter_lib.InvalidLabelsError as e:
    raise cli.UsageError(f"--data: {e}") from e
  temporary = epath.Path(str(out) + storage.TEMPORARY_SUFFIX)
  try:
    if temporary.exists():
      shutil.rmtree(temporary) if storage.is_local(temporary) else temporary.rmtree()
    segmenter.save(temporary)
    if out.exists():
      shutil.rmtree(out) if storage.is_local(out) else out.rmtree()
    temporary.rename(out)
  except OSError as e:
    raise cli.RunError(f"--out={out}: cannot write the segmenter: {e}") from e
  print(f"wrote {out} ({len(images)} training images, {_STEPS.value} steps, {height}x{width})")
  if _VAL_IMAGES.value:
    for spec, source in zip(_DATA.value, opened):
      val = _val_source(spec, source)
      if val is None:
        continue
      val_images, val_labels = _pairs(spec, val, _VAL_IMAGES.value)
      val_images = [segmenter_lib.resize_image(image, height, width) for image in val_images]
      val_labels = [segmenter_lib.resize_labels(label, height, width) for label in val_labels]
      predicted = segmenter_lib.segment_all(segmenter, val_images)
      scores = semantic.SemanticConsistencyEvaluator(val_labels).run(predicted)
      print(f"  {spec} val ({len(val_images)} images): pixel accuracy "
            f"{scores['pixel_accuracy']:.3f}, mIoU {scores['mIoU']:.3f}")
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
