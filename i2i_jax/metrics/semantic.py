"""Semantic consistency: a segmenter run on F(X), scored against X's labels."""

from collections.abc import Callable, Sequence

import numpy as np

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
  """mIoU, pixel accuracy and per-class IoU of seg(F(X)) against X's labels.

  It takes the segmenter's predictions, not the images: `evaluate` segments
  F(X) once (`segmenter.segment_all`) and shares the predictions among the
  semantic, flips and detail sections.
  """

  def __init__(self, source_labels: Sequence[np.ndarray],
               class_names: Sequence[str] = CITYSCAPES_CLASSES):
    """Args:
      source_labels: sequence of [H, W] uint8 label maps of X (255 = ignore).
      class_names: one name per class id.
    """
    self.source_labels = source_labels
    self.class_names = tuple(class_names)

  def run(self, predicted: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns {"mIoU", "pixel_accuracy", "IoU/<class>" for classes present}.

    Args:
      predicted: seg(F(X)), one [H, W] class map per image; X's labels are
        resized (nearest) to each prediction's size.
    """
    if len(predicted) != len(self.source_labels):
      raise ValueError(f"{len(predicted)} segmented translated images but "
                       f"{len(self.source_labels)} label maps.")
    num_classes = len(self.class_names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for index, prediction in enumerate(predicted):
      prediction = np.asarray(prediction)
      labels = segmenter_lib.resize_labels(np.asarray(self.source_labels[index]),
                                           *prediction.shape[:2])
      confusion += confusion_matrix(labels, prediction, num_classes)
    return scores_from_confusion(confusion, self.class_names)
