"""Downstream gain: does a segmenter trained on F(X) beat one trained on X on real data?"""

from collections.abc import Sequence

from absl import logging
import numpy as np

from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.metrics import semantic


class DownstreamGainEvaluator:
  """Trains the same small segmenter (same steps, same seed) on X and on F(X),
  both with X's labels, and tests both on Y's labelled split.

  The model trained on X does not depend on the translation, so it is trained
  once (on the first `run`) and reused.
  """

  def __init__(self, source_images: Sequence[np.ndarray], source_labels: Sequence[np.ndarray],
               target_images: Sequence[np.ndarray], target_labels: Sequence[np.ndarray], *,
               class_names: Sequence[str] = semantic.CITYSCAPES_CLASSES, steps: int = 300,
               batch_size: int = 8, image_size: tuple[int, int] | None = None, seed: int = 0,
               progress: bool = False):
    """Args:
      source_images, source_labels: X and its [H, W] uint8 label maps.
      target_images, target_labels: Y's labelled split (the test set).
      class_names: one per class id.
      steps, batch_size, image_size, seed: passed to `segmenter.train_segmenter`.
      progress: tqdm bars over training and testing (ETA).
    """
    self.source_images = source_images
    self.source_labels = source_labels
    self.target_images = target_images
    self.target_labels = target_labels
    self.class_names = tuple(class_names)
    self.train_kwargs = dict(steps=steps, batch_size=batch_size, image_size=image_size, seed=seed,
                             progress=progress)
    self.progress = progress
    self._source_miou: float | None = None

  def _test_miou(self, segment_fn) -> float:
    predicted = segmenter_lib.segment_all(
        segment_fn, self.target_images, progress="downstream: segmenting Y" if self.progress else "")
    return semantic.SemanticConsistencyEvaluator(self.target_labels, self.class_names).run(
        predicted)["mIoU"]

  def _train(self, images) -> segmenter_lib.FlaxSegmenter:
    return segmenter_lib.train_segmenter(images, self.source_labels, len(self.class_names),
                                         **self.train_kwargs)

  def run(self, translated_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns {"mIoU_trained_on_X", "mIoU_trained_on_F(X)", "mIoU_gain"} (tested on Y)."""
    if self._source_miou is None:
      logging.info("downstream: the segmenter trained on X (1 of 2)")
      self._source_miou = self._test_miou(self._train(self.source_images))
    logging.info("downstream: the segmenter trained on F(X) (2 of 2)")
    translated_miou = self._test_miou(self._train(translated_images))
    return {"mIoU_trained_on_X": self._source_miou,
            "mIoU_trained_on_F(X)": translated_miou,
            "mIoU_gain": translated_miou - self._source_miou}
