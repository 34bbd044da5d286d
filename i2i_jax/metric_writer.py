"""Training metrics: TensorBoard events, a JSON-lines file every later tool reads, and the log.

WORKDIR/metrics.jsonl holds one line per `MetricWriter.write_scalars` call:

  {"step": 200, "wall_time": 1767225600.25, "g_total": 3.1, "d_total": 0.9, ...}

`step` is the training step (int), `wall_time` unix seconds (float), then every
scalar of that call as a float; a NaN or infinite value is written as null, so
that each line stays valid JSON (the log line and TensorBoard keep the value).
A resumed run continues the file, so a step may appear twice (the run stopped
after logging it and resumed from an earlier checkpoint); readers take the
later line. `read_metrics` is the reader; it skips a torn last line, which a
killed run can leave.

Local (and mounted) workdirs: the file is opened for appending and flushed
after every line. Object stores (gs://, s3://) cannot append: there the writer
copies the file's lines into a new object and keeps that handle open, so the
object, old lines and new, is replaced when the writer is closed (at the end of
training, after a preemption or Ctrl-C); a run killed without closing leaves
the file as its previous session closed it.
"""

import json
import math
import re
import time

from absl import logging
from etils import epath
import jax
import numpy as np
import tensorboardX

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _appends_in_place(path: epath.Path) -> bool:
  """Whether `path` is on a file system (not an object store such as gs:// or s3://)."""
  return "://" not in str(path)


def _json_value(value: float) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def tensorboard_tag(name: str) -> str:
  """`name` with the characters TensorBoard does not allow in a tag made "_".

  "eval/detail/retention/traffic light" -> ".../traffic_light": the rule
  tensorboardX applies itself, but silently (it logs a line per value);
  metrics.jsonl keeps the names as given.
  """
  return re.sub(r"[^-/\w.]", "_", name)


class MetricWriter:
  """Scalars, images and texts to TensorBoard and metrics.jsonl (process 0), and the log.

  tensorboardX rather than clu.metric_writers: every clu writer module imports
  TensorFlow (through `clu.metric_writers.__init__`), which this project does
  not otherwise need. tensorboardX writes the same event files, on a
  background thread, from numpy and protobuf alone.
  """

  def __init__(self, workdir: epath.Path):
    """Opens WORKDIR/tensorboard/ and WORKDIR/metrics.jsonl (continuing both on a resume)."""
    self._tensorboard = None
    self._metrics_file = None
    if jax.process_index() != 0:
      return
    workdir = epath.Path(workdir)
    self._tensorboard = tensorboardX.SummaryWriter(logdir=str(workdir / TENSORBOARD_DIR))
    path = workdir / METRICS_FILE
    existing = path.read_bytes() if path.exists() else b""
    complete = existing[:existing.rfind(b"\n") + 1]  # without a torn last line
    if _appends_in_place(path):
      self._metrics_file = path.open("ab")
      if len(complete) < len(existing):
        self._metrics_file.truncate(len(complete))
    else:
      self._metrics_file = path.open("wb")
      self._metrics_file.write(complete)

  def write_scalars(self, step: int, scalars: dict[str, float]) -> None:
    """One log line, one TensorBoard value per scalar and one line of metrics.jsonl."""
    logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))
    if self._tensorboard is None:
      return
    for name, value in scalars.items():
      self._tensorboard.add_scalar(tensorboard_tag(name), value, global_step=step)
    record = {"step": int(step), "wall_time": time.time(),
              **{name: _json_value(value) for name, value in scalars.items()}}
    self._metrics_file.write((json.dumps(record, allow_nan=False) + "\n").encode())
    self._metrics_file.flush()

  def write_images(self, step: int, images: dict[str, np.ndarray]) -> None:
    """images: {name: [H, W, 3] float in [0, 1]}."""
    if self._tensorboard is not None:
      for name, image in images.items():
        self._tensorboard.add_image(tensorboard_tag(name), image, global_step=step,
                                    dataformats="HWC")

  def write_texts(self, step: int, texts: dict[str, str]) -> None:
    if self._tensorboard is not None:
      for name, text in texts.items():
        self._tensorboard.add_text(tensorboard_tag(name), text, global_step=step)

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()
      self._metrics_file.close()


def read_metrics(path: epath.PathLike) -> list[dict[str, float | int | None]]:
  """The records of a metrics.jsonl file, in file order; [] when there is none.

  A last line without its newline (a run killed while writing it) is skipped.

  Raises:
    ValueError: a complete line is not a JSON object with a "step" (names the file and line).
  """
  path = epath.Path(path)
  if not path.exists():
    return []
  lines = path.read_bytes().split(b"\n")[:-1]  # the part after the last newline is torn or empty
  records = []
  for number, line in enumerate(lines, start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
    if not isinstance(record, dict) or "step" not in record:
      raise ValueError(f"{path}, line {number}: not a metrics record with a step")
    records.append(record)
  return records
