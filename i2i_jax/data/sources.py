"""Random-access image sources named by a string in the config.

  folder:PATH              png/jpg files under PATH, recursive, sorted.
  tfds:NAME[:SPLIT]        a TFDS data set stored as ArrayRecord (SPLIT defaults
                           to "train"); NAME may carry a config, "cityscapes/fine".
  toy_streets:STYLE[:SPLIT]  the procedural street scenes, STYLE "sim" or "real",
                           SPLIT "train" (default) or "val".
  prepared:DIR             images (and labels) written by `python -m i2i_jax.prepare`,
                           the leading deterministic preprocessing ops already
                           applied (see `prepared.py`); the pipeline skips them.

Every source has `len()` and `[index]`, which returns a record

  {"image": [H, W, 3] uint8, "label": [H, W] uint8 (when the source has labels),
   "relpath": str}

`relpath` names the record relative to the source root ("a/b/img.png"); for
TFDS and toy_streets it is the example's id. Images are decoded lazily, in
`[index]`: a file that cannot be read (truncated, zero bytes, not an image, or
pixels with no 8-bit meaning, see `decode_image`) or a label whose size differs
from its image gives `{"relpath": ..., "error": why}` instead, which the
pipeline skips and counts (see `pipeline.py`).
"""

import io
import os
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image

from i2i_jax.data import files
from i2i_jax.data import prepared
from i2i_jax.data import toy_streets

ERROR_KEY = "error"


def is_bad(record: dict[str, Any]) -> bool:
  """Whether a record is a placeholder for an input that could not be read."""
  return ERROR_KEY in record


def bad_record(relpath: str, why: str) -> dict[str, Any]:
  """The placeholder for input `relpath` that cannot be used, and why."""
  return {"relpath": relpath, ERROR_KEY: why}


def _is_16_bit_grey(image: Image.Image) -> bool:
  # 16-bit greyscale PNGs open as I;16, or as I in older Pillow.
  return image.mode.startswith("I;16") or (image.mode == "I" and image.format == "PNG")


def _decode_fast(data: bytes) -> np.ndarray | None:
  """The pixels of an 8-bit RGB(A) PNG or colour JPEG file; None for anything else.

  libspng and libjpeg-turbo (imagecodecs) give exactly Pillow's pixels for
  these (benchmarks/codecs.py checks) for ~0.75x Pillow's CPU for PNG and ~0.5x
  for JPEG, and release the GIL, so decoding threads run in parallel. Pillow
  reads the header (and refuses decompression bombs). Every other mode, and a
  file that either refuses, is left to Pillow (None), whose errors name the problem.
  """
  try:
    with Image.open(io.BytesIO(data)) as header:
      image_format, mode, size = header.format, header.mode, header.size
    if image_format == "PNG" and mode in ("RGB", "RGBA") and data[24] == 8:
      pixels = imagecodecs.spng_decode(data)  # data[24]: IHDR's bit depth
    elif image_format == "JPEG" and mode == "RGB":
      pixels = imagecodecs.jpeg8_decode(data)
    else:
      return None
  except Exception:  # pylint: disable=broad-except  (Pillow names the problem)
    return None
  width, height = size
  if pixels.dtype != np.uint8 or pixels.shape not in ((height, width, 3), (height, width, 4)):
    return None
  # Alpha is dropped, as by Pillow's convert("RGB").
  return np.ascontiguousarray(pixels[..., :3]) if pixels.shape[-1] == 4 else pixels


def decode_image(data_or_path) -> np.ndarray:
  """Decodes an image file (path, encoded bytes or io.BytesIO) to [H, W, 3] uint8 RGB.

  Every mode a PNG or JPEG holds becomes what it shows. 16-bit samples keep
  their top 8 bits (v >> 8), as Pillow does for 16-bit RGB(A) PNGs; Pillow's
  own conversion would clip 16-bit grey to white. Alpha is dropped, as the
  reference's `convert("RGB")` drops it; palette, 1-bit, grey, CMYK and YCbCr
  are converted by Pillow. 8-bit RGB(A) PNGs and colour JPEGs, nearly every
  data set's images, take faster decoders with the same pixels (`_decode_fast`).

  Raises:
    ValueError: naming the mode, for 32-bit integer or float pixels (a TIFF
      named .png, say): they have no agreed 8-bit range, and Pillow would
      clip them to white or black.
  """
  if isinstance(data_or_path, (str, os.PathLike)):
    with open(data_or_path, "rb") as f:
      pixels = _decode_fast(f.read())
  elif isinstance(data_or_path, io.BytesIO):
    pixels = _decode_fast(data_or_path.getvalue())
  elif isinstance(data_or_path, bytes):
    pixels = _decode_fast(data_or_path)
    data_or_path = io.BytesIO(data_or_path)
  else:  # another file object: Pillow reads it
    pixels = None
  if pixels is not None:
    return pixels
  with Image.open(data_or_path) as image:
    if _is_16_bit_grey(image):
      grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
      raise ValueError(f"image mode {image.mode} ({image.format} with 32-bit "
                       f"{'integer' if image.mode == 'I' else 'float'} pixels) "
                       "has no 8-bit range; save it as an 8- or 16-bit PNG")
    if image.mode == "P" and "transparency" in image.info:
      image = image.convert("RGBA")  # what Pillow asks for before dropping alpha
    return np.asarray(image.convert("RGB"))


