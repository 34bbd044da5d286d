r"""Translates a whole data set with a trained generator: `python -m i2i_jax.translate`.

  python -m i2i_jax.translate --workdir=runs/gta2cityscapes \
      --input=folder:data/gta5/images --labels=data/gta5/labels --output=data/gta5_real

Output tree, a drop-in replacement of the input data set:

  OUTPUT/images/<relpath>  every input image translated, at the input's size, under
                           its relative path (extension changed to --format unless
                           it already is one of that format's)
  OUTPUT/labels/<relpath>  the labels: copies of the label files (copy-on-write
                           clones where the file system can; hard links only with
                           --link_labels); tfds/toy_streets labels written as PNG
  OUTPUT/manifest.json     checkpoint, config, settings, counts, failures, time and
                           the list of finished images
  OUTPUT/translated.log    one line per image translated, appended as it is written

With several processes (multi-host), process i of n translates every n-th file of
the sorted list and writes `manifest.i-of-n.json` / `translated.i-of-n.log`.

Inputs are never written: OUTPUT must lie outside the input and label folders,
and they outside OUTPUT/images and OUTPUT/labels, whatever the flags (an output
inside the input would also be read back as input on the next run). Every file is
written under a temporary name and renamed, so an output that exists is complete;
a rerun skips them and translates the rest. The manifest pins the checkpoint and
the settings: rerunning into the same OUTPUT with another checkpoint (or format,
size, dtype) is refused unless --overwrite.

The manifest's "status" is "complete" (every image written), "incomplete" (some
inputs could not be read; each is listed under "failed" with the reason),
"interrupted" (stopped by a signal; rerun to finish) or "failed" (stopped by an
error, named under "error": e.g. a full disk).

Exit status: 0 when every image was translated, 1 when some input could not be read,
2 for usage errors (one line names the flag, path or conflict), 3 when an error
stopped the run (an unreadable checkpoint, an output that cannot be written), 130
when stopped by Ctrl-C and 143 by SIGTERM (both after finishing the images in
flight; rerun to complete).

The Python API, used by this CLI, the evaluation and the notebooks:

  translator = Translator("runs/gta2cityscapes", compute_dtype="bfloat16")
  real_looking = translator.translate(images)   # [B, H, W, 3] uint8 -> uint8
"""

import collections
import concurrent.futures
import dataclasses
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from typing import Any

from absl import flags
from absl import logging
import grain
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec
from PIL import Image
import tqdm

from i2i_jax import checkpoint as checkpoint_lib
from i2i_jax import cli
from i2i_jax import sharding
from i2i_jax.data import sources

# The generator halves H and W twice.
GENERATOR_STRIDE = 4
FORMAT_EXTENSIONS = {"png": (".png",), "jpg": (".jpg", ".jpeg")}
PARTIAL_SUFFIX = ".partial"
# Linux's ioctl that makes a file share another's blocks copy-on-write (btrfs,
# XFS, ...): a copy that costs no space and no time.
_FICLONE = 0x40049409


def _to_uint8(images: jax.Array) -> jax.Array:
  """[-1, 1] float -> [0, 255] uint8, the inverse of `value_range(-1,1)`."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(
      jnp.uint8)


def _forward(module, variables, images: jax.Array) -> jax.Array:
  """images: [B, H, W, 3] uint8 or float in [-1, 1] -> [B, H, W, 3] uint8."""
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 127.5 - 1.0
  return _to_uint8(module.apply(variables, images.astype(jnp.float32)))


class PendingTranslation:
  """A batch dispatched to the devices; `result()` waits for it and crops it."""

  def __init__(self, translated: jax.Array, sizes: Sequence[tuple[int, int]]):
    self._translated = translated
    self._sizes = tuple(sizes)

  @property
  def array(self) -> jax.Array:
    """The padded batch on the devices: [batch_size, Hb, Wb, 3] uint8, split over "data"."""
    return self._translated

  def result(self) -> list[np.ndarray]:
    """The translations at the inputs' own sizes: a list of [h, w, 3] uint8."""
    translated = np.asarray(self._translated)
    return [translated[i, :h, :w] for i, (h, w) in enumerate(self._sizes)]


