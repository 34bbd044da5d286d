"""Evaluators named in `config.evals`, run inside training and by `i2i_jax.evaluate`.

As in big_vision, a run declares its evaluators in the config,

  config.evals.detail = dict(type="detail", every_steps=500,
                             source="toy_streets:sim_detail:val",
                             ideal="toy_streets:real_mismatch:val",
                             num_images=8, height=256, width=512)

and `build(config.evals)` makes each from the registry (`REGISTRY[type]`),
holding its fixed evaluation images (rendered once). Every evaluator has

  run(translate_fn) -> dict[str, float]   translate X with the current generator and score it
  score(translated_images, predicted=None) -> dict[str, float]   score F(X) already translated

and may have `picture() -> [H, W, 3] uint8 | None`, a captioned picture of the
last `run` that training writes to TensorBoard and WORKDIR/samples/ (the
detail evaluator's: X | F(X) | ideal scenes at the evaluation size above the
crops of the worst-kept small objects).

where translate_fn maps [N, H, W, 3] float32 in [-1, 1] to the same. Training
logs the numbers as "eval/<name>/<metric>"; `evaluate` builds the same classes
from its own inputs and calls `score` with the segmenter's predictions, which
it computes once per image set for all sections.

Types (the keys each block takes besides `type` and `every_steps` are the
keyword arguments of its `from_config`):
  detail  segmenter-free detail retention (contrast ratio) and light-state
          accuracy of the toy scenes' poles, lights and signs (metrics/detail.py),
          beside the ideal translation's with `ideal`.
  flips   the class flip rates of seg(F(X)) against X's labels and, with `ideal`,
          their excess over the ideal translation's (metrics/flips.py); F(X) is
          segmented once per run by the `segmenter` checkpoint.
"""

import inspect
from collections.abc import Callable, Sequence

from etils import epath
import ml_collections
import numpy as np

from i2i_jax.data import sources
from i2i_jax.metrics import detail
from i2i_jax.metrics import detail_pictures
from i2i_jax.metrics import flips
from i2i_jax.metrics import instances as instances_lib
from i2i_jax.metrics import segmenter as segmenter_lib

TranslateFn = Callable[[np.ndarray], np.ndarray]


def translate_images(translate_fn: TranslateFn, images: Sequence[np.ndarray],
                     batch_size: int) -> list[np.ndarray]:
  """F(X) for a list of images, in batches of `batch_size` (the last one padded: one shape).

  Args:
    translate_fn: [B, H, W, 3] float32 in [-1, 1] -> the same.
    images: X, [H, W, 3] uint8 each, all of one size.
  Returns:
    F(X), [H, W, 3] uint8 each.
  """
  translated = []
  for start in range(0, len(images), batch_size):
    batch = np.stack(images[start:start + batch_size])
    count = len(batch)
    batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, axis=0)])
    output = np.asarray(translate_fn(batch.astype(np.float32) / 127.5 - 1.0))[:count]
    translated.extend(np.clip(np.round((output + 1.0) * 127.5), 0, 255).astype(np.uint8))
  return translated


def _toy_streets(key: str, spec: str, height: int, width: int) -> sources.ToyStreetsSource:
  """The toy_streets source `spec` rendered at height x width; ValueError naming `key` otherwise."""
  try:
    source = sources.open_source(spec)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"{key}={spec!r}: {e}") from e
  if not isinstance(source, sources.ToyStreetsSource):
    raise ValueError(f"{key}={spec!r}: expected a toy_streets:STYLE[:SPLIT] source (the "
                     "evaluators need the scenes' instances and labels)")
  return sources.ToyStreetsSource(source.style, source.split, height, width)


def _images(key: str, source, num_images: int) -> list[np.ndarray]:
  """The first `num_images` images of `source`; ValueError naming `key` when it has fewer."""
  if not 1 <= num_images <= len(source):
    raise ValueError(f"{key}.num_images={num_images}: expected 1 to {len(source)} (the images "
                     "of the source)")
  return [source[index]["image"] for index in range(num_images)]


