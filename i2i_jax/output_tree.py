"""The OUTPUT tree of a translated data set: a drop-in replacement of the input.

  OUTPUT/images/<relpath>  every input image translated, at the input's size, under
                           its relative path (extension changed to the output format
                           unless it already is one of that format's)
  OUTPUT/labels/<relpath>  the labels: copies of the label files (copy-on-write
                           clones where the file system can; hard links only when
                           asked for); tfds/toy_streets labels written as PNG
  OUTPUT/manifest.json     checkpoint, config, settings, status, counts, failures,
                           time and the list of finished images
  OUTPUT/translated.log    one line per image translated, appended as it is written

With several processes (multi-host), process i of n writes `manifest.i-of-n.json` /
`translated.i-of-n.log`.

Inputs are never written: OUTPUT must lie outside the input and label folders,
and they outside OUTPUT/images and OUTPUT/labels, whatever the flags (an output
inside the input would also be read back as input on the next run). Every file is
written under a temporary name and renamed (`storage.atomic_write`), so an output
that exists is complete. OUTPUT may be any `etils.epath` path (gs://...).
"""

import dataclasses
import fcntl
import functools
import io
import json
import os
import shutil
import threading
from collections.abc import Callable
from typing import Any, IO

from etils import epath
import numpy as np
from PIL import Image

from i2i_jax import codecs
from i2i_jax import storage
from i2i_jax.data import sources

FORMAT_EXTENSIONS = {"png": (".png",), "jpg": (".jpg", ".jpeg")}
# Linux's ioctl that makes a file share another's blocks copy-on-write (btrfs,
# XFS, ...): a copy that costs no space and no time.
_FICLONE = 0x40049409


@dataclasses.dataclass(frozen=True)
class Settings:
  """What, besides the checkpoint, decides the content of an output file."""
  format: str = "png"
  quality: int = 95  # jpg only
  png_compress_level: int = 1  # png only: lossless either way, 1 (fpng) is fastest
  resize: tuple[int, int] | None = None  # (H, W) to translate at; None: own size
  compute_dtype: str = "float32"


class OutputConflictError(ValueError):
  """OUTPUT overlaps the inputs, holds results of another checkpoint or settings, or
  two inputs share an output."""


def encoder(settings: Settings) -> Callable[[np.ndarray], bytes]:
  """The function from an [H, W, 3] uint8 translation to its output file's bytes.

  A partial of `codecs.encode`, which pickles by reference to a module that imports
  no JAX or grain: a spawned worker process running it starts in ~0.3 s of CPU, where
  importing this module would cost ~2 s (and ~300 MB) per worker.
  """
  return functools.partial(codecs.encode, image_format=settings.format,
                           png_compress_level=settings.png_compress_level,
                           quality=settings.quality)


def at_input_size(record: dict[str, Any], translated: np.ndarray) -> np.ndarray:
  """[h', w', 3] uint8 `translated` resized (bicubic) to `record["image_size"]` (h, w)."""
  height, width = record["image_size"]
  if translated.shape[:2] == (height, width):
    return translated
  return np.asarray(Image.fromarray(translated).resize((width, height), Image.BICUBIC))


def output_relpath(relpath: str, image_format: str) -> str:
  """`relpath` with its extension changed to `image_format`'s (kept if already one)."""
  stem, extension = os.path.splitext(relpath)
  extensions = FORMAT_EXTENSIONS[image_format]
  return relpath if extension.lower() in extensions else stem + extensions[0]


def file_names(process_index: int, process_count: int) -> tuple[str, str]:
  """(manifest, journal) file names of one process."""
  if process_count == 1:
    return "manifest.json", "translated.log"
  part = f"{process_index:05d}-of-{process_count:05d}"
  return f"manifest.{part}.json", f"translated.{part}.log"


def check_location(source, output: epath.PathLike):
  """Refuses an OUTPUT that could write over, link to, or read back an input file.

  OUTPUT must not lie inside (or be) the image or label folder of a folder
  source (a rerun would translate its own outputs), and neither folder may lie
  inside OUTPUT/images or OUTPUT/labels (outputs would replace inputs). Paths are
  compared after resolving symbolic links. No flag turns this off.

  Raises:
    OutputConflictError: naming both folders.
  """
  if not isinstance(source, sources.FolderSource):
    return
  output = epath.Path(output)
  inputs = {"input": source.root, "label": source.label_root}
  for kind, folder in inputs.items():
    if not folder:
      continue
    if storage.is_within(output, folder):
      raise OutputConflictError(
          f"--output={output} is inside the {kind} folder {folder}: translations would "
          f"be read back as inputs and could replace them; choose an --output outside "
          f"{folder}")
    for name in ("images", "labels"):
      if storage.is_within(folder, output / name):
        raise OutputConflictError(
            f"the {kind} folder {folder} is OUTPUT/{name} of --output={output}, where "
            "outputs are written: they would replace the inputs; choose another --output "
            "(inputs are never overwritten, whatever the flags)")


def check_output_names(source, settings: Settings):
  """Refuses inputs that differ only by extension: they would share one output file."""
  relpaths = getattr(source, "files", None)  # folder sources list their files
  if relpaths is None:
    return
  seen: dict[str, str] = {}
  for relpath in relpaths:
    name = output_relpath(relpath, settings.format)
    if name in seen:
      raise OutputConflictError(f"{source}: inputs {[seen[name], relpath]} would all be "
                                f"written to {name}")
    seen[name] = relpath