class Translator:
  """A trained generator applied in fixed-shape, device-sharded batches.

  Each image is padded by reflection (bottom and right) up to the next multiple
  of `bucket_multiple` in H and W, images of one padded shape are batched, the
  batch is filled up to `batch_size` and split over all local devices, and the
  outputs are cropped back. One executable is compiled per padded shape (and
  input dtype), so a data set of one image size compiles once.

  Attributes:
    generator: the loaded checkpoint (config, step, module, variables, path).
    batch_size: images per device call, a multiple of the device count.
    bucket_multiple: H and W are padded to multiples of this (a multiple of 4;
      larger values mean fewer compiled shapes and more padding).
    mesh: the 1-D ("data",) mesh over the devices.
  """

  def __init__(self, checkpoint: str | os.PathLike | checkpoint_lib.LoadedGenerator, *,
               step: int | None = None, compute_dtype: str | None = None,
               batch_size: int = 8, bucket_multiple: int = 64,
               devices: Sequence[jax.Device] | None = None):
    """Loads the generator and replicates its variables on the devices.

    Args:
      checkpoint: a training workdir, its `checkpoints` directory, or an already
        loaded generator (then `step` and `compute_dtype` must be None).
      step: the checkpoint step; the latest by default.
      compute_dtype: "float32" or "bfloat16"; the run's `config.compute_dtype`
        by default.
      batch_size: images per device call; must be a multiple of the number of
        local devices.
      bucket_multiple: padding granularity of H and W, a multiple of 4.
      devices: where batches are split (default: `jax.local_devices()`; each
        process of a multi-host job translates its own files on its own devices).
    """
    if isinstance(checkpoint, checkpoint_lib.LoadedGenerator):
      if step is not None or compute_dtype is not None:
        raise ValueError("Translator: step and compute_dtype apply when loading; pass them "
                         "to checkpoint.load_generator instead")
      self.generator = checkpoint
    else:
      self.generator = checkpoint_lib.load_generator(checkpoint, step, compute_dtype)
    devices = list(jax.local_devices() if devices is None else devices)
    if batch_size < 1 or batch_size % len(devices):
      raise ValueError(f"Translator: batch_size={batch_size} must be a positive multiple "
                       f"of the {len(devices)} devices")
    if bucket_multiple < 1 or bucket_multiple % GENERATOR_STRIDE:
      raise ValueError(f"Translator: bucket_multiple={bucket_multiple} must be a positive "
                       f"multiple of the generator's stride {GENERATOR_STRIDE}")
    self.batch_size = batch_size
    self.bucket_multiple = bucket_multiple
    self.mesh = sharding.make_mesh(devices)
    self._batch_sharding = sharding.batch_sharding(self.mesh)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    self._variables = jax.device_put(self.generator.variables, replicated)
    self._jitted = jax.jit(
        lambda variables, images: _forward(self.generator.module, variables, images),
        in_shardings=(replicated, self._batch_sharding), out_shardings=self._batch_sharding)
    self._compiled: dict[tuple[tuple[int, ...], str], Any] = {}

  @property
  def num_compilations(self) -> int:
    """How many executables were compiled (one per padded batch shape and dtype)."""
    return len(self._compiled)

  def bucket_shape(self, height: int, width: int) -> tuple[int, int]:
    """The padded (H, W) an image of size (height, width) is translated at."""
    multiple = self.bucket_multiple
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple

  def pad_to_bucket(self, image: np.ndarray) -> np.ndarray:
    """Reflection-pads [h, w, 3] at the bottom and right to [*bucket_shape(h, w), 3]."""
    height, width = image.shape[:2]
    padded_height, padded_width = self.bucket_shape(height, width)
    if (padded_height, padded_width) == (height, width):
      return image
    return np.pad(image, ((0, padded_height - height), (0, padded_width - width), (0, 0)),
                  mode="reflect")

  def start(self, padded_images: Sequence[np.ndarray],
            sizes: Sequence[tuple[int, int]]) -> PendingTranslation:
    """Dispatches up to `batch_size` bucket-shaped images without waiting.

    Args:
      padded_images: `pad_to_bucket` outputs of one shape, [Hb, Wb, 3] uint8 (or
        float in [-1, 1]).
      sizes: each image's (h, w) before padding, to crop the outputs to.
    """
    if not 0 < len(padded_images) <= self.batch_size or len(sizes) != len(padded_images):
      raise ValueError(f"Translator.start: got {len(padded_images)} images and {len(sizes)} "
                       f"sizes; expected 1..{self.batch_size} of each")
    batch = np.stack(padded_images)
    if batch.ndim != 4 or batch.shape[-1] != 3:
      raise ValueError(f"Translator.start: images stack to {batch.shape}; expected "
                       "[B, H, W, 3]")
    if batch.shape[1:3] != self.bucket_shape(*batch.shape[1:3]):
      raise ValueError(f"Translator.start: images are {batch.shape[1:3]}, not a bucket shape "
                       f"(multiples of {self.bucket_multiple}); use pad_to_bucket")
    if batch.dtype != np.uint8:
      batch = batch.astype(np.float32)
    if len(batch) < self.batch_size:
      filler = np.zeros((self.batch_size - len(batch), *batch.shape[1:]), batch.dtype)
      batch = np.concatenate([batch, filler])
    key = (batch.shape, batch.dtype.name)
    if key not in self._compiled:
      abstract = jax.ShapeDtypeStruct(batch.shape, batch.dtype, sharding=self._batch_sharding)
      self._compiled[key] = self._jitted.lower(self._variables, abstract).compile()
    images = jax.device_put(batch, self._batch_sharding)
    return PendingTranslation(self._compiled[key](self._variables, images), sizes)

  def translate_list(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Translates images of any sizes: each [h, w, 3] uint8 or float in [-1, 1] -> uint8."""
    by_bucket = collections.defaultdict(list)
    for index, image in enumerate(images):
      image = np.asarray(image)
      if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Translator: image {index} has shape {image.shape}; expected "
                         "[H, W, 3]")
      by_bucket[(image.shape[:2], image.dtype.name != "uint8")].append(index)
    pending = []
    for indices in by_bucket.values():
      for start in range(0, len(indices), self.batch_size):
        chunk = indices[start:start + self.batch_size]
        padded = [self.pad_to_bucket(np.asarray(images[i])) for i in chunk]
        sizes = [np.asarray(images[i]).shape[:2] for i in chunk]
        pending.append((chunk, self.start(padded, sizes)))
    translated: list[np.ndarray] = [np.empty(0)] * len(images)
    for chunk, batch in pending:
      for index, output in zip(chunk, batch.result()):
        translated[index] = output
    return translated

  def translate(self, images: np.ndarray | jax.Array) -> np.ndarray:
    """images: [B, H, W, 3] uint8 or float in [-1, 1] -> [B, H, W, 3] uint8 (any B, H, W)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"Translator.translate: images have shape {images.shape}; expected "
                       "[B, H, W, 3]")
    if not len(images):
      return np.zeros(images.shape, np.uint8)
    return np.stack(self.translate_list(list(images)))


