"""Semantic consistency: a segmenter run on F(X), scored against X's labels."""

from collections.abc import Callable, Sequence

import numpy as np
import tqdm

from i2i_jax.metrics import segmenter as segmenter_lib

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
    "bus", "train", "motorcycle", "bicycle")

SegmentFn = Callable[[np.ndarray], np.ndarray]  # [B, H, W, 3] uint8 -> [B, H, W] int32


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
  """Pixel counts [K, K]: row = reference class, column = predicted class.

  Args:
    reference: [H, W] integer class ids; 255 (and anything >= K) is ignored.
    predicted: [H, W] integer class ids; predictions >= K are ignored too.
    num_classes: K.

  Returns:
    [K, K] int64 counts.
  """
  if reference.shape != predicted.shape:
    raise ValueError(f"Reference {reference.shape} and prediction {predicted.shape} differ in shape.")
  reference = reference.astype(np.int64).ravel()
  predicted = predicted.astype(np.int64).ravel()
  valid = (reference < num_classes) & (predicted < num_classes) & (predicted >= 0)
  counts = np.bincount(reference[valid] * num_classes + predicted[valid],
                       minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def scores_from_confusion(confusion: np.ndarray,
                          class_names: Sequence[str]) -> dict[str, float]:
  """mIoU, pixel accuracy and per-class IoU from a [K, K] confusion matrix.

  Classes absent from both the reference and the prediction have no IoU and
  are left out of the mean (as in the Cityscapes protocol).
  """
  true_positives = np.diag(confusion).astype(np.float64)
  union = confusion.sum(axis=0) + confusion.sum(axis=1) - true_positives
  present = union > 0
  iou = np.where(present, true_positives / np.maximum(union, 1), np.nan)
  scores = {
      "mIoU": float(np.nanmean(iou)) if present.any() else float("nan"),
      "pixel_accuracy": float(true_positives.sum() / max(confusion.sum(), 1)),
  }
  for name, value, is_present in zip(class_names, iou, present):
    if is_present:
      scores[f"IoU/{name}"] = float(value)
  return scores


class SemanticConsistencyEvaluator:
  """mIoU, pixel accuracy and per-class IoU of seg(F(X)) against X's labels."""

  def __init__(self, segment_fn: SegmentFn, source_labels: Sequence[np.ndarray],
               class_names: Sequence[str] = CITYSCAPES_CLASSES, progress: bool = False):
    """Args:
      segment_fn: [B, H, W, 3] uint8 -> [B, H, W] int32 (see `segmenter.py`).
      source_labels: sequence of [H, W] uint8 label maps of X (255 = ignore).
      class_names: one name per class id.
      progress: a tqdm bar over the images (ETA).
    """
    self.segment_fn = segment_fn
    self.source_labels = source_labels
    self.class_names = tuple(class_names)
    self.progress = progress

  def run(self, translated_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns {"mIoU", "pixel_accuracy", "IoU/<class>" for classes present}."""
    if len(translated_images) != len(self.source_labels):
      raise ValueError(f"{len(translated_images)} translated images but "
                       f"{len(self.source_labels)} label maps.")
    num_classes = len(self.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    with tqdm.trange(len(translated_images), desc="semantic: segmenting", unit="img",
                     disable=not self.progress, dynamic_ncols=True, leave=False) as bar:
      for index in bar:
        image = np.asarray(translated_images[index])
        labels = self.source_labels[index]
        predicted = self.segment_fn(image[None])[0]
        labels = segmenter_lib.resize_labels(np.asarray(labels), *image.shape[:2])
        confusion += confusion_matrix(labels, predicted, num_classes)
    return scores_from_confusion(confusion, self.class_names)
