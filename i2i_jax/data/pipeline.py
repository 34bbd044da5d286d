"""grain input pipelines: two unpaired domains, batched together.

`make_train_iterator(config.data, seed=...)` streams

  {"source": [B_host, H, W, 3] float32 in [-1, 1],
   "target": [B_host, H, W, 3] float32 in [-1, 1],
   "source_label": [B_host, H, W] uint8 (only with data.with_labels),
   "target_label": [B_host, H, W] uint8 (only with data.with_target_labels)}

with B_host = data.batch_size // process_count. Each domain is its own grain
pipeline: the source shuffled with its own seed, repeated forever (reshuffled
each epoch), augmented, then this host's slots of every global batch
(`jax.process_index()`; every host sees the same global sequence, so the
global batch is the same for any number of hosts), decoded and preprocessed in
`data.read_threads` threads, bad records dropped, batched; the
two are zipped and, with `data.worker_count > 0`, run in that many worker
processes. Everything is deterministic given the seeds and the worker count. A
`prepared:DIR` source (`python -m i2i_jax.prepare`) stores its images after
the leading deterministic ops (`resize(256,512)`); the pipeline skips those
ops and gives the same batches as the source it was prepared from.

Bad inputs (see `sources.py`; and images smaller than a crop, see
`preprocess.py`) are dropped and counted; a warning names each file the first
time it comes round (once per process: with grain workers, once per worker). The count travels with the batches out of the worker processes;
the returned iterator keeps the totals, logs a summary line whenever a domain
completes an epoch, and gives it on demand:

  it = make_train_iterator(config.data, seed=config.seed)
  ...
  logging.info(it.skipped_summary())   # e.g. at the end of training
  it.skipped                           # {"source": 1, "target": 0}

The iterator's state (`get_state()`/`set_state()`; grain.checkpoint handlers
for Orbax) holds the position of every worker and the skip totals, so a
restored iterator continues with exactly the batch that would have come next.

Worker processes (data.worker_count > 0) need absl flags parsed, as
`absl.app.run` does; elsewhere (notebooks, tests) call
`absl.flags.FLAGS.mark_as_parsed()` first.
"""

import os
from typing import Any

from absl import logging
import grain
import ml_collections
import numpy as np

from i2i_jax.data import preprocess
from i2i_jax.data import sources

_SKIPPED_KEY = "skipped"
DOMAINS = ("source", "target")


# Why not `grain.IterDataset.filter`: a filter only answers keep-or-drop per
# record, so (1) what it drops cannot be counted into the records it keeps,
# and a count kept beside it would stay in the grain worker process that
# dropped the file, where the main process's totals cannot see it; (2) its
# guard against filtering everything is a ratio over windows of 1000 records
# whose ValueError names neither the data set nor a file. `_DropBadRecords`
# is the one loop that drops, names, counts into the next good record (which
# carries the count through the workers with the batch) and stops when every
# file is unusable; `TrainIterator` adds the counts up in the main process and
# keeps them in the checkpointed state.


class _DropBadRecords(grain.IterDataset):
  """Drops records the source could not read; names and counts them.

  Each good record gets `"skipped"`: how many bad ones were dropped right
  before it, so that the count reaches the main process with the batches.
  Each bad file is named in a warning the first time it comes round; later
  epochs count it again but do not repeat the warning.
  """

  def __init__(self, parent: grain.IterDataset, name: str, max_consecutive: int):
    super().__init__(parent)
    self._name, self._max_consecutive = name, max_consecutive

  def __iter__(self):
    return _DropBadRecordsIterator(self._parent.__iter__(), self._name,
                                   self._max_consecutive)

  def __str__(self) -> str:
    return f"DropBadRecords({self._name})"