@dataclasses.dataclass(frozen=True)
class Settings:
  """What, besides the checkpoint, decides the content of an output file."""
  format: str = "png"
  quality: int = 95  # jpg only
  png_compress_level: int = 1  # png only: lossless either way, 1 is fastest
  resize: tuple[int, int] | None = None  # (H, W) to translate at; None: own size
  compute_dtype: str = "float32"


def output_relpath(relpath: str, image_format: str) -> str:
  """`relpath` with its extension changed to `image_format`'s (kept if already one)."""
  stem, extension = os.path.splitext(relpath)
  extensions = FORMAT_EXTENSIONS[image_format]
  return relpath if extension.lower() in extensions else stem + extensions[0]


def _file_names(process_index: int, process_count: int) -> tuple[str, str]:
  """(manifest, journal) file names of one process."""
  if process_count == 1:
    return "manifest.json", "translated.log"
  part = f"{process_index:05d}-of-{process_count:05d}"
  return f"manifest.{part}.json", f"translated.{part}.log"


def _partial_path(path: str, process_index: int) -> str:
  directory, name = os.path.split(path)
  return os.path.join(directory, f".{name}.p{process_index}{PARTIAL_SUFFIX}")


def _write_json_atomic(path: str, content: dict[str, Any]):
  temporary = path + PARTIAL_SUFFIX
  with open(temporary, "w") as f:
    json.dump(content, f, indent=1)
  os.replace(temporary, path)


class OutputConflictError(ValueError):
  """OUTPUT overlaps the inputs, holds results of another checkpoint or settings, or
  two inputs share an output."""


def _real(path: str) -> str:
  return os.path.realpath(os.path.abspath(path))


