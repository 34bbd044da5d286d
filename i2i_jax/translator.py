"""Applies a trained generator to images, and to whole data sets.

  translator = Translator("runs/gta2cityscapes", compute_dtype="bfloat16")
  real_looking = translator.translate(images)   # [B, H, W, 3] uint8 -> uint8

  summary = translate_dataset(translator, sources.open_source("folder:gta5/images"),
                              "gta5_real")

`Translator` batches images of any size into fixed, device-sharded shapes;
`translate_dataset` streams a whole source through it (decoding, device work and
encoding overlap) into the OUTPUT tree that `output_tree.py` describes, resumable
and safe to interrupt. `python -m i2i_jax.translate` is the command line around it.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import multiprocessing
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

from absl import logging
from etils import epath
import grain
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import numpy as np
from PIL import Image
import tqdm

from i2i_jax import checkpoint as checkpoint_lib
from i2i_jax import codecs
from i2i_jax import compile_options
from i2i_jax import output_tree
from i2i_jax import sharding
from i2i_jax.data import sources

# The generator halves H and W twice.
GENERATOR_STRIDE = 4


def _to_uint8(images: jax.Array) -> jax.Array:
  """[-1, 1] float -> [0, 255] uint8, the inverse of `value_range(-1,1)`."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(
      jnp.uint8)