class _DropBadRecordsIterator(grain.DatasetIterator):
  """See `_DropBadRecords`. The files already named are remembered per
  iterator, so per process: each grain worker process names a bad file once.
  """

  def __init__(self, parent, name, max_consecutive):
    super().__init__(parent)
    self._name, self._max_consecutive = name, max_consecutive
    self._named = set()

  def __next__(self):
    skipped = 0
    while True:
      record = next(self._parent)
      if not sources.is_bad(record):
        record = dict(record)
        record[_SKIPPED_KEY] = skipped
        return record
      skipped += 1
      relpath, why = record["relpath"], record[sources.ERROR_KEY]
      if relpath not in self._named:
        self._named.add(relpath)
        logging.warning("input pipeline: %s: skipped %r: %s (named once, "
                        "counted every epoch)", self._name, relpath, why)
      if skipped > self._max_consecutive:
        raise RuntimeError(
            f"input pipeline: {self._name}: {skipped} consecutive records could "
            f"not be read, the last {relpath!r}: {why}; is every file unusable?")

  def get_state(self):
    return self._parent.get_state()

  def set_state(self, state):
    self._parent.set_state(state)


class TrainIterator(grain.DatasetIterator):
  """The iterator `make_train_iterator` returns, in the main process.

  Takes the skip counts off the batches, adds them up per domain and logs a
  summary line whenever a domain completes an epoch.

  Attributes:
    skipped: {"source": int, "target": int}, bad records dropped so far on
      this host (restored with the iterator state).
  """

  def __init__(self, parent, names, epoch_sizes):
    super().__init__(parent)
    self._names, self._epoch_sizes = names, epoch_sizes
    self.skipped = {domain: 0 for domain in names}
    self._records_read = {domain: 0 for domain in names}

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self._parent))
    for domain in self._names:
      skipped = int(np.sum(batch.pop(f"{_SKIPPED_KEY}_{domain}")))
      before = self._records_read[domain] // self._epoch_sizes[domain]
      self.skipped[domain] += skipped
      self._records_read[domain] += skipped + len(batch[domain])
      if self._records_read[domain] // self._epoch_sizes[domain] > before:
        logging.info("input pipeline: %s epoch %d done; %s", domain,
                     before + 1, self.skipped_summary())
    return batch

  def skipped_summary(self) -> str:
    """One line: how many bad records each domain skipped so far."""
    counts = ", ".join(f"{domain} {self._names[domain]}: {self.skipped[domain]}"
                       for domain in self._names)
    return f"input pipeline: skipped bad records ({counts})"

  def get_state(self) -> dict[str, Any]:
    return {"pipeline": self._parent.get_state(), "skipped": dict(self.skipped),
            "records_read": dict(self._records_read)}

  def set_state(self, state: dict[str, Any]):
    self._parent.set_state(state["pipeline"])
    self.skipped = dict(state["skipped"])
    self._records_read = dict(state["records_read"])


class _HostSlots(grain.MapDataset):
  """This host's slots of every global batch, from the global record sequence.

  Global batch k is records [k*B, (k+1)*B) of the (shuffled, augmented)
  sequence, the same on every host; host i of P takes slots [i*b, (i+1)*b)
  of it (b = B / P). So the global batch at step k holds the same examples,
  in the same order, whatever the number of hosts — a 2x4-device run sees the
  data a 1x8-device run sees.
  """

  def __init__(self, parent: grain.MapDataset, host_batch: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    self._host_batch, self._index, self._count = host_batch, process_index, process_count

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def _global_index(self, index: int) -> int:
    step, slot = divmod(index, self._host_batch)
    return (step * self._count + self._index) * self._host_batch + slot

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global_index(index)]

  def __str__(self) -> str:
    return f"HostSlots(host {self._index} of {self._count}, {self._host_batch} per batch)"


def _domain_seed(seed: int, shuffle_seed: int, domain: int) -> int:
  return int(np.random.SeedSequence([seed, shuffle_seed, domain]).generate_state(1)[0])