def _is_within(path: str, root: str) -> bool:
  """Whether resolved `path` is `root` or lies under it (both resolved)."""
  return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def check_output_location(source, output: str):
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
  output_root = _real(output)
  written = {"OUTPUT/images": os.path.join(output_root, "images"),
             "OUTPUT/labels": os.path.join(output_root, "labels")}
  inputs = {"input": source.root, "label": source.label_root}
  for kind, folder in inputs.items():
    if not folder:
      continue
    folder_root = _real(folder)
    if _is_within(output_root, folder_root):
      raise OutputConflictError(
          f"--output={output} is inside the {kind} folder {folder}: translations would "
          f"be read back as inputs and could replace them; choose an --output outside "
          f"{folder}")
    for name, written_root in written.items():
      if _is_within(folder_root, written_root):
        raise OutputConflictError(
            f"the {kind} folder {folder} is {name} of --output={output}, where outputs "
            "are written: they would replace the inputs; choose another --output (inputs "
            "are never overwritten, whatever the flags)")


@dataclasses.dataclass
class Summary:
  """What one `translate_dataset` call did (its process's shard only).

  Attributes:
    failed: one {"relpath", "stage": "read" | "write", "error"} per image not written.
    interrupted: a stop was requested (a signal); rerunning finishes the rest.
    error: why the run stopped early, when an error stopped it (e.g. a full disk).
  """
  total: int = 0
  translated: int = 0
  skipped: int = 0
  failed: list[dict[str, str]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0
  interrupted: bool = False
  error: str | None = None

  @property
  def images_per_second(self) -> float:
    return self.translated / self.seconds if self.seconds else 0.0

  @property
  def status(self) -> str:
    """"failed", "interrupted", "incomplete" (unreadable inputs) or "complete"."""
    if self.error is not None:
      return "failed"
    if self.interrupted:
      return "interrupted"
    if self.failed or self.translated + self.skipped < self.total:
      return "incomplete"
    return "complete"

  def counts(self) -> dict[str, int]:
    return {"total": self.total, "translated": self.translated, "skipped": self.skipped,
            "failed": len(self.failed)}

  def __str__(self) -> str:
    text = (f"translated {self.translated}, skipped {self.skipped} (already done), failed "
            f"{len(self.failed)} of {self.total} in {self.seconds:.1f} s "
            f"({self.images_per_second:.2f} images/s)")
    if self.error is not None:
      text += f"; stopped by an error: {self.error}"
    elif self.interrupted:
      text += "; interrupted, rerun to finish"
    return text + "".join(f"\n  failed ({f['stage']}): {f['relpath']}: {f['error']}"
                          for f in self.failed)


class _Indexed:
  """`source[indices[i]]` as a random-access source of its own."""

  def __init__(self, source, indices: Sequence[int]):
    self._source, self._indices = source, list(indices)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self._source[self._indices[index]]


class _DatasetWriter:
  """Writes translations and labels under OUTPUT, atomically, and journals them."""

  def __init__(self, output: str, source, settings: Settings, process_index: int,
               journal_path: str, overwrite: bool, link_labels: bool):
    self.image_root = os.path.join(output, "images")
    self.label_root = os.path.join(output, "labels")
    self.source, self.settings = source, settings
    self.process_index, self.overwrite = process_index, overwrite
    self.link_labels = link_labels
    self._journal = open(journal_path, "w" if overwrite else "a", buffering=1)
    self._journal_lock = threading.Lock()

  def close(self):
    self._journal.close()

  def image_path(self, relpath: str) -> str:
    return os.path.join(self.image_root, output_relpath(relpath, self.settings.format))

  def is_done(self, relpath: str) -> bool:
    return not self.overwrite and os.path.exists(self.image_path(relpath))

  def remove_partials(self):
    """Deletes this process's temporary files left by a killed run."""
    suffix = f".p{self.process_index}{PARTIAL_SUFFIX}"
    for root in (self.image_root, self.label_root):
      for directory, _, names in os.walk(root):
        for name in names:
          if name.startswith(".") and name.endswith(suffix):
            os.remove(os.path.join(directory, name))

  def _atomic(self, path: str, write):
    """Calls write(temporary_path) and renames the result to `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = _partial_path(path, self.process_index)
    write(temporary)
    os.replace(temporary, path)

  def _write_label(self, record: dict[str, Any]):
    label_file = (self.source.label_path(record["relpath"])
                  if isinstance(self.source, sources.FolderSource) else None)
    if label_file is not None:
      path = os.path.join(self.label_root,
                          os.path.relpath(label_file, self.source.label_root))
    else:
      path = os.path.join(self.label_root, output_relpath(record["relpath"], "png"))
    if os.path.exists(path) and not self.overwrite:
      return

    def write(temporary):
      if label_file is None:
        Image.fromarray(record["label"], mode="L").save(temporary, format="PNG")
      elif self.link_labels:
        os.link(label_file, temporary)
      else:
        copy_file(label_file, temporary)

    self._atomic(path, write)

  def write(self, record: dict[str, Any], translated: np.ndarray):
    """Writes the label (first) and the translation of one record.

    The label goes first so that an existing image implies its label exists.
    """
    if "label" in record:
      self._write_label(record)
    height, width = record["image_size"]
    if translated.shape[:2] != (height, width):
      translated = np.asarray(Image.fromarray(translated).resize((width, height),
                                                                 Image.BICUBIC))
    settings = self.settings
    if settings.format == "png":
      options = {"format": "PNG", "compress_level": settings.png_compress_level}
    else:
      options = {"format": "JPEG", "quality": settings.quality}
    self._atomic(self.image_path(record["relpath"]),
                 lambda temporary: Image.fromarray(translated).save(temporary, **options))
    with self._journal_lock:
      self._journal.write(record["relpath"] + "\n")


def copy_file(source_path: str, destination: str):
  """Copies a file; a copy-on-write clone where the file system can make one.

  Either way the copy is a file of its own: changing it never changes the source
  (unlike a hard link).
  """
  with open(source_path, "rb") as source_file, open(destination, "wb") as destination_file:
    try:
      fcntl.ioctl(destination_file.fileno(), _FICLONE, source_file.fileno())
      return
    except OSError:  # not supported here (ext4, tmpfs, another file system...)
      pass
    shutil.copyfileobj(source_file, destination_file, length=1 << 20)


def _check_output(output: str, identity: dict[str, Any], overwrite: bool):
  """Refuses to mix results: OUTPUT's manifests must name the same checkpoint/settings."""
  if overwrite:
    return
  manifests = sorted(name for name in os.listdir(output)
                     if name.startswith("manifest.") and name.endswith(".json"))
  for name in manifests:
    path = os.path.join(output, name)
    with open(path) as f:
      previous = json.load(f)
    found = {key: previous.get(key) for key in identity}
    if found != identity:
      differences = ", ".join(f"{key}: {found[key]} there, {identity[key]} now"
                              for key in identity if found[key] != identity[key])
      raise OutputConflictError(
          f"{path} was written with another checkpoint or settings ({differences}); "
          "choose another --output or pass --overwrite to retranslate everything")
  image_root = os.path.join(output, "images")
  if not manifests and os.path.isdir(image_root) and any(os.scandir(image_root)):
    raise OutputConflictError(
        f"{image_root} holds files but {output} has no manifest.json, so their checkpoint "
        "is unknown; choose another --output or pass --overwrite")


def translate_dataset(translator: Translator, source, output: str, *,
                      settings: Settings = Settings(), source_spec: str = "",
                      overwrite: bool = False, link_labels: bool = False,
                      read_threads: int = 4, write_threads: int = 4,
                      process_index: int = 0, process_count: int = 1,
                      stop: threading.Event | None = None,
                      progress: bool = True) -> Summary:
  """Translates this process's shard of `source` into the OUTPUT tree (module docstring).

  Args:
    translator: the generator to apply.
    source: from `sources.open_source`.
    output: the output folder (created).
    settings: format, quality, resize, dtype (recorded in the manifest).
    source_spec: how `source` was named, for the manifest.
    overwrite: retranslate existing outputs, ignoring a previous manifest (never
      touches inputs: see `check_output_location`).
    link_labels: hard-link the label files of a folder source into OUTPUT/labels
      instead of copying them; editing a linked label in place edits the original.
    read_threads: threads decoding (and resizing, padding) inputs.
    write_threads: threads encoding and writing outputs.
    process_index, process_count: this process takes indices
      `process_index::process_count` of the sorted source.
    stop: when set (e.g. by SIGINT or SIGTERM), finishes the batches in flight and
      returns with `interrupted`.
    progress: show a tqdm bar (images/s, ETA).
  Returns:
    The counts of this call; the same are in the manifest. An image that cannot
    be read is skipped and listed; one that cannot be written (e.g. a full disk)
    stops the run after the images in flight, with `summary.error` set.
  Raises:
    OutputConflictError: OUTPUT overlaps the inputs, holds results of another
      checkpoint or settings, or two inputs differ only by extension (one output
      name).
    OSError: OUTPUT or its manifest cannot be written.
  """
  start_time = time.time()
  stop = stop or threading.Event()
  check_output_location(source, output)
  os.makedirs(output, exist_ok=True)
  identity = {"checkpoint": {"path": translator.generator.path,
                             "step": translator.generator.step},
              "settings": json.loads(json.dumps(dataclasses.asdict(settings)))}
  _check_output(output, identity, overwrite)
  known_relpaths = getattr(source, "files", None)  # folder sources list their files
  if known_relpaths is not None:
    outputs = collections.defaultdict(list)
    for relpath in known_relpaths:
      outputs[output_relpath(relpath, settings.format)].append(relpath)
    clashes = [names for names in outputs.values() if len(names) > 1]
    if clashes:
      raise OutputConflictError(f"{source}: inputs {clashes[0]} would all be written to "
                                f"{output_relpath(clashes[0][0], settings.format)}")
  manifest_name, journal_name = _file_names(process_index, process_count)
  manifest = {**identity, "input": source_spec, "config": translator.generator.config.to_dict(),
              "process": {"index": process_index, "count": process_count},
              "status": "running"}
  _write_json_atomic(os.path.join(output, manifest_name), manifest)
  indices = list(range(process_index, len(source), process_count))
  summary = Summary(total=len(indices))
  done = []
  try:
    _translate_shard(translator, source, output, indices, settings, summary, done,
                     overwrite=overwrite, link_labels=link_labels,
                     read_threads=read_threads, write_threads=write_threads,
                     process_index=process_index, journal_name=journal_name, stop=stop,
                     progress=progress)
  except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
    summary.interrupted = True
    raise
  except Exception as e:
    summary.error = f"{type(e).__name__}: {e}"
    raise
  finally:
    summary.seconds = time.time() - start_time
    manifest.update(
        status=summary.status, error=summary.error, counts=summary.counts(),
        failed=summary.failed, seconds=round(summary.seconds, 3),
        images_per_second=round(summary.images_per_second, 3), done=sorted(done))
    _write_json_atomic(os.path.join(output, manifest_name), manifest)
  return summary


def _translate_shard(translator: Translator, source, output: str, indices: list[int],
                     settings: Settings, summary: Summary, done: list[str], *,
                     overwrite: bool, link_labels: bool, read_threads: int,
                     write_threads: int, process_index: int, journal_name: str,
                     stop: threading.Event, progress: bool):
  """The work of `translate_dataset`: fills `summary` and `done` as images are written."""
  writer = _DatasetWriter(output, source, settings, process_index,
                          os.path.join(output, journal_name), overwrite, link_labels)
  writer.remove_partials()
  known_relpaths = getattr(source, "files", None)
  if known_relpaths is not None:
    done.extend(known_relpaths[i] for i in indices if writer.is_done(known_relpaths[i]))
    done_set = set(done)
    indices = [i for i in indices if known_relpaths[i] not in done_set]
    summary.skipped = len(done)

  def prepare(record):
    if sources.is_bad(record) or writer.is_done(record["relpath"]):
      return record
    image = record["image"]
    record = {**record, "image_size": image.shape[:2]}
    if settings.resize is not None:
      height, width = settings.resize
      image = np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))
    record["padded"] = translator.pad_to_bucket(image)
    record["size"] = image.shape[:2]
    del record["image"]
    return record

  records = iter([])
  if indices:
    records = (grain.MapDataset.source(_Indexed(source, indices)).map(prepare)
               .to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                  prefetch_buffer_size=2 * translator.batch_size)))
  bar = tqdm.tqdm(total=len(indices), unit="img", disable=not progress, dynamic_ncols=True,
                  desc=f"translating ({summary.skipped} already done)")
  buckets: dict[tuple[int, ...], list[dict[str, Any]]] = collections.defaultdict(list)
  in_flight: collections.deque = collections.deque()
  writes: collections.deque = collections.deque()

  def finish_write(future, record):
    try:
      future.result()
    except OSError as e:  # e.g. a full disk: no point going on, nothing half-written
      summary.failed.append({"relpath": record["relpath"], "stage": "write",
                             "error": f"{type(e).__name__}: {e}"})
      if summary.error is None:
        summary.error = f"cannot write {writer.image_path(record['relpath'])}: {e}"
        logging.error("translate: %s; stopping after the images in flight", summary.error)
    else:
      summary.translated += 1
      done.append(record["relpath"])
    bar.update(1)

  def collect(pool, max_in_flight):
    while len(in_flight) > max_in_flight:
      batch_records, pending = in_flight.popleft()
      for record, translated in zip(batch_records, pending.result()):
        writes.append((pool.submit(writer.write, record, translated), record))
      # Keep at most a few batches of encoded-but-unwritten images in memory.
      while len(writes) > 2 * translator.batch_size + write_threads:
        finish_write(*writes.popleft())

  def launch(pool, batch_records):
    in_flight.append((batch_records, translator.start(
        [r["padded"] for r in batch_records], [r["size"] for r in batch_records])))
    collect(pool, max_in_flight=2)

  with concurrent.futures.ThreadPoolExecutor(write_threads) as pool:
    try:
      for record in records:
        if summary.error is not None:
          break
        if stop.is_set():
          summary.interrupted = True
          break
        if sources.is_bad(record):
          summary.failed.append({"relpath": record["relpath"], "stage": "read",
                                 "error": record[sources.ERROR_KEY]})
          logging.warning("translate: skipping unreadable input %s: %s", record["relpath"],
                          record[sources.ERROR_KEY])
          bar.update(1)
          continue
        if "padded" not in record:  # finished by an earlier run (names known only now)
          summary.skipped += 1
          done.append(record["relpath"])
          bar.update(1)
          continue
        bucket = buckets[record["padded"].shape]
        bucket.append(record)
        if len(bucket) == translator.batch_size:
          launch(pool, buckets.pop(record["padded"].shape))
      if not summary.interrupted and summary.error is None:
        for shape in list(buckets):
          launch(pool, buckets.pop(shape))
      collect(pool, max_in_flight=0)
    finally:
      while writes:
        finish_write(*writes.popleft())
      writer.close()
      bar.close()


