"""Prepares training data: the deterministic preprocessing once, stored for random access.

  python -m i2i_jax.prepare --source=folder:data/source/train [--labels=data/source/labels] \\
      --preprocess="resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)" \\
      --out=data/source/prepared_256x512

decodes every image of --source (any source string, see i2i_jax/data/sources.py),
applies the leading deterministic ops of --preprocess (here resize(256,512); the
random ops and value_range are left to training) and stores the uint8 images,
with their labels, as ArrayRecord shards in --out (i2i_jax/data/prepared.py).
Train on them with `--config.data.source=prepared:DIR` and the same
data.preprocess: the pipeline skips the ops already applied and gives the
batches of the original source, for a fraction of the CPU (training input from a
1914x1052 PNG costs ~50 ms per image, from a prepared record ~3 ms;
benchmarks/RESULTS.md, "Prepared training data").

Images are prepared in --workers processes, with a progress bar, and written in
shards of --shard_size images, each under a temporary name and renamed when
complete: an interrupted run (Ctrl-C, SIGTERM, a crash) keeps its finished
shards, and the same command resumes where it stopped. A rerun of a finished
preparation does nothing; other settings into the same --out are refused.
--out must be a new or empty local folder (or an earlier preparation) outside
the input folders: inputs are never written or read back.

A file that cannot be used (see the training pipeline: truncated, not an image,
a missing label or one of another size, smaller than a crop) is skipped and
named in the log and in prepared.json's "skipped" list.

Exit codes (i2i_jax/cli.py): 0 done; 1 done, some inputs skipped; 2 a bad flag,
source, op string or --out (one line); 3 --out cannot be written; 130/143 stopped
by Ctrl-C/SIGTERM after the image in flight (rerun to go on).
"""

from collections.abc import Sequence
import json
import multiprocessing
import os
import signal
import threading
from typing import Any

from absl import flags
from absl import logging
from array_record.python import array_record_module
import tqdm

from i2i_jax import cli
from i2i_jax import storage
from i2i_jax.data import prepared
from i2i_jax.data import preprocess
from i2i_jax.data import sources

# Header keys that must match for a rerun to resume into an existing --out.
_SETTINGS = ("source", "labels", "preprocess", "codec", "shard_size", "num_inputs",
             "has_labels")


class _Preparer:
  """Reads, preprocesses and encodes one input by index; opens the source on first use.

  Picklable before its first call, so that worker processes open their own source.
  """

  def __init__(self, source_spec: str, labels: str, tfds_data_dir: str | None,
               ops: str, codec: str):
    self._source_args = (source_spec, labels, tfds_data_dir)
    self._ops_spec, self._codec = ops, codec
    self._source, self._ops = None, None

  def __call__(self, index: int) -> tuple[str, bytes | None, str | None]:
    """(relpath, the stored record or None, why it was skipped or None)."""
    if self._source is None:
      spec, labels, tfds_data_dir = self._source_args
      self._source = sources.open_source(spec, labels=labels, tfds_data_dir=tfds_data_dir)
      self._ops = preprocess.parse(self._ops_spec)
    record = self._source[index]
    for op in self._ops:
      record = op.map(record)
    if sources.is_bad(record):
      return record["relpath"], None, record[sources.ERROR_KEY]
    return record["relpath"], prepared.encode_record(record, self._codec), None


_worker_preparer = None  # the _Preparer of a worker process (_start_worker)


def _start_worker(preparer: _Preparer):
  global _worker_preparer
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process stops the work
  _worker_preparer = preparer


def _prepare_in_worker(index: int):
  return _worker_preparer(index)


def _results(pool, preparer: _Preparer, indices: list[int], stop: threading.Event | None):
  """Yields `preparer(index)` for each of `indices` in order; ends early once `stop` is set.

  With a pool, waits for each result in short slices, so that a stop request is
  seen even while a worker is busy (or was killed).
  """
  stopped = lambda: stop is not None and stop.is_set()
  if pool is None:
    for index in indices:
      if stopped():
        return
      yield preparer(index)
    return
  # chunksize 1: only then is imap's result an IMapIterator, whose next() has a timeout.
  in_order = pool.imap(_prepare_in_worker, indices)
  for _ in indices:
    while True:
      if stopped():
        return
      try:
        yield in_order.next(timeout=1.0)
        break
      except multiprocessing.TimeoutError:
        continue


def _check_out(out: str, source, labels: str):
  """Raises ValueError if --out could overwrite or read back an input of `source`."""
  if not storage.is_local(out):
    raise ValueError(f"--out={out}: prepared data is written to local folders only")
  # Folder and prepared sources have a root folder; tfds and toy_streets have none to guard.
  input_folders = [folder for folder in (getattr(source, "root", ""), labels) if folder]
  for folder in input_folders:
    if storage.is_within(out, folder) or storage.is_within(folder, out):
      raise ValueError(f"--out={out} and the input folder {folder} overlap; choose an "
                       "--out outside the inputs")
  if os.path.exists(out) and not os.path.isdir(out):
    raise ValueError(f"--out={out} exists and is not a folder")
  if (os.path.isdir(out) and os.listdir(out)
      and not os.path.exists(os.path.join(out, prepared.HEADER))):
    raise ValueError(f"--out={out} holds other files; choose a new or empty folder")