def make_domain_dataset(
    spec: str, *, labels: str = "", with_labels: bool = False,
    preprocess_spec: str, seed: int, process_index: int = 0,
    process_count: int = 1, host_batch_size: int = 1, read_options: grain.ReadOptions | None = None,
    tfds_data_dir: str | None = None) -> tuple[grain.IterDataset, int]:
  """One domain's records, preprocessed, bad ones dropped, repeated forever.

  Args:
    spec: the source (see `sources.open_source`). A `prepared:DIR` source
      skips the leading ops of `preprocess_spec` it applied when written, and
      gives the batches of the source it was prepared from.
    labels: label folder for folder sources ("" for none).
    with_labels: keep "label"; the source must have labels.
    preprocess_spec: op string, see `preprocess.parse`.
    seed: shuffle and augmentation seed (the same on every host).
    process_index: this host's index.
    process_count: number of hosts; host i reads its `host_batch_size` slots of
      every global batch (see `_HostSlots`).
    host_batch_size: examples per batch on each host.
    read_options: grain threads and buffer for reading and preprocessing.
    tfds_data_dir: where tfds: sources live (None: TFDS's default).

  Returns:
    (dataset of {"image": [H, W, 3] (float32 after value_range),
     "label": [H, W] uint8 (with_labels), "relpath": str, "skipped": int},
     records per host and epoch).
  """
  source = sources.open_source(spec, labels=labels, tfds_data_dir=tfds_data_dir)
  if with_labels and not source.has_labels:
    raise ValueError(f"data source {spec!r} has no labels but its domain's labels are "
                     "asked for (data.with_labels, data.with_target_labels); give "
                     "data.source_labels / data.target_labels for folder sources")
  if len(source) < process_count:
    raise ValueError(f"data source {spec!r} has {len(source)} records, too few "
                     f"for {process_count} hosts")
  dataset = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  if source.has_labels and not with_labels:
    dataset = dataset.map(_drop_label)
  for op in _ops_still_to_apply(spec, source, preprocess_spec):
    if isinstance(op, grain.transforms.RandomMap):
      dataset = dataset.random_map(op)
    else:
      dataset = dataset.map(op)
  if process_count > 1:
    dataset = _HostSlots(dataset, host_batch_size, process_index, process_count)
  records = dataset.to_iter_dataset(read_options)
  return (_DropBadRecords(records, spec, max_consecutive=len(source)),
          max(1, len(source) // process_count))


class _AlreadyApplied(grain.transforms.Map):
  """Stands in for an op a prepared source applied when it was written.

  A pass-through rather than nothing: grain derives each random op's seed from
  its depth below `.seed()`, so keeping one map per prepared op gives the
  random ops (crops, flips) the seeds, and the pixels, of the on-the-fly path.
  """

  def __init__(self, op):
    self.op = op

  def map(self, record):
    return record

  def __repr__(self) -> str:
    return f"AlreadyApplied({self.op!r})"


def _ops_still_to_apply(spec: str, source, preprocess_spec: str) -> list:
  """The transforms of `preprocess_spec` for records of `source`.

  A prepared source (`prepared:DIR`, see `prepared.py`) already applied its
  ops; when `preprocess_spec` starts with them, they are not applied twice
  (`_AlreadyApplied`). When it does not, every op of `preprocess_spec` runs
  on the prepared images, with a warning: their pixels then differ from
  the on-the-fly path's.
  """
  ops = preprocess.parse(preprocess_spec)
  applied = getattr(source, "preprocess", None)
  if applied is None:
    return ops
  applied_ops = preprocess.parse(applied)
  if ops[:len(applied_ops)] == applied_ops:
    return [_AlreadyApplied(op) for op in applied_ops] + ops[len(applied_ops):]
  logging.warning("input pipeline: %s was prepared with %r, but data.preprocess %r "
                  "does not start with it: all of data.preprocess is applied on top of "
                  "the prepared images, which then differ from the original source's "
                  "(prepare it again with this data.preprocess to train on those)",
                  spec, applied, preprocess_spec)
  return ops


def _drop_label(record):
  return {key: value for key, value in record.items() if key != "label"}


def _batch_domain(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
  sizes = {record["image"].shape: record["relpath"] for record in records}
  if len(sizes) > 1:
    found = ", ".join(f"{relpath!r} {'x'.join(map(str, shape))}"
                      for shape, relpath in sizes.items())
    raise ValueError(f"input pipeline: images of one batch differ in size ({found}); "
                     "data.preprocess needs a resize(h,w) or a crop to one size")
  batch = {"image": np.stack([r["image"] for r in records]),
           _SKIPPED_KEY: np.array([r[_SKIPPED_KEY] for r in records], np.int32)}
  if "label" in records[0]:
    batch["label"] = np.stack([r["label"] for r in records])
  return batch


def _join_domains(pair) -> dict[str, np.ndarray]:
  source, target = pair
  batch = {"source": source["image"], "target": target["image"],
           f"{_SKIPPED_KEY}_source": source[_SKIPPED_KEY],
           f"{_SKIPPED_KEY}_target": target[_SKIPPED_KEY]}
  for domain, records in (("source", source), ("target", target)):
    if "label" in records:
      batch[f"{domain}_label"] = records["label"]
  return batch


def _warn_if_domains_overlap(source_spec: str, target_spec: str):
  """Warns when data.source and data.target read the same (or nested) data.

  Training still runs (a smoke test may want it), but a translator from a data
  set to itself learns nothing a user wants, and nothing else would say so.
  """
  source, target = sources.canonical_spec(source_spec), sources.canonical_spec(target_spec)
  if source == target:
    logging.warning("input pipeline: data.source %r and data.target %r are the same "
                    "data (%s): the model learns to translate it into itself",
                    source_spec, target_spec, source)
    return
  (source_kind, _, source_path), (target_kind, _, target_path) = (
      source.partition(":"), target.partition(":"))
  if (source_kind == target_kind == "folder" and
      os.path.commonpath([source_path, target_path]) in (source_path, target_path)):
    logging.warning("input pipeline: data.source %r and data.target %r overlap: one "
                    "folder is inside the other, so their images are in both "
                    "domains", source_spec, target_spec)


def make_train_iterator(data_config: ml_collections.ConfigDict, *, seed: int,
                        process_index: int | None = None,
                        process_count: int | None = None) -> TrainIterator:
  """The training input: unpaired source and target batches, forever.

  Args:
    data_config: `config.data` (configs/vsait.py): source, target,
      source_labels, with_labels, target_labels, with_target_labels,
      batch_size (global), preprocess,
      worker_count, read_threads, prefetch_buffer_size, shuffle_seed,
      tfds_data_dir. Warns when source and target are the same data or
      one folder holds the other.
    seed: the run's seed; shuffling and augmentation derive from it and
      data.shuffle_seed, separately for each domain.
    process_index: this host (default `jax.process_index()`).
    process_count: number of hosts (default `jax.process_count()`).

  Returns:
    A TrainIterator over {"source", "target"[, "source_label"][, "target_label"]} batches of
    batch_size // process_count examples (see the module docstring).
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if data_config.batch_size % process_count:
    raise ValueError(f"data.batch_size={data_config.batch_size} is not divisible "
                     f"by the {process_count} processes")
  host_batch = data_config.batch_size // process_count
  read_options = grain.ReadOptions(
      num_threads=data_config.read_threads,
      prefetch_buffer_size=data_config.prefetch_buffer_size)
  tfds_data_dir = data_config.tfds_data_dir or None
  batched, epoch_sizes = [], {}
  for index, domain in enumerate(DOMAINS):
    is_source = domain == "source"
    records, epoch_sizes[domain] = make_domain_dataset(
        data_config[domain],
        labels=data_config.source_labels if is_source else data_config.get("target_labels", ""),
        with_labels=(data_config.with_labels if is_source
                     else data_config.get("with_target_labels", False)),
        preprocess_spec=data_config.preprocess,
        seed=_domain_seed(seed, data_config.shuffle_seed, index),
        process_index=process_index, process_count=process_count,
        host_batch_size=host_batch, read_options=read_options, tfds_data_dir=tfds_data_dir)
    batched.append(records.batch(host_batch, drop_remainder=True,
                                 batch_fn=_batch_domain))
  _warn_if_domains_overlap(data_config.source, data_config.target)
  dataset = grain.experimental.ZipIterDataset(batched).map(_join_domains)
  if data_config.worker_count > 0:
    dataset = dataset.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=data_config.worker_count))
  names = {domain: data_config[domain] for domain in DOMAINS}
  return TrainIterator(iter(dataset), names, epoch_sizes)