def _parse_resize(text: str) -> tuple[int, int] | None:
  if not text:
    return None
  try:
    height, width = (int(value) for value in text.split(","))
  except ValueError:
    raise cli.UsageError(f"--resize={text!r}: expected HEIGHT,WIDTH") from None
  if height < 1 or width < 1:
    raise cli.UsageError(f"--resize={text!r}: sizes must be positive")
  return height, width


def _checkpoint_location() -> tuple[str, int | None]:
  """(path for load_generator, step) from --workdir / --checkpoint / --step."""
  if (_WORKDIR.value is None) == (_CHECKPOINT.value is None):
    raise cli.UsageError("pass exactly one of --workdir and --checkpoint")
  if _WORKDIR.value is not None:
    return _WORKDIR.value, _STEP.value
  path = epath.Path(_CHECKPOINT.value)
  if path.name.isdigit() and path.parent.name == "checkpoints":
    if _STEP.value is not None and _STEP.value != int(path.name):
      raise cli.UsageError(f"--checkpoint={path} is step {path.name} but --step={_STEP.value}")
    return str(path.parent), int(path.name)
  return str(path), _STEP.value


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  checkpoint_lib.quiet_orbax_logs()
  for name in ("input", "output"):
    if flags.FLAGS[name].value is None:
      raise cli.UsageError(f"--{name} is required")
  resize = _parse_resize(_RESIZE.value)
  with cli.StopSignals() as stop:
    sharding.maybe_initialize_distributed()
    checkpoint_path, step = _checkpoint_location()
    spec = _INPUT.value if ":" in _INPUT.value.split("/")[0] else f"folder:{_INPUT.value}"
    try:
      source = sources.open_source(spec, labels=_LABELS.value,
                                   tfds_data_dir=_TFDS_DATA_DIR.value)
      check_output_location(source, _OUTPUT.value)
      generator = checkpoint_lib.load_generator(checkpoint_path, step, _DTYPE.value)
    except checkpoint_lib.CheckpointError as e:
      raise cli.RunError(str(e)) from e
    except (FileNotFoundError, ValueError) as e:
      raise cli.UsageError(str(e)) from e
    device_count = jax.local_device_count()
    batch_size = -(-_BATCH_SIZE.value // device_count) * device_count
    try:
      translator = Translator(generator, batch_size=batch_size,
                              bucket_multiple=_BUCKET_MULTIPLE.value)
    except ValueError as e:
      raise cli.UsageError(str(e)) from e
    settings = Settings(format=_FORMAT.value, quality=_QUALITY.value,
                        png_compress_level=_PNG_COMPRESS_LEVEL.value, resize=resize,
                        compute_dtype=_DTYPE.value or generator.config.compute_dtype)
    logging.info("translate: %s with %s step %d on %d device(s), batch %d, %s",
                 source, generator.path, generator.step, device_count, batch_size, settings)
    try:
      summary = translate_dataset(
          translator, source, _OUTPUT.value, settings=settings, source_spec=spec,
          overwrite=_OVERWRITE.value, link_labels=_LINK_LABELS.value,
          read_threads=_READ_THREADS.value, write_threads=_WRITE_THREADS.value,
          process_index=jax.process_index(), process_count=jax.process_count(),
          stop=stop.event)
    except OutputConflictError as e:
      raise cli.UsageError(str(e)) from e
    except OSError as e:  # OUTPUT or its manifest cannot be written
      raise cli.RunError(f"--output={_OUTPUT.value}: {e}") from e
  print(f"{_OUTPUT.value}: {summary}", flush=True)
  if summary.error is not None:
    return cli.EXIT_ERROR
  if summary.interrupted:
    return stop.exit_code or cli.EXIT_SIGTERM
  return cli.EXIT_FAILED_INPUTS if summary.failed else cli.EXIT_OK


if __name__ == "__main__":
  # Flags are defined only when run as a program, so that the library parts of
  # this module can be imported next to the other entry points (whose flag
  # names overlap: --workdir, --labels, --batch_size).
  _WORKDIR = flags.DEFINE_string(
      "workdir", None, "Training workdir whose checkpoint translates (its latest step unless "
      "--step).")
  _CHECKPOINT = flags.DEFINE_string(
      "checkpoint", None, "Instead of --workdir: a checkpoints/ directory, or one step in it "
      "(WORKDIR/checkpoints/<step>).")
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  _INPUT = flags.DEFINE_string(
      "input", None, "Images to translate: folder:PATH (or a bare PATH; png/jpg, recursive), "
      "tfds:NAME[:SPLIT] or toy_streets:sim[:SPLIT].")
  _LABELS = flags.DEFINE_string(
      "labels", "", "Folder of label maps for a folder input, matched by relative path and "
      "stem; copied to OUTPUT/labels/ under the same relative names (see --link_labels). "
      "tfds and toy_streets inputs bring their own labels.")
  _LINK_LABELS = flags.DEFINE_bool(
      "link_labels", False, "Hard-link the label files into OUTPUT/labels/ instead of "
      "copying them: saves space, but a linked label IS the original file, so editing it in "
      "place (e.g. relabelling the translated set) changes the source data set too.")
  _OUTPUT = flags.DEFINE_string(
      "output", None, "Output folder: images/, labels/, manifest.json, translated.log. Must "
      "lie outside the input and label folders (inputs are never overwritten).")
  _RESIZE = flags.DEFINE_string(
      "resize", "", "HEIGHT,WIDTH to translate at (outputs are resized back to each input's "
      "size so labels still match); empty: full resolution, the input's own size. Sizes not "
      "divisible by the bucket multiple are reflection-padded and cropped back.")
  _FORMAT = flags.DEFINE_enum("format", "png", list(FORMAT_EXTENSIONS), "Output image format.")
  _QUALITY = flags.DEFINE_integer("quality", 95, "JPEG quality (1-95), --format=jpg only.")
  _PNG_COMPRESS_LEVEL = flags.DEFINE_integer(
      "png_compress_level", 1, "PNG zlib level 0-9 (lossless at any level; 1 is fastest).")
  _DTYPE = flags.DEFINE_enum(
      "dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the run's "
      "config.compute_dtype; bfloat16 is faster on GPU/TPU).")
  _BATCH_SIZE = flags.DEFINE_integer(
      "batch_size", 8, "Images per device call (rounded up to a multiple of the local device "
      "count).")
  _BUCKET_MULTIPLE = flags.DEFINE_integer(
      "bucket_multiple", 64, "Pad H and W up to multiples of this (a multiple of 4): one "
      "compiled shape per bucket, so mixed sizes do not recompile per image.")
  _READ_THREADS = flags.DEFINE_integer("read_threads", 4, "Threads decoding inputs.")
  _WRITE_THREADS = flags.DEFINE_integer("write_threads", 4, "Threads encoding outputs.")
  _OVERWRITE = flags.DEFINE_bool(
      "overwrite", False, "Retranslate everything, even into an OUTPUT written with another "
      "checkpoint or settings (OUTPUT's own files only; inputs are never written).")
  _TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "Where tfds: inputs are stored.")
  cli.run(main)