def _header_for_rerun(out: str, header: dict[str, Any]) -> dict[str, Any] | None:
  """The header already in `out` if its settings are `header`'s, None if there is none.

  Raises:
    ValueError: `out` holds a preparation with other settings, naming them.
  """
  if not os.path.exists(os.path.join(out, prepared.HEADER)):
    return None
  existing = prepared.read_header(out)
  differ = [f"{key} {existing.get(key)!r} (now {header[key]!r})"
            for key in _SETTINGS if existing.get(key) != header[key]]
  if differ:
    raise ValueError(f"--out={out} holds data prepared with other settings: "
                     f"{'; '.join(differ)}; choose another --out")
  return existing


def _shard_done_path(out: str, name: str) -> str:
  return os.path.join(out, name.removesuffix(".array_record") + ".json")


def _write_json(path: str, content: dict[str, Any]):
  with storage.atomic_write(path, "w") as f:
    json.dump(content, f, indent=1)


def prepare(source_spec: str, out: str, preprocess_spec: str, *, labels: str = "",
            codec: str = prepared.DEFAULT_CODEC, shard_size: int = 256, workers: int = 0,
            tfds_data_dir: str | None = None, stop: threading.Event | None = None,
            progress: bool = False) -> dict[str, Any]:
  """Writes the prepared form of a source to `out` (module docstring), or resumes it.

  Args:
    source_spec: the source (`sources.open_source`).
    out: the prepared folder (new, empty, or an earlier preparation with the
      same settings).
    preprocess_spec: an op string; its leading deterministic ops
      (`preprocess.split_preparable`) are applied, the rest is for training.
    labels: label folder of a folder source ("" for none).
    codec: one of `prepared.CODECS`.
    shard_size: images per ArrayRecord shard (the unit of resuming).
    workers: worker processes (0: in this process).
    tfds_data_dir: where tfds: sources live (None: TFDS's default).
    stop: when set, stops after the image in flight; finished shards are kept.
    progress: show a tqdm bar.

  Returns:
    The header (`prepared.read_header`); "complete" is False if `stop` came first.

  Raises:
    ValueError: a bad source, op string, codec or --out (nothing is written),
      or every input was skipped.
    OSError: `out` cannot be written.
  """
  if codec not in prepared.CODECS:
    raise ValueError(f"codec {codec!r} is not one of {', '.join(prepared.CODECS)}")
  if shard_size < 1:
    raise ValueError(f"shard_size {shard_size} must be at least 1")
  ops, _ = preprocess.split_preparable(preprocess_spec)
  if not ops:
    raise ValueError(f"preprocess {preprocess_spec!r} does not start with an op that can be "
                     "prepared (resize, center_crop): there is nothing to store")
  try:
    source = sources.open_source(source_spec, labels=labels, tfds_data_dir=tfds_data_dir)
  except OSError as e:
    raise ValueError(str(e)) from e
  _check_out(out, source, labels)
  num_shards = -(-len(source) // shard_size)
  header = {"format": prepared.FORMAT, "version": prepared.VERSION,
            "source": sources.canonical_spec(source_spec),
            "labels": os.path.realpath(labels) if labels else "", "preprocess": ops,
            "codec": codec, "shard_size": shard_size, "num_inputs": len(source),
            "has_labels": source.has_labels, "complete": False}
  existing = _header_for_rerun(out, header)
  if existing and existing["complete"]:
    logging.info("prepare: %s is already prepared (%d records)", out, existing["count"])
    return existing
  if existing is None:
    _write_json(os.path.join(out, prepared.HEADER), header)
  for name in os.listdir(out):  # a killed run's temporary files
    if name.endswith(storage.TEMPORARY_SUFFIX):
      os.remove(os.path.join(out, name))

  names = [prepared.shard_name(k, num_shards) for k in range(num_shards)]
  todo = [k for k in range(num_shards) if not os.path.exists(_shard_done_path(out, names[k]))]
  bounds = [(k * shard_size, min((k + 1) * shard_size, len(source))) for k in range(num_shards)]
  indices = [i for k in todo for i in range(*bounds[k])]
  logging.info("prepare: %s -> %s: applying %r to %d inputs in %d shards (%d to do), "
               "%s, %d workers", source_spec, out, ops, len(source), num_shards, len(todo),
               codec, workers)
  preparer = _Preparer(source_spec, labels, tfds_data_dir, ops, codec)
  bar = tqdm.tqdm(total=len(source), initial=len(source) - len(indices), unit="img",
                  disable=not progress, dynamic_ncols=True, desc="prepare")
  pool = (multiprocessing.get_context("spawn").Pool(
      workers, initializer=_start_worker, initargs=(preparer,)) if workers and indices
          else None)
  try:
    results = _results(pool, preparer, indices, stop)
    stopped = False
    for k in todo:
      stopped = not _write_shard(out, names[k], bounds[k], results, bar)
      if stopped:
        break
  finally:
    bar.close()
    if pool:
      pool.terminate()
  if stopped:
    return header
  return _finish(out, header, names)


def _write_shard(out: str, name: str, bounds: tuple[int, int], results, bar) -> bool:
  """Writes shard `name` (inputs [start, end)) from `results`; False if they ended first."""
  path = os.path.join(out, name)
  temporary = storage.temporary_path(path, "prepare")
  writer = array_record_module.ArrayRecordWriter(os.fspath(temporary), prepared.WRITER_OPTIONS)
  count, skipped = 0, []
  try:
    for _ in range(*bounds):
      result = next(results, None)
      if result is None:  # stopped
        writer.close()
        os.remove(temporary)
        return False
      relpath, record, why = result
      if record is None:
        logging.warning("prepare: skipped %r: %s", relpath, why)
        skipped.append({"relpath": relpath, "error": why})
      else:
        writer.write(record)
        count += 1
      bar.update(1)
    writer.close()
  except BaseException:
    writer.close()
    if os.path.exists(temporary):
      os.remove(temporary)
    raise
  os.replace(temporary, path)
  _write_json(_shard_done_path(out, name), {"count": count, "skipped": skipped})
  return True


def _finish(out: str, header: dict[str, Any], names: list[str]) -> dict[str, Any]:
  """Writes the complete header from the shards' records; returns it."""
  shards, count, skipped = [], 0, []
  for name in names:
    with open(_shard_done_path(out, name)) as f:
      done = json.load(f)
    if done["count"]:
      shards.append(name)
    count += done["count"]
    skipped += done["skipped"]
  if not count:
    raise ValueError(f"every one of the {header['num_inputs']} inputs of {header['source']} "
                     "was skipped (see the warnings); nothing to train on")
  header = dict(header, complete=True, count=count, shards=shards, skipped=skipped)
  _write_json(os.path.join(out, prepared.HEADER), header)
  logging.info("prepare: wrote %d records to %s (%d inputs skipped); train with "
               "--config.data.source=prepared:%s", count, out, len(skipped), out)
  return header


# The command's own flags (not absl's global FLAGS), so that every entry point
# imports next to the others although their flag names overlap (cli.py).
FLAGS = flags.FlagValues()
_SOURCE = flags.DEFINE_string(
    "source", None, "The images: folder:PATH, tfds:NAME[:SPLIT], toy_streets:STYLE[:SPLIT] "
    "or a folder path.", flag_values=FLAGS)
_LABELS = flags.DEFINE_string(
    "labels", "", "Label folder of a folder source, matched by relative path (stored with "
    "each image); tfds/toy_streets sources carry their labels.", flag_values=FLAGS)
_PREPROCESS = flags.DEFINE_string(
    "preprocess", None, "The training op string (config.data.preprocess); its leading "
    "deterministic ops (resize, center_crop) are applied and stored.", flag_values=FLAGS)
_OUT = flags.DEFINE_string(
    "out", None, "The prepared folder: new, empty, or this command's earlier output "
    "(resumed).", flag_values=FLAGS)
_CODEC = flags.DEFINE_enum(
    "codec", prepared.DEFAULT_CODEC, list(prepared.CODECS), "Lossless storage of the "
    "pixels: qoi (default; 0.9 ms to read a 256x512 image, 0.6 of raw's size for "
    "photographs), png (slower, 0.65), zstd (0.4 ms, 0.9) or raw (0.1 ms).", flag_values=FLAGS)
_SHARD_SIZE = flags.DEFINE_integer(
    "shard_size", 256, "Images per shard (the unit that a rerun resumes by).",
    lower_bound=1, flag_values=FLAGS)
_WORKERS = flags.DEFINE_integer(
    "workers", os.cpu_count() or 1, "Worker processes decoding and resizing (0: none).",
    lower_bound=0, flag_values=FLAGS)
_TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None, "Where tfds: sources live (default: TFDS's).", flag_values=FLAGS)
flags.mark_flags_as_required(["source", "preprocess", "out"], flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.prepare` in this process: `argv` as sys.argv; returns the exit code.

  Raises:
    cli.HelpRequested: --help.
    cli.UsageError: a bad flag, source, op string or --out; every input skipped.
    cli.RunError: --out cannot be written.
  """
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments {arguments[1:]} (see --help)")
  with cli.StopSignals() as stop:
    try:
      header = prepare(_SOURCE.value, _OUT.value, _PREPROCESS.value, labels=_LABELS.value,
                       codec=_CODEC.value, shard_size=_SHARD_SIZE.value,
                       workers=_WORKERS.value, tfds_data_dir=_TFDS_DATA_DIR.value,
                       stop=stop.event, progress=True)
    except ValueError as e:
      raise cli.UsageError(str(e)) from e
    except OSError as e:
      raise cli.RunError(f"--out={_OUT.value}: {e}") from e
  if not header["complete"]:
    logging.warning("prepare: stopped; finished shards are kept in %s, run the same command "
                    "to go on", _OUT.value)
    return stop.exit_code or cli.EXIT_SIGINT
  return cli.EXIT_FAILED_INPUTS if header["skipped"] else cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