def check_previous_results(output: epath.PathLike, identity: dict[str, Any]):
  """Refuses to mix results: OUTPUT's manifests must name the same checkpoint/settings."""
  output = epath.Path(output)
  manifests = sorted(path for path in output.iterdir()
                     if path.name.startswith("manifest.") and path.name.endswith(".json"))
  for path in manifests:
    previous = json.loads(path.read_text())
    found = {key: previous.get(key) for key in identity}
    if found != identity:
      differences = ", ".join(f"{key}: {found[key]} there, {identity[key]} now"
                              for key in identity if found[key] != identity[key])
      raise OutputConflictError(
          f"{path} was written with another checkpoint or settings ({differences}); "
          "choose another --output or pass --overwrite to retranslate everything")
  image_root = output / "images"
  if not manifests and image_root.is_dir() and any(image_root.iterdir()):
    raise OutputConflictError(
        f"{image_root} holds files but {output} has no manifest.json, so their checkpoint "
        "is unknown; choose another --output or pass --overwrite")


def write_manifest(path: epath.PathLike, manifest: dict[str, Any]):
  with storage.atomic_write(path, "w") as f:
    json.dump(manifest, f, indent=1)


def _copy_into(source_path: str, destination: IO[bytes]):
  """Copies a local file into an open file: a copy-on-write clone where possible.

  Either way the copy is a file of its own: changing it never changes the source
  (unlike a hard link).
  """
  with open(source_path, "rb") as source_file:
    try:
      fcntl.ioctl(destination.fileno(), _FICLONE, source_file.fileno())
      return
    except (OSError, io.UnsupportedOperation):  # not here (ext4, tmpfs, gs://...)
      pass
    shutil.copyfileobj(source_file, destination, length=1 << 20)


class OutputTree:
  """Writes one process's translations and labels under OUTPUT and journals them.

  Attributes:
    image_root, label_root: OUTPUT/images and OUTPUT/labels.
  """

  def __init__(self, output: epath.PathLike, source, settings: Settings, *,
               journal_name: str, process_index: int, overwrite: bool, link_labels: bool):
    output = epath.Path(output)
    if link_labels and not storage.is_local(output):
      raise OutputConflictError(f"--link_labels needs a local --output, not {output}")
    self.image_root, self.label_root = output / "images", output / "labels"
    self.source, self.settings = source, settings
    self.overwrite, self.link_labels = overwrite, link_labels
    # Temporary files carry the process index, so each process can delete the
    # leftovers of its own killed run without touching another's files in flight.
    self._tag = f"p{process_index}"
    self._journal = (output / journal_name).open("w" if overwrite else "a")
    self._journal_lock = threading.Lock()

  def close(self):
    self._journal.close()

  def image_path(self, relpath: str) -> epath.Path:
    return self.image_root / output_relpath(relpath, self.settings.format)

  def is_done(self, relpath: str) -> bool:
    return not self.overwrite and self.image_path(relpath).exists()

  def remove_partials(self):
    """Deletes this process's temporary files left by a killed run."""
    suffix = f".{self._tag}{storage.TEMPORARY_SUFFIX}"
    for root in (self.image_root, self.label_root):
      for directory, _, names in root.walk() if root.exists() else ():
        for name in names:
          if name.startswith(".") and name.endswith(suffix):
            (epath.Path(directory) / name).unlink()

  def _label_path(self, record: dict[str, Any]) -> tuple[epath.Path, str | None]:
    """(where the label of `record` goes, the label file it copies or None)."""
    if isinstance(self.source, sources.FolderSource):
      label_file = self.source.label_path(record["relpath"])
      if label_file is not None:
        return self.label_root / os.path.relpath(label_file, self.source.label_root), label_file
    return self.label_root / output_relpath(record["relpath"], "png"), None

  def _write_label(self, record: dict[str, Any]):
    path, label_file = self._label_path(record)
    if path.exists() and not self.overwrite:
      return
    if label_file is not None and self.link_labels:
      path.parent.mkdir(parents=True, exist_ok=True)
      temporary = storage.temporary_path(path, self._tag)
      os.link(label_file, temporary)
      temporary.replace(path)
      return
    with storage.atomic_write(path, tag=self._tag) as f:
      if label_file is None:
        Image.fromarray(record["label"], mode="L").save(f, format="PNG")
      else:
        _copy_into(label_file, f)

  def write(self, record: dict[str, Any], translated: np.ndarray | bytes):
    """Writes the label (first) and the translation of one record, then journals it.

    The label goes first so that an existing image implies its label exists.

    Args:
      record: a source record with "relpath", "image_size" (the input's (h, w)) and,
        when the source has labels, "label".
      translated: [h', w', 3] uint8, resized back to "image_size" if it differs, or
        the bytes `encoder` made of `at_input_size` of it (in a worker process).
    """
    if "label" in record:
      self._write_label(record)
    if not isinstance(translated, bytes):
      translated = encoder(self.settings)(at_input_size(record, translated))
    with storage.atomic_write(self.image_path(record["relpath"]), tag=self._tag) as f:
      f.write(translated)
    with self._journal_lock:
      self._journal.write(record["relpath"] + "\n")
      self._journal.flush()