class DetailEvaluator:
  """Detail retention of X's poles, lights and signs in F(X) (metrics/detail.py)."""

  def __init__(self, source_images: Sequence[np.ndarray], source_instances: Sequence, *,
               ideal_images: Sequence[np.ndarray] | None = None,
               ideal_predicted: Sequence[np.ndarray] | None = None, batch_size: int = 4,
               out_dir: epath.PathLike | None = None, source_names: Sequence[str] | None = None):
    """Args:
      source_images: X, [H, W, 3] uint8 each.
      source_instances: X's instances, [index] -> (instance map, instances) (instances.py).
      ideal_images: the ideal translation of each X, or None; scored once, here.
      ideal_predicted: seg of the ideal translation, or None.
      batch_size: images per call of `run`'s translate_fn.
      out_dir: where `score` draws detail_crops.png (any epath); None draws none.
      source_names: X's file names for the picture's captions; None names images by index.
    Raises:
      ValueError: an instance map of another size than its image.
    """
    self.source_images = source_images
    self.metric = detail.DetailRetentionEvaluator(source_images, source_instances)
    self.batch_size = batch_size
    self.ideal_images = ideal_images
    self.out_dir = out_dir
    self.source_names = source_names
    self.pictures: dict[str, str] = {}
    self.last_translated: Sequence[np.ndarray] | None = None
    self.ideal_metrics = {}
    if ideal_images is not None:
      self.ideal_metrics = {f"ideal/{name}": value for name, value in self.metric.run(
          ideal_images, ideal_predicted).items()}

  @classmethod
  def from_config(cls, key: str, *, source: str, ideal: str = "", num_images: int = 8,
                  height: int = 256, width: int = 512, batch_size: int = 4) -> "DetailEvaluator":
    """The first `num_images` scenes of the toy_streets `source` (and `ideal`) at height x width."""
    source_data = _toy_streets(f"{key}.source", source, height, width)
    instances = instances_lib.ToyStreetsInstances(source_data)
    source_images = _images(key, source_data, num_images)
    ideal_images = None
    if ideal:
      ideal_images = _images(key, _toy_streets(f"{key}.ideal", ideal, height, width), num_images)
    return cls(source_images, [instances[i] for i in range(num_images)],
               ideal_images=ideal_images, batch_size=batch_size)

  def score(self, translated_images: Sequence[np.ndarray],
            predicted: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """`detail.DetailRetentionEvaluator.run`'s metrics of F(X) ([H, W, 3] uint8 each), then the ideal's.

    With `out_dir`, also draws the worst-kept objects (`detail_pictures`) and
    sets `pictures` to {file name: caption}.
    """
    metrics = self.metric.run(translated_images, predicted)
    self.last_translated = translated_images
    if self.out_dir:
      self.pictures = detail_pictures.write_detail_crops(
          self.out_dir, self.metric.records, self.source_images, translated_images,
          self.ideal_images, self.source_names)
    return {**metrics, **self.ideal_metrics}

  def run(self, translate_fn: TranslateFn) -> dict[str, float]:
    return self.score(translate_images(translate_fn, self.source_images, self.batch_size))

  def picture(self, num_scenes: int = 2, num_crops: int = 6) -> np.ndarray | None:
    """The last scored F(X), captioned: `num_scenes` scenes as X | F(X) | ideal, then crops.

    Returns:
      [H, W, 3] uint8, or None before the first `score`.
    """
    if self.last_translated is None:
      return None
    return detail_pictures.scenes_and_crops(
        self.metric.records, self.source_images, self.last_translated, self.ideal_images,
        num_scenes=num_scenes, num_crops=num_crops)


class FlipsEvaluator:
  """Class flips of seg(F(X)) against X's references, and their excess over the ideal's."""

  def __init__(self, source_images: Sequence[np.ndarray], references: Sequence[np.ndarray], *,
               segment_fn=None, ideal_predicted: Sequence[np.ndarray] | None = None,
               batch_size: int = 4, **flip_options):
    """Args:
      source_images: X, [H, W, 3] uint8 each.
      references: X's classes, [H, W] uint8 each (labels or seg(X)).
      segment_fn: [B, H, W, 3] uint8 -> [B, H, W] class ids, for `run`; None
        where only `score` is called with predictions.
      ideal_predicted: seg of the ideal translation of each X, or None.
      batch_size: images per call of translate_fn and segment_fn.
      **flip_options: `flips.FlipEvaluator`'s (out_dir, worst_k, reference_name, ...).
    """
    self.source_images = source_images
    self.metric = flips.FlipEvaluator(source_images, references, **flip_options)
    self.segment_fn = segment_fn
    self.ideal_predicted = ideal_predicted
    self.batch_size = batch_size

  @classmethod
  def from_config(cls, key: str, *, source: str, segmenter: str, ideal: str = "",
                  num_images: int = 8, height: int = 256, width: int = 512,
                  batch_size: int = 4) -> "FlipsEvaluator":
    """The first `num_images` toy_streets scenes with their labels; the `segmenter` checkpoint
    (a FlaxSegmenter folder or .onnx file) segments the ideal translation here, once."""
    source_data = _toy_streets(f"{key}.source", source, height, width)
    try:
      segment_fn = segmenter_lib.load_segmenter(segmenter)
    except (FileNotFoundError, ImportError, OSError, ValueError) as e:
      raise ValueError(f"{key}.segmenter={segmenter!r}: {e}") from e
    source_images = _images(key, source_data, num_images)
    ideal_predicted = None
    if ideal:
      ideal_images = _images(key, _toy_streets(f"{key}.ideal", ideal, height, width), num_images)
      ideal_predicted = segmenter_lib.segment_all(segment_fn, ideal_images, batch_size=batch_size)
    return cls(source_images, [source_data[index]["label"] for index in range(num_images)],
               segment_fn=segment_fn, ideal_predicted=ideal_predicted, batch_size=batch_size)

  @property
  def pictures(self) -> dict[str, str]:
    """The pictures the last `score` wrote (with out_dir) and their captions."""
    return self.metric.pictures

  def score(self, translated_images: Sequence[np.ndarray],
            predicted: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Flip metrics of F(X) (`flips.FlipEvaluator.run`); F(X) is segmented here unless given."""
    if predicted is None:
      predicted = segmenter_lib.segment_all(self.segment_fn, translated_images,
                                            batch_size=self.batch_size)
    return self.metric.run(translated_images, predicted, self.ideal_predicted)

  def run(self, translate_fn: TranslateFn) -> dict[str, float]:
    return self.score(translate_images(translate_fn, self.source_images, self.batch_size))


REGISTRY = {"detail": DetailEvaluator, "flips": FlipsEvaluator}


def build(evals: ml_collections.ConfigDict) -> dict[str, tuple[int, object]]:
  """The evaluators of `config.evals`: name -> (every_steps, evaluator).

  Raises:
    ValueError: naming the key (config.evals.<name>.<key>) of an unknown type,
      an unknown or missing setting, or data that cannot be had.
  """
  built = {}
  for name, block in evals.items():
    key = f"config.evals.{name}"
    if not isinstance(block, ml_collections.ConfigDict):
      raise ValueError(f"{key}={block!r}: expected dict(type=..., every_steps=..., ...)")
    settings = block.to_dict()
    kind = settings.pop("type", None)
    if kind not in REGISTRY:
      raise ValueError(f"{key}.type={kind!r}: unknown evaluator type; expected one of "
                       f"{', '.join(REGISTRY)}")
    every_steps = settings.pop("every_steps", None)
    if not isinstance(every_steps, int) or every_steps < 1:
      raise ValueError(f"{key}.every_steps={every_steps!r}: expected a positive integer")
    parameters = inspect.signature(REGISTRY[kind].from_config).parameters
    accepted = [p for p in parameters if p not in ("cls", "key")]
    for setting in settings:
      if setting not in accepted:
        raise ValueError(f"{key}.{setting}: not a setting of a {kind!r} evaluator; it takes "
                         f"type, every_steps, {', '.join(accepted)}")
    missing = [p for p in accepted if parameters[p].default is inspect.Parameter.empty
               and p not in settings]
    if missing:
      raise ValueError(f"{key}: a {kind!r} evaluator needs {', '.join(missing)}")
    built[name] = (every_steps, REGISTRY[kind].from_config(key, **settings))
  return built