def _forward(module, variables, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
  """images: [B, H, W, 3] uint8 or float in [-1, 1] -> [B, H, W, 3] uint8.

  labels: [B, H, W] class ids for a label-conditioned generator (`takes_labels`).
  """
  if images.dtype == jnp.uint8:
    images = images.astype(jnp.float32) / 127.5 - 1.0
  images = images.astype(jnp.float32)
  if labels is None:
    return _to_uint8(module.apply(variables, images))
  return _to_uint8(module.apply(variables, images, labels.astype(jnp.int32)))


def takes_labels(generator: checkpoint_lib.LoadedGenerator) -> bool:
  """Whether `generator` is label-conditioned: it can be given the images' own class maps.

  Without them its frozen segmenter's pseudo-labels condition it
  (`label_guidance.PseudoLabelledGenerator`).
  """
  return getattr(generator.module, "takes_labels", False)


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
    compiler_options: the run's `config.cpu_compiler_options` that this XLA
      takes, on CPU (`compile_options.cpu_compiler_options`); else None.
  """

  def __init__(self, checkpoint: epath.PathLike | checkpoint_lib.LoadedGenerator, *,
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
        lambda variables, images, labels: _forward(self.generator.module, variables, images,
                                                   labels),
        in_shardings=(replicated, self._batch_sharding, self._batch_sharding),
        out_shardings=self._batch_sharding)
    self.compiler_options = compile_options.cpu_compiler_options(self.generator.config)
    self._compiled: dict[tuple[tuple[int, ...], str, bool], Any] = {}

  @property
  def num_compilations(self) -> int:
    """How many executables were compiled (one per padded batch shape and dtype)."""
    return len(self._compiled)

  def bucket_shape(self, height: int, width: int) -> tuple[int, int]:
    """The padded (H, W) an image of size (height, width) is translated at."""
    multiple = self.bucket_multiple
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple

  def pad_to_bucket(self, image: np.ndarray) -> np.ndarray:
    """Reflection-pads [h, w, 3] (or a [h, w] label map) at the bottom and right to the
    bucket shape [*bucket_shape(h, w), ...]."""
    height, width = image.shape[:2]
    padded_height, padded_width = self.bucket_shape(height, width)
    if (padded_height, padded_width) == (height, width):
      return image
    return np.pad(image, ((0, padded_height - height), (0, padded_width - width))
                  + ((0, 0),) * (image.ndim - 2), mode="reflect")

  def start(self, padded_images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]],
            padded_labels: Sequence[np.ndarray] | None = None) -> PendingTranslation:
    """Dispatches up to `batch_size` bucket-shaped images without waiting.

    Args:
      padded_images: `pad_to_bucket` outputs of one shape, [Hb, Wb, 3] uint8 (or
        float in [-1, 1]).
      sizes: each image's (h, w) before padding, to crop the outputs to.
      padded_labels: for a label-conditioned generator (`takes_labels`), each
        image's class map padded the same way, [Hb, Wb] integer ids; None: its
        segmenter's pseudo-labels.
    """
    if not 0 < len(padded_images) <= self.batch_size or len(sizes) != len(padded_images):
      raise ValueError(f"Translator.start: got {len(padded_images)} images and {len(sizes)} "
                       f"sizes; expected 1..{self.batch_size} of each")
    if padded_labels is not None and not takes_labels(self.generator):
      raise ValueError(f"Translator.start: labels given, but the generator of "
                       f"{self.generator.path} is not label-conditioned")
    batch = np.stack(padded_images)
    if batch.ndim != 4 or batch.shape[-1] != 3:
      raise ValueError(f"Translator.start: images stack to {batch.shape}; expected "
                       "[B, H, W, 3]")
    if batch.shape[1:3] != self.bucket_shape(*batch.shape[1:3]):
      raise ValueError(f"Translator.start: images are {batch.shape[1:3]}, not a bucket shape "
                       f"(multiples of {self.bucket_multiple}); use pad_to_bucket")
    if batch.dtype != np.uint8:
      batch = batch.astype(np.float32)
    labels = None
    if padded_labels is not None:
      labels = np.stack(padded_labels).astype(np.int32)
      if labels.shape != batch.shape[:3]:
        raise ValueError(f"Translator.start: labels stack to {labels.shape}; expected "
                         f"{batch.shape[:3]}, one [Hb, Wb] map per image")
    fill = lambda x: np.concatenate([x, np.zeros((self.batch_size - len(x), *x.shape[1:]),
                                                 x.dtype)])
    if len(batch) < self.batch_size:
      batch = fill(batch)
      labels = None if labels is None else fill(labels)
    key = (batch.shape, batch.dtype.name, labels is not None)
    if key not in self._compiled:
      abstract = lambda x: None if x is None else jax.ShapeDtypeStruct(
          x.shape, x.dtype, sharding=self._batch_sharding)
      self._compiled[key] = self._jitted.lower(self._variables, abstract(batch),
                                               abstract(labels)).compile(
                                                   compiler_options=self.compiler_options)
    images, labels = jax.device_put((batch, labels), self._batch_sharding)
    return PendingTranslation(self._compiled[key](self._variables, images, labels), sizes)

  def translate_list(self, images: Sequence[np.ndarray],
                     labels: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Translates images of any sizes: each [h, w, 3] uint8 or float in [-1, 1] -> uint8.

    labels: for a label-conditioned generator, each image's [h, w] class map (None:
    its segmenter's pseudo-labels).
    """
    if labels is not None and len(labels) != len(images):
      raise ValueError(f"Translator: {len(labels)} label maps for {len(images)} images")
    by_bucket = collections.defaultdict(list)
    for index, image in enumerate(images):
      image = np.asarray(image)
      if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Translator: image {index} has shape {image.shape}; expected "
                         "[H, W, 3]")
      if labels is not None and np.shape(labels[index]) != image.shape[:2]:
        raise ValueError(f"Translator: label map {index} has shape {np.shape(labels[index])}; "
                         f"expected its image's {image.shape[:2]}")
      by_bucket[(image.shape[:2], image.dtype.name != "uint8")].append(index)
    pending = []
    for indices in by_bucket.values():
      for start in range(0, len(indices), self.batch_size):
        chunk = indices[start:start + self.batch_size]
        padded = [self.pad_to_bucket(np.asarray(images[i])) for i in chunk]
        sizes = [np.asarray(images[i]).shape[:2] for i in chunk]
        padded_labels = None if labels is None else [
            self.pad_to_bucket(np.asarray(labels[i])) for i in chunk]
        pending.append((chunk, self.start(padded, sizes, padded_labels)))
    translated: list[np.ndarray] = [np.empty(0)] * len(images)
    for chunk, batch in pending:
      for index, output in zip(chunk, batch.result()):
        translated[index] = output
    return translated

  def translate(self, images: np.ndarray | jax.Array,
                labels: np.ndarray | jax.Array | None = None) -> np.ndarray:
    """images: [B, H, W, 3] uint8 or float in [-1, 1] -> [B, H, W, 3] uint8 (any B, H, W).

    labels: [B, H, W] class ids for a label-conditioned generator (None: its
    segmenter's pseudo-labels).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"Translator.translate: images have shape {images.shape}; expected "
                       "[B, H, W, 3]")
    if not len(images):
      return np.zeros(images.shape, np.uint8)
    return np.stack(self.translate_list(
        list(images), None if labels is None else list(np.asarray(labels))))


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


def translate_dataset(translator: Translator, source, output: epath.PathLike, *,
                      settings: output_tree.Settings = output_tree.Settings(),
                      source_spec: str = "",
                      overwrite: bool = False, link_labels: bool = False,
                      source_labels: bool = True,
                      read_threads: int = 4, write_threads: int = 4,
                      process_index: int = 0, process_count: int = 1,
                      stop: threading.Event | None = None,
                      progress: bool = True) -> Summary:
  """Translates this process's shard of `source` into the OUTPUT tree (`output_tree`).

  Args:
    translator: the generator to apply.
    source: from `sources.open_source`.
    output: the output folder (created; local or any epath, e.g. gs://).
    settings: format, quality, resize, dtype (recorded in the manifest).
    source_spec: how `source` was named, for the manifest.
    overwrite: retranslate existing outputs, ignoring a previous manifest (never
      touches inputs: see `output_tree.check_location`).
    link_labels: hard-link the label files of a folder source into OUTPUT/labels
      instead of copying them; editing a linked label in place edits the original.
    source_labels: give a label-conditioned generator (`takes_labels`) each image's
      own class map when the source has labels (what it was trained with); False, or
      a source without labels: its frozen segmenter's pseudo-labels. Recorded in the
      manifest ("generator_labels": "source" or "segmenter").
    read_threads: threads decoding (and resizing, padding) inputs.
    write_threads: threads writing outputs, and as many worker processes encoding
      them when the encoder holds the GIL (`codecs.holds_gil`).
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
  output = epath.Path(output)
  output_tree.check_location(source, output)
  output.mkdir(parents=True, exist_ok=True)
  identity = {"checkpoint": {"path": translator.generator.path,
                             "step": translator.generator.step},
              "settings": json.loads(json.dumps(dataclasses.asdict(settings)))}
  with_labels = False
  if takes_labels(translator.generator):
    with_labels = source_labels and bool(getattr(source, "has_labels", False))
    identity["generator_labels"] = "source" if with_labels else "segmenter"
    logging.info("translate: the label-conditioned generator gets %s",
                 "each image's own labels" if with_labels else "its segmenter's pseudo-labels")
  if not overwrite:
    output_tree.check_previous_results(output, identity)
  output_tree.check_output_names(source, settings)
  manifest_name, journal_name = output_tree.file_names(process_index, process_count)
  manifest = {**identity, "input": source_spec, "config": translator.generator.config.to_dict(),
              "process": {"index": process_index, "count": process_count},
              "status": "running"}
  output_tree.write_manifest(output / manifest_name, manifest)
  indices = list(range(process_index, len(source), process_count))
  summary = Summary(total=len(indices))
  done = []
  try:
    _translate_shard(translator, source, output, indices, settings, summary, done,
                     overwrite=overwrite, link_labels=link_labels, with_labels=with_labels,
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
    output_tree.write_manifest(output / manifest_name, manifest)
  return summary


# How long translate_dataset waits for its encoding workers to start (each spawned
# worker re-imports the main module: ~2 s of CPU for `python -m i2i_jax.translate`).
_WORKER_START_TIMEOUT_S = 120


def _start_encoding_worker(started: threading.Barrier):
  """Runs first in each encoding worker.

  Ctrl-C and SIGTERM reach the whole process group, but only the main process
  decides when to stop (it finishes the images in flight first), so the worker
  ignores them. Then it waits at `started` with the other workers and the main
  process, which begins translating only when every worker can take work.
  """
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  try:
    started.wait(timeout=_WORKER_START_TIMEOUT_S)
  except threading.BrokenBarrierError:  # the main process stopped waiting: work anyway
    pass


@contextlib.contextmanager
def _encode_processes(settings: output_tree.Settings, count: int):
  """`count` started worker processes for an encoder that holds the GIL (fpng); else None.

  Spawned, not forked: forking a process that runs JAX's threads can deadlock. All
  are started before the first image is read: a worker's start costs more CPU than
  encoding hundreds of images, and workers that were still starting would stall the
  first batches (and any steady-state figure taken from a short run).
  """
  if not codecs.holds_gil(settings.format, settings.png_compress_level):
    yield None
    return
  context = multiprocessing.get_context("spawn")
  started = context.Barrier(count + 1)
  with concurrent.futures.ProcessPoolExecutor(count, mp_context=context,
                                              initializer=_start_encoding_worker,
                                              initargs=(started,)) as pool:
    # The pool spawns a worker per submitted task while none is idle; none is
    # idle until all have met at `started`, so these tasks spawn all `count`.
    for _ in range(count):
      pool.submit(int)
    begin = time.time()
    try:
      started.wait(timeout=_WORKER_START_TIMEOUT_S)
    except threading.BrokenBarrierError:
      logging.warning("translate: %d encoding workers did not all start in %d s; going on",
                      count, _WORKER_START_TIMEOUT_S)
    finally:  # e.g. Ctrl-C while waiting: no worker waits on (and shutdown waits for none)
      started.abort()
    logging.info("translate: %d encoding workers started in %.1f s", count, time.time() - begin)
    yield pool


def _translate_shard(translator: Translator, source, output: epath.Path, indices: list[int],
                     settings: output_tree.Settings, summary: Summary, done: list[str], *,
                     overwrite: bool, link_labels: bool, with_labels: bool, read_threads: int,
                     write_threads: int, process_index: int, journal_name: str,
                     stop: threading.Event, progress: bool):
  """The work of `translate_dataset`: fills `summary` and `done` as images are written."""
  writer = output_tree.OutputTree(output, source, settings, journal_name=journal_name,
                                  process_index=process_index, overwrite=overwrite,
                                  link_labels=link_labels)
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
    if with_labels:  # the class map the generator is conditioned on, on the image's grid
      label = record["label"]
      if settings.resize is not None:
        label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
      record["padded_label"] = translator.pad_to_bucket(label)
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

  def write(record, translated, encoder):
    if encoder is not None:  # the file's bytes from a worker process
      translated = encoder.submit(encode, output_tree.at_input_size(record, translated)).result()
    writer.write(record, translated)

  def collect(pool, max_in_flight):
    while len(in_flight) > max_in_flight:
      batch_records, pending = in_flight.popleft()
      for record, translated in zip(batch_records, pending.result()):
        writes.append((pool.submit(write, record, translated, encoder), record))
      # Keep at most a few batches of encoded-but-unwritten images in memory.
      while len(writes) > 2 * translator.batch_size + write_threads:
        finish_write(*writes.popleft())

  def launch(pool, batch_records):
    in_flight.append((batch_records, translator.start(
        [r["padded"] for r in batch_records], [r["size"] for r in batch_records],
        [r["padded_label"] for r in batch_records] if with_labels else None)))
    collect(pool, max_in_flight=2)

  encode = output_tree.encoder(settings)
  # The encoder's processes outlive the threads that use them.
  with (_encode_processes(settings, write_threads) as encoder,
        concurrent.futures.ThreadPoolExecutor(write_threads) as pool):
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
