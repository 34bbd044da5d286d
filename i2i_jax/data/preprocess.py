"""Preprocessing ops named in the config, big_vision style, as grain transforms.

`parse("resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)")`
returns one grain transform per op, applied in order to records
{"image": [H, W, 3], "label": [H, W] (optional), ...}. Geometric ops move the
label with the image (nearest neighbour, same crop and flip); colour ops leave
it alone. Records marked bad by the source (`sources.is_bad`) pass through
untouched, so that the pipeline can skip and count them; a crop op marks an
image smaller than its crop bad in the same way.

Ops:
  resize(h, w)        bilinear resize of the image to h x w (nearest for labels).
  random_crop(h, w)   a uniformly placed h x w crop (smaller images: bad).
  center_crop(h, w)   the central h x w crop (smaller images: bad).
  flip_lr(p=0.5)      horizontal flip with probability p.
  value_range(lo, hi) uint8 [0, 255] -> float32 [lo, hi].

`split_preparable` splits off the leading ops that `python -m i2i_jax.prepare`
may apply once and store (deterministic ops that keep a uint8 image: resize,
center_crop); training on a `prepared:` source applies only the rest.

Register a new op with `@register("name")` on a `MapOp` (define `apply`) or
`RandomMapOp` (define `apply_random`) subclass whose constructor takes the
op's arguments; the base passes bad records through, so an op only ever sees
records with an image.
"""

import abc
import ast
import dataclasses
from typing import Any, ClassVar

import grain
import numpy as np
from PIL import Image

from i2i_jax.data import sources

_OPS: dict[str, type] = {}


class MapOp(grain.transforms.Map):
  """A deterministic op: `apply` to good records, bad ones pass through.

  `preparable`: whether the op's output is a uint8 image that
  `python -m i2i_jax.prepare` may store (False for value_range, whose float32
  output is 4x larger and cheap to compute).
  """

  preparable: ClassVar[bool] = True

  def map(self, record: dict[str, Any]) -> dict[str, Any]:
    return record if sources.is_bad(record) else self.apply(record)

  @abc.abstractmethod
  def apply(self, record: dict[str, Any]) -> dict[str, Any]:
    """The op on a record with an image; may return a bad record instead."""


class RandomMapOp(grain.transforms.RandomMap):
  """A random op: `apply_random` to good records, bad ones pass through."""

  def random_map(self, record: dict[str, Any],
                 rng: np.random.Generator) -> dict[str, Any]:
    return record if sources.is_bad(record) else self.apply_random(record, rng)

  @abc.abstractmethod
  def apply_random(self, record: dict[str, Any],
                   rng: np.random.Generator) -> dict[str, Any]:
    """The op on a record with an image; may return a bad record instead."""


def register(name: str):
  """Class decorator adding a preprocessing op (a MapOp or RandomMapOp) under `name`."""
  def wrap(cls):
    if not issubclass(cls, (MapOp, RandomMapOp)):
      raise TypeError(f"preprocess op {name!r}: {cls.__name__} must subclass "
                      "MapOp or RandomMapOp, which pass bad records through")
    _OPS[name] = cls
    return cls
  return wrap


def parse(spec: str) -> list[MapOp | RandomMapOp]:
  """Builds the transforms of an op string ("op(args)|op|...").

  Raises:
    ValueError: naming the op that is unknown or whose arguments do not parse.
  """
  ops = []
  for text in filter(None, (part.strip() for part in spec.split("|"))):
    name, _, args = text.partition("(")
    if name not in _OPS:
      raise ValueError(f"preprocess op {name!r} in {spec!r} is unknown; "
                       f"known: {sorted(_OPS)}")
    try:
      values = ast.literal_eval(f"({args.rstrip(')')},)") if args else ()
      ops.append(_OPS[name](*values))
    except (SyntaxError, ValueError, TypeError) as e:
      raise ValueError(f"preprocess op {text!r} in {spec!r}: {e}") from e
  return ops


