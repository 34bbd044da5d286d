"""Prepared training data: images (and labels) stored after the deterministic ops.

`python -m i2i_jax.prepare` (i2i_jax/prepare.py) decodes every image of a
source once, applies the leading deterministic ops of a preprocessing string
(`resize(256,512)`, `center_crop(h,w)`; see `preprocess.split_preparable`) and
stores the uint8 result; training reads it back as the source
`prepared:DIR` and applies only the remaining (random) ops. A 1914x1052 PNG
costs ~50 ms of decode and resize per image on one core; the training input
from a prepared 256x512 record ~3 ms (benchmarks/RESULTS.md, "Prepared training
data").

A prepared folder holds

  prepared.json                 the header (`read_header`): what was applied to
                                which source, the codec, the record count, the
                                shards, the inputs skipped and why
  shard-00000-of-00004.array_record ...
                                ArrayRecord files, one record per image in the
                                source's order (bad inputs left out), each
                                readable alone (group_size 1: random access)
  shard-*.json                  a finished shard's record count and skipped
                                inputs (written after its .array_record; a
                                shard without one is written again on a rerun)

A record is a msgpack map {"relpath": str, "shape": [H, W], "image": the
[H, W, 3] uint8 pixels in the header's codec, "label": the [H, W] uint8 label
map, zstd-compressed (with labels only)}. Every codec is lossless: a record
decodes to exactly the pixels the on-the-fly path computes.
"""

import json
import os
from typing import Any

import fpng
import grain
import imagecodecs
import msgpack
import numpy as np

HEADER = "prepared.json"
FORMAT = "i2i_jax prepared data"
VERSION = 1
# group_size:1 puts every record in its own chunk, so reading one record
# decompresses nothing else; the codecs below do the compression.
WRITER_OPTIONS = "group_size:1,uncompressed"


def _raw_decode(data: bytes, shape) -> np.ndarray:
  return np.frombuffer(data, np.uint8).reshape(*shape, 3)


def _zstd_decode(data: bytes, shape) -> np.ndarray:
  return _raw_decode(imagecodecs.zstd_decode(data), shape)


# name -> (encode [H, W, 3] uint8 -> bytes, decode (bytes, (H, W)) -> [H, W, 3] uint8).
# Per 256x512 record of toy_streets "real" frames (noisy, like photographs), read and
# decoded (benchmarks/input_pipeline.py --tables=codecs; benchmarks/RESULTS.md): qoi
# 0.90 ms, 229 KiB; png (fpng encode, libspng decode) 1.88 ms, 251 KiB; zstd 0.39 ms,
# 344 KiB; raw 0.12 ms, 389 KiB. qoi: within ~1 ms of raw for 0.6 of its disk and
# page cache (GTA5's 24,966 frames: 5.5 GB against 9.3 GB).
CODECS = {
    "qoi": (imagecodecs.qoi_encode, lambda data, shape: imagecodecs.qoi_decode(data)),
    "png": (fpng.from_ndarray, lambda data, shape: imagecodecs.spng_decode(data)),
    "zstd": (lambda image: imagecodecs.zstd_encode(image.tobytes(), level=1), _zstd_decode),
    "raw": (lambda image: image.tobytes(), _raw_decode),
}
DEFAULT_CODEC = "qoi"


def encode_record(record: dict[str, Any], codec: str) -> bytes:
  """The stored bytes of a good record {"image": [H, W, 3] uint8, "label"?, "relpath"}."""
  image = np.ascontiguousarray(record["image"])
  fields = {"relpath": record["relpath"], "shape": list(image.shape[:2]),
            "image": CODECS[codec][0](image)}
  if "label" in record:
    fields["label"] = imagecodecs.zstd_encode(
        np.ascontiguousarray(record["label"]).tobytes(), level=1)
  return msgpack.packb(fields)


def decode_record(data: bytes, codec: str) -> dict[str, Any]:
  """The record `encode_record` stored: {"image", "label"?, "relpath"}."""
  fields = msgpack.unpackb(data)
  shape = tuple(fields["shape"])
  record = {"image": CODECS[codec][1](fields["image"], shape), "relpath": fields["relpath"]}
  if "label" in fields:
    record["label"] = np.frombuffer(imagecodecs.zstd_decode(fields["label"]),
                                    np.uint8).reshape(shape)
  return record


def shard_name(index: int, count: int) -> str:
  return f"shard-{index:05d}-of-{count:05d}.array_record"


def read_header(root: str) -> dict[str, Any]:
  """The header of prepared folder `root` (see the module docstring).

  Keys: format, version, source (canonical spec), labels (folder or ""),
  preprocess (the ops applied, an op string), codec, shard_size, num_inputs,
  has_labels, complete; once complete also count (records stored), shards
  (file names) and skipped ([{"relpath", "error"}]).

  Raises:
    FileNotFoundError: no folder or no header, naming the path.
    ValueError: the header is not a prepared-data header of this version, or
      the preparation did not finish.
  """
  path = os.path.join(root, HEADER)
  if not os.path.isdir(root):
    raise FileNotFoundError(f"prepared source: folder {root!r} does not exist")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"prepared source: {path} does not exist; write the folder "
                            "with python -m i2i_jax.prepare")
  try:
    with open(path) as f:
      header = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"prepared source: cannot read {path}: {e}") from e
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise ValueError(f"prepared source: {path} is not an i2i_jax prepared-data header")
  if header.get("version") != VERSION:
    raise ValueError(f"prepared source: {path} has version {header.get('version')}, "
                     f"this code reads version {VERSION}; prepare the data again")
  return header


class PreparedSource:
  """A folder written by `python -m i2i_jax.prepare`, read with random access.

  Records are those of the source it was prepared from (same order and
  relpaths, bad inputs left out), with `preprocess` already applied.

  Attributes:
    root: the folder.
    header: its `read_header`.
    preprocess: the op string already applied to every image.
    has_labels: whether records carry "label".
  """

  def __init__(self, root: str):
    header = read_header(root)
    if not header.get("complete"):
      raise ValueError(f"prepared source: {root!r} is incomplete (its preparation "
                       "stopped); rerun the same python -m i2i_jax.prepare command to "
                       "finish it")
    if not header["count"]:
      raise ValueError(f"prepared source: {root!r} holds no records (every input "
                       "was skipped; see the skipped list in its prepared.json)")
    self.root, self.header = root, header
    self.preprocess, self.has_labels = header["preprocess"], header["has_labels"]
    self._codec = header["codec"]
    self._records = grain.sources.ArrayRecordDataSource(
        [os.path.join(root, name) for name in header["shards"]])
    if len(self._records) != header["count"]:
      raise ValueError(f"prepared source: {root!r} has {len(self._records)} records in "
                       f"its shards, its header says {header['count']}")

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return decode_record(self._records[index], self._codec)

  def __repr__(self) -> str:
    return (f"PreparedSource({self.root!r}, {self.header['source']!r}, "
            f"preprocess={self.preprocess!r}, n={len(self)})")