def decode_label(data_or_path) -> np.ndarray:
  """Decodes a single-channel label PNG (class ids) to [H, W] uint8."""
  with Image.open(data_or_path) as label:
    if label.mode not in ("L", "P", "I", "I;16"):
      raise ValueError(
          f"label has mode {label.mode}; expected one channel of class ids "
          "(L/P/I), not a colour-coded map")
    array = np.asarray(label)
  if array.ndim == 3:  # tfds stores labels as [H, W, 1]
    array = array[..., 0]
  if array.max(initial=0) > 255:
    raise ValueError(f"label has class id {array.max()} > 255")
  return array.astype(np.uint8)


def _read(relpath: str, image_source, label_source=None) -> dict[str, Any]:
  """Decodes one record; a bad input becomes {"relpath", "error"}."""
  try:
    record = {"image": decode_image(image_source), "relpath": relpath}
    if label_source is not None:
      label = decode_label(label_source)
      if label.shape != record["image"].shape[:2]:
        raise ValueError(f"label is {label.shape[1]}x{label.shape[0]} but the "
                         f"image is {record['image'].shape[1]}x"
                         f"{record['image'].shape[0]} (WxH)")
      record["label"] = label
    return record
  except Exception as e:  # pylint: disable=broad-except
    # One bad file among 100k must not stop training: PIL raises OSError,
    # SyntaxError, ValueError, DecompressionBombError... for broken files.
    return bad_record(relpath, f"{type(e).__name__}: {e}")


class FolderSource:
  """The png/jpg files under a folder, recursive, in sorted order.

  Attributes:
    root: the image folder.
    label_root: the label folder ("" for none). The label of "a/b/x.jpg" is
      "a/b/x.<any image extension>" under label_root (see `files.LabelFolder`).
    files: the images' paths relative to root, sorted ("a/b/x.jpg", ...).
  """

  def __init__(self, root: str, label_root: str = ""):
    if not os.path.isdir(root):
      raise FileNotFoundError(f"folder source: image folder {root!r} does not exist")
    if label_root and not os.path.isdir(label_root):
      raise FileNotFoundError(f"folder source: label folder {label_root!r} does not exist")
    self.root, self.label_root = root, label_root
    self.files = tuple(files.list_images(root))
    if not self.files:
      raise ValueError(f"folder source: no {'/'.join(files.IMAGE_EXTENSIONS)} files "
                       f"under {root!r}")
    self._labels = files.LabelFolder(label_root) if label_root else None

  @property
  def has_labels(self) -> bool:
    return bool(self.label_root)

  def __len__(self) -> int:
    return len(self.files)

  def label_path(self, relpath: str) -> str | None:
    """The label file of image `relpath`, or None if it has none."""
    return self._labels.path(relpath) if self._labels else None

  def __getitem__(self, index: int) -> dict[str, Any]:
    relpath = self.files[index]
    if not self.label_root:
      return _read(relpath, os.path.join(self.root, relpath))
    label = self.label_path(relpath)
    record = _read(relpath, os.path.join(self.root, relpath), label)
    if label is None and not is_bad(record):  # an unreadable image says so first
      return bad_record(relpath, f"no label for it under {self.label_root!r}")
    return record

  def __repr__(self) -> str:
    return f"FolderSource({self.root!r}, labels={self.label_root!r}, n={len(self)})"