def split_preparable(spec: str) -> tuple[str, str]:
  """(the leading preparable ops of `spec`, the rest), as op strings.

  "resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)" ->
  ("resize(256,512)", "random_crop(256,256)|flip_lr|value_range(-1,1)"):
  the ops up to the first random or non-preparable one (`MapOp.preparable`).

  Raises:
    ValueError: as `parse`.
  """
  parts = [part.strip() for part in spec.split("|") if part.strip()]
  ops = parse(spec)
  count = 0
  while count < len(ops) and isinstance(ops[count], MapOp) and ops[count].preparable:
    count += 1
  return "|".join(parts[:count]), "|".join(parts[count:])


def _resize(array: np.ndarray, height: int, width: int, resample) -> np.ndarray:
  if array.shape[:2] == (height, width):
    return array
  return np.asarray(Image.fromarray(array).resize((width, height), resample))


def _too_small(record, height, width, op) -> dict[str, Any] | None:
  """A bad record if the image cannot give a height x width crop, else None.

  One small file among thousands is a bad input like a corrupt one: the
  pipeline skips and counts it rather than stopping training.
  """
  h, w = record["image"].shape[:2]
  if h >= height and w >= width:
    return None
  return sources.bad_record(
      record["relpath"], f"image is {h}x{w} (HxW), smaller than {op}({height},"
      f"{width}); resize it, or put resize(h,w) before the crop")


@register("resize")
@dataclasses.dataclass(frozen=True)
class Resize(MapOp):
  """Resizes image (bilinear) and label (nearest) to height x width."""
  height: int
  width: int

  def apply(self, record: dict[str, Any]) -> dict[str, Any]:
    record = dict(record)
    record["image"] = _resize(record["image"], self.height, self.width,
                              Image.BILINEAR)
    if "label" in record:
      record["label"] = _resize(record["label"], self.height, self.width,
                                Image.NEAREST)
    return record


@register("random_crop")
@dataclasses.dataclass(frozen=True)
class RandomCrop(RandomMapOp):
  """Crops image and label to height x width at a uniformly random place."""
  height: int
  width: int

  def apply_random(self, record: dict[str, Any], rng: np.random.Generator):
    too_small = _too_small(record, self.height, self.width, "random_crop")
    if too_small:
      return too_small
    h, w = record["image"].shape[:2]
    top = rng.integers(h - self.height + 1)
    left = rng.integers(w - self.width + 1)
    return _crop(record, top, left, self.height, self.width)


@register("center_crop")
@dataclasses.dataclass(frozen=True)
class CenterCrop(MapOp):
  """Crops image and label to their central height x width."""
  height: int
  width: int

  def apply(self, record: dict[str, Any]) -> dict[str, Any]:
    too_small = _too_small(record, self.height, self.width, "center_crop")
    if too_small:
      return too_small
    h, w = record["image"].shape[:2]
    return _crop(record, (h - self.height) // 2, (w - self.width) // 2,
                 self.height, self.width)


def _crop(record, top, left, height, width):
  record = dict(record)
  for key in ("image", "label"):
    if key in record:
      record[key] = record[key][top:top + height, left:left + width]
  return record


@register("flip_lr")
@dataclasses.dataclass(frozen=True)
class FlipLR(RandomMapOp):
  """Mirrors image and label left-right with probability p."""
  p: float = 0.5

  def apply_random(self, record: dict[str, Any], rng: np.random.Generator):
    if rng.random() >= self.p:
      return record
    record = dict(record)
    for key in ("image", "label"):
      if key in record:
        record[key] = record[key][:, ::-1]
    return record


@register("value_range")
@dataclasses.dataclass(frozen=True)
class ValueRange(MapOp):
  """Maps the uint8 image [0, 255] to float32 [low, high]."""
  preparable: ClassVar[bool] = False
  low: float
  high: float

  def apply(self, record: dict[str, Any]) -> dict[str, Any]:
    record = dict(record)
    scale = (self.high - self.low) / 255.0
    record["image"] = record["image"].astype(np.float32) * scale + self.low
    return record
