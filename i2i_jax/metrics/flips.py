"""Semantic flipping: which classes of X turn into which classes in F(X)."""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.metrics import semantic

FLIP_COLOR = np.array([255, 0, 255], np.float32)


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a [H, W, 3] uint8 PNG via a temporary name and a rename."""
  tmp_path = f"{path}.tmp-{os.getpid()}.png"
  Image.fromarray(image).save(tmp_path)
  os.replace(tmp_path, path)


def flip_overlay(source: np.ndarray, translated: np.ndarray, flipped: np.ndarray) -> np.ndarray:
  """[X | F(X) | F(X) with flipped pixels in magenta], each [H, W, 3] uint8.

  Args:
    source: [H, W, 3] uint8.
    translated: [H, W, 3] uint8.
    flipped: [H, W] bool, pixels whose predicted class differs from the reference.

  Returns:
    [H, 3 W, 3] uint8.
  """
  overlay = translated.astype(np.float32)
  overlay[flipped] = 0.35 * overlay[flipped] + 0.65 * FLIP_COLOR
  return np.concatenate([source, translated, overlay.astype(np.uint8)], axis=1)


class FlipEvaluator:
  """Per-class flip matrix between the reference classes of X and seg(F(X)).

  The reference is X's labels when given, else seg(X). A pixel flips when its
  predicted class in F(X) differs from its reference class. `run` writes
  `flip_matrix.png` and the `worst_k` images with the most flipped pixels as
  overlays (`flips_worst_<rank>.png`) into `out_dir`; their names are in
  `self.pictures` afterwards.
  """

  def __init__(self, segment_fn: semantic.SegmentFn, source_images: Sequence[np.ndarray],
               source_labels: Sequence[np.ndarray] | None = None, *,
               class_names: Sequence[str] = semantic.CITYSCAPES_CLASSES,
               out_dir: str | None = None, worst_k: int = 4, top_flips: int = 5):
    """Args:
      segment_fn: [B, H, W, 3] uint8 -> [B, H, W] int32.
      source_images: X, a sequence of [H, W, 3] uint8.
      source_labels: X's [H, W] uint8 label maps, or None to use seg(X).
      class_names: one per class id.
      out_dir: where pictures go; None writes none.
      worst_k: how many worst images to draw.
      top_flips: how many of the largest class -> class flips to report.
    """
    self.segment_fn = segment_fn
    self.source_images = source_images
    self.source_labels = source_labels
    self.class_names = tuple(class_names)
    self.out_dir = out_dir
    self.worst_k = worst_k
    self.top_flips = top_flips
    self.pictures: list[str] = []
    self.flip_matrix: np.ndarray | None = None

  def _reference(self, index: int, height: int, width: int) -> np.ndarray:
    if self.source_labels is not None:
      return segmenter_lib.resize_labels(np.asarray(self.source_labels[index]), height, width)
    source = segmenter_lib.resize_image(np.asarray(self.source_images[index]), height, width)
    return self.segment_fn(source[None])[0]

  def run(self, translated_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns {"flip_rate", "flip_rate/<class>", "flip/<from>-><to>"}.

    flip_rate/<class> = 1 - (pixels of the class kept) / (pixels of the class),
    for classes present in the reference; flip/<a>-><b> is the fraction of a's
    pixels predicted as b, for the `top_flips` largest off-diagonal entries.
    """
    if len(translated_images) != len(self.source_images):
      raise ValueError(f"{len(translated_images)} translated images but "
                       f"{len(self.source_images)} source images.")
    num_classes = len(self.class_names)
    counts = np.zeros((num_classes, num_classes), np.int64)
    per_image = []
    for index, image in enumerate(translated_images):
      image = np.asarray(image)
      reference = self._reference(index, *image.shape[:2])
      confusion = semantic.confusion_matrix(reference, self.segment_fn(image[None])[0], num_classes)
      counts += confusion
      per_image.append(1.0 - np.trace(confusion) / max(confusion.sum(), 1))

    totals = counts.sum(axis=1)
    self.flip_matrix = counts / np.maximum(totals, 1)[:, None]
    metrics = {"flip_rate": float(1.0 - np.trace(counts) / max(counts.sum(), 1))}
    for class_id in np.flatnonzero(totals):
      metrics[f"flip_rate/{self.class_names[class_id]}"] = float(
          1.0 - self.flip_matrix[class_id, class_id])
    off_diagonal = self.flip_matrix * (1 - np.eye(num_classes))
    for flat_index in np.argsort(off_diagonal, axis=None)[::-1][:self.top_flips]:
      source_class, predicted_class = np.unravel_index(flat_index, off_diagonal.shape)
      if off_diagonal[source_class, predicted_class] > 0:
        metrics[f"flip/{self.class_names[source_class]}->{self.class_names[predicted_class]}"] = (
            float(off_diagonal[source_class, predicted_class]))
    if self.out_dir:
      self._write_pictures(translated_images, np.asarray(per_image))
    return metrics

  def _write_pictures(self, translated_images, per_image_flip_rate):
    # The object-oriented API: no pyplot, so the caller's backend (a notebook's
    # inline one) is left alone.
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    os.makedirs(self.out_dir, exist_ok=True)
    self.pictures = []
    figure = Figure(figsize=(8, 7))
    axis = figure.subplots()
    axis.imshow(self.flip_matrix, cmap="viridis", vmin=0, vmax=1)
    axis.set_xticks(range(len(self.class_names)), self.class_names, rotation=90)
    axis.set_yticks(range(len(self.class_names)), self.class_names)
    axis.set_xlabel("predicted class in F(X)")
    axis.set_ylabel("reference class in X")
    axis.set_title("Flip matrix (row-normalised)")
    figure.tight_layout()
    tmp_path = os.path.join(self.out_dir, f".flip_matrix.tmp-{os.getpid()}.png")
    figure.savefig(tmp_path, dpi=100)
    os.replace(tmp_path, os.path.join(self.out_dir, "flip_matrix.png"))
    self.pictures.append("flip_matrix.png")

    for rank, index in enumerate(np.argsort(-per_image_flip_rate)[:self.worst_k]):
      translated = np.asarray(translated_images[index])
      height, width = translated.shape[:2]
      reference = self._reference(index, height, width)
      predicted = self.segment_fn(translated[None])[0]
      flipped = (reference != predicted) & (reference < len(self.class_names))
      source = segmenter_lib.resize_image(np.asarray(self.source_images[index]), height, width)
      name = f"flips_worst_{rank}.png"
      write_png(os.path.join(self.out_dir, name), flip_overlay(source, translated, flipped))
      self.pictures.append(name)