class TfdsSource:
  """A TFDS split stored as ArrayRecord, read with random access (no TensorFlow).

  The data set needs an "image" feature, optionally "label" (a class-id image)
  and "file_name" (used as relpath). Images are decoded here, with PIL, so that
  a corrupt example is skipped rather than raised.
  """

  def __init__(self, name: str, split: str = "train", data_dir: str | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    # Importing registers our builders (gta5, cityscapes, image_folder).
    from i2i_jax.data import tfds as _  # pylint: disable=g-import-not-at-top,unused-import
    self.name, self.split = name, split
    builder = tfds.builder(name, data_dir=data_dir)
    if split not in builder.info.splits:
      raise ValueError(f"tfds source: {name!r} has no split {split!r} in "
                       f"{builder.data_dir}; it has {list(builder.info.splits)}")
    features = builder.info.features
    self.has_labels = "label" in features
    decoders = {"image": tfds.decode.SkipDecoding()}
    if self.has_labels:
      decoders["label"] = tfds.decode.SkipDecoding()
    self._source = builder.as_data_source(split=split, decoders=decoders)
    if not len(self._source):
      raise ValueError(f"tfds source: split {split!r} of {name!r} is empty")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    example = self._source[index]
    relpath = example.get("file_name", b"")
    relpath = (relpath.decode() if isinstance(relpath, bytes) else relpath) or (
        f"{self.name}/{self.split}/{index}")
    return _read(relpath, io.BytesIO(example["image"]),
                 io.BytesIO(example["label"]) if self.has_labels else None)

  def __repr__(self) -> str:
    return f"TfdsSource({self.name!r}, {self.split!r}, n={len(self)})"


class ToyStreetsSource:
  """toy_streets scenes of one style, rendered on access."""

  has_labels = True

  def __init__(self, style: str, split: str = "train", height: int = 256,
               width: int = 512):
    self.style, self.split = style, split
    self.height, self.width = height, width
    self.seeds = toy_streets.split_seeds(style, split)

  def __len__(self) -> int:
    return len(self.seeds)

  def __getitem__(self, index: int) -> dict[str, Any]:
    image, label = toy_streets.render(self.seeds[index], self.style,
                                      self.height, self.width)
    return {"image": image, "label": label,
            "relpath": f"{self.split}/{index:05d}.png"}

  def __repr__(self) -> str:
    return f"ToyStreetsSource({self.style!r}, {self.split!r}, n={len(self)})"


def canonical_spec(spec: str) -> str:
  """`spec` written so that two specs of the same data are equal strings.

  Folder paths are resolved (symlinks, "..", a trailing "/"), default splits
  spelled out: "folder:data/./a/" -> "folder:/abs/data/a",
  "toy_streets:sim" -> "toy_streets:sim:train". Unknown specs come back as
  they are (`open_source` names them).
  """
  kind, _, rest = spec.partition(":")
  if kind in ("folder", "prepared") and rest:
    return f"{kind}:{os.path.realpath(rest)}"
  if kind in ("tfds", "toy_streets") and rest:
    name, _, split = rest.partition(":")
    return f"{kind}:{name}:{split or 'train'}"
  return spec


_SOURCE_KINDS = ("folder", "tfds", "toy_streets", "prepared")


def open_source(spec: str, *, labels: str = "", tfds_data_dir: str | None = None):
  """Opens the source named by `spec` (see the module docstring).

  A bare path is a folder: any spec whose part before the first ":" is not a
  source kind (folder, tfds, toy_streets, prepared), or that names an existing
  directory, opens as "folder:SPEC". Every command that takes a source relies
  on this one rule.

  Args:
    spec: "folder:PATH", "tfds:NAME[:SPLIT]", "toy_streets:STYLE[:SPLIT]",
      "prepared:DIR" or PATH.
    labels: for folder sources, a folder of label maps matched by relative
      path and stem; "" for none.
    tfds_data_dir: where tfds: sources are stored (None: TFDS's default,
      $TFDS_DATA_DIR or ~/tensorflow_datasets).

  Returns:
    A FolderSource, TfdsSource, ToyStreetsSource or prepared.PreparedSource.
  """
  kind, _, rest = spec.partition(":")
  if kind not in _SOURCE_KINDS or os.path.isdir(spec):
    return FolderSource(spec, labels)
  if kind == "folder" and rest:
    return FolderSource(rest, labels)
  if labels:
    raise ValueError(f"source {spec!r}: a label folder ({labels!r}) only goes "
                     "with folder: sources; tfds/toy_streets/prepared carry their labels")
  if kind == "tfds" and rest:
    name, _, split = rest.partition(":")
    return TfdsSource(name, split or "train", data_dir=tfds_data_dir)
  if kind == "toy_streets" and rest:
    style, _, split = rest.partition(":")
    return ToyStreetsSource(style, split or "train")
  if kind == "prepared" and rest:
    return prepared.PreparedSource(rest)
  raise ValueError(f"unknown source {spec!r}; expected folder:PATH, "
                   "tfds:NAME[:SPLIT], toy_streets:sim|real[:SPLIT], prepared:DIR "
                   "or a folder path")
