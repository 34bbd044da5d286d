"""Semantic flipping: which classes of X turn into which classes in F(X).

A pixel flips when the segmenter's class for it in F(X) differs from its class
in X (X's labels, else seg(X)). The flip rate of a class pair a -> b is the
fraction of a's pixels that the segmenter calls b in F(X). Part of that is the
segmenter's own error on real-looking images, which a perfect translation would
show too; where the ideal translation of X exists (the real-style render of the
same scenes, `--ideal`), the excess flip rate

  excess_flip(a -> b) = flip_F(X)(a -> b) - flip_ideal(a -> b)

is what the translation adds: about 0 for a translation as good as the ideal,
positive where it repaints a as b (sky as vegetation), and it can be negative
where the translation happens to suit the segmenter better than the ideal does.
"""

import math
from collections.abc import Sequence

from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageDraw

from i2i_jax import storage
from i2i_jax.metrics import pictures
from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.metrics import semantic

FLIP_COLOR = np.array([255, 0, 255], np.float32)
PANEL_TITLES = ("X: source", "F(X): translated", "F(X), flipped pixels in magenta")
# Panels narrower than this are enlarged (nearest neighbour) so that their titles fit.
MIN_PANEL_WIDTH = 256


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


def flip_caption(rank: int, name: str, flip_rate: float, reference: str) -> list[str]:
  """The caption of a worst-flips picture: which file, how much flipped, what magenta means.

  Args:
    rank: 0 for the image with the most flipped pixels.
    name: the source file (relative path) or another name of the image.
    flip_rate: fraction of the image's reference pixels whose class changed.
    reference: what the classes of X are, "X's labels" or "seg(X)".
  """
  return [f"Semantic flips, worst image #{rank + 1}: {name}",
          f"{flip_rate:.1%} of its pixels with a class in {reference} have another class in "
          "seg(F(X)); those pixels are magenta in the right panel."]


def captioned_panels(panels: np.ndarray, caption: Sequence[str],
                     panel_titles: Sequence[str] = PANEL_TITLES) -> np.ndarray:
  """Draws `caption` above equal-width panels and a title above each panel.

  Args:
    panels: [H, N W, 3] uint8, N = len(panel_titles) panels side by side.
    caption: lines of text, wrapped to the picture's width.
    panel_titles: one title per panel.

  Returns:
    [H' + text height, N W', 3] uint8 on white, where panels narrower than
    MIN_PANEL_WIDTH are enlarged by an integer factor (nearest neighbour).
  """
  scale = max(1, math.ceil(MIN_PANEL_WIDTH / (panels.shape[1] // len(panel_titles))))
  panels = panels.repeat(scale, axis=0).repeat(scale, axis=1)
  width = panels.shape[1]
  panel_width = width // len(panel_titles)
  font = pictures.font()
  caption_block = pictures.text_block(caption, width)
  titles = Image.new("RGB", (width, pictures.line_height(font) + pictures.MARGIN), "white")
  draw = ImageDraw.Draw(titles)
  for number, title in enumerate(panel_titles):
    draw.text((number * panel_width + pictures.MARGIN, 0), title, fill="black", font=font)
  return np.concatenate([caption_block, np.asarray(titles), panels])


class FlipEvaluator:
  """Per-class flip matrix between the reference classes of X and seg(F(X)).

  The reference is X's labels when given, else seg(X). It takes the
  segmenter's predictions, not a segmenter: `evaluate` segments F(X), X and the
  ideal translation once and shares the predictions with the other sections.
  `run` writes `flip_matrix.png` (with a colour scale) and the `worst_k` images
  with the most flipped pixels (`flips_worst_<rank>.png`: X | F(X) | flips in
  magenta, under a caption naming the file) into `out_dir`; `self.pictures`
  maps their names to captions for the report afterwards.
  """

  def __init__(self, source_images: Sequence[np.ndarray], references: Sequence[np.ndarray], *,
               reference_name: str = "X's labels",
               class_names: Sequence[str] = semantic.CITYSCAPES_CLASSES,
               out_dir: epath.PathLike | None = None, worst_k: int = 4, top_flips: int = 5,
               source_names: Sequence[str] | None = None):
    """Args:
      source_images: X, a sequence of [H, W, 3] uint8 (drawn in the pictures).
      references: X's classes, [H, W] uint8 per image: its labels or seg(X).
      reference_name: what the references are ("X's labels" or "seg(X)").
      class_names: one per class id.
      out_dir: where pictures go (any epath, gs:// too); None writes none.
      worst_k: how many worst images to draw.
      top_flips: how many of the largest class -> class flips (and, with an
        ideal translation, of the largest excess flips) to report.
      source_names: X's file names (relative paths) for the captions; None
        names images by their index.
    """
    self.source_images = source_images
    self.references = references
    self.reference_name = reference_name
    self.class_names = tuple(class_names)
    self.out_dir = epath.Path(out_dir) if out_dir else None
    self.worst_k = worst_k
    self.top_flips = top_flips
    self.source_names = source_names
    self.pictures: dict[str, str] = {}
    self.flip_matrix: np.ndarray | None = None
    self.class_pixels: np.ndarray | None = None

  def _reference(self, index: int, height: int, width: int) -> np.ndarray:
    return segmenter_lib.resize_labels(np.asarray(self.references[index]), height, width)

  def _counts(self, predicted: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """([K, K] pixel counts reference class -> predicted class, [N] flip rate per image)."""
    if len(predicted) != len(self.references):
      raise ValueError(f"{len(predicted)} segmented images but {len(self.references)} "
                       "source images.")
    num_classes = len(self.class_names)
    counts = np.zeros((num_classes, num_classes), np.int64)
    per_image = []
    for index, prediction in enumerate(predicted):
      prediction = np.asarray(prediction)
      confusion = semantic.confusion_matrix(self._reference(index, *prediction.shape[:2]),
                                            prediction, num_classes)
      counts += confusion
      per_image.append(1.0 - np.trace(confusion) / max(confusion.sum(), 1))
    return counts, np.asarray(per_image)

  def run(self, translated_images: Sequence[np.ndarray], predicted: Sequence[np.ndarray],
          ideal_predicted: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """Flip rates of seg(F(X)), and their excess over the ideal translation's.

    Args:
      translated_images: F(X), [H, W, 3] uint8 each (drawn in the pictures).
      predicted: seg(F(X)), one [H, W] class map per image.
      ideal_predicted: seg of the ideal translation of each X, or None.

    Returns:
      {"flip_rate", "flip_rate/<class>", "flip/<a>-><b>"}: flip_rate/<class> =
      1 - (pixels of the class kept) / (pixels of the class), for classes
      present in the reference; flip/<a>-><b> is the fraction of a's pixels
      predicted as b, for the `top_flips` largest off-diagonal entries. With
      `ideal_predicted`, also "ideal/flip_rate", "excess_flip_rate",
      "excess_flip_rate/<class>" and, for the pairs above and the `top_flips`
      largest excesses, "excess_flip/<a>-><b>" (its flip/<a>-><b> beside it).
    """
    if len(translated_images) != len(self.source_images):
      raise ValueError(f"{len(translated_images)} translated images but "
                       f"{len(self.source_images)} source images.")
    counts, per_image = self._counts(predicted)
    totals = counts.sum(axis=1)
    self.flip_matrix = counts / np.maximum(totals, 1)[:, None]
    self.class_pixels = totals
    metrics = {"flip_rate": _flip_rate(counts)}
    for class_id in np.flatnonzero(totals):
      metrics[f"flip_rate/{self.class_names[class_id]}"] = float(
          1.0 - self.flip_matrix[class_id, class_id])
    off_diagonal = self.flip_matrix * (1 - np.eye(len(self.class_names)))
    pairs = _largest(off_diagonal, self.top_flips)
    if ideal_predicted is not None:
      ideal_counts, _ = self._counts(ideal_predicted)
      ideal_matrix = ideal_counts / np.maximum(ideal_counts.sum(axis=1), 1)[:, None]
      excess = off_diagonal - ideal_matrix * (1 - np.eye(len(self.class_names)))
      metrics["ideal/flip_rate"] = _flip_rate(ideal_counts)
      metrics["excess_flip_rate"] = metrics["flip_rate"] - metrics["ideal/flip_rate"]
      for class_id in np.flatnonzero(totals):
        metrics[f"excess_flip_rate/{self.class_names[class_id]}"] = float(
            ideal_matrix[class_id, class_id] - self.flip_matrix[class_id, class_id])
      pairs += [pair for pair in _largest(excess, self.top_flips) if pair not in pairs]
    for source_class, predicted_class in pairs:
      name = f"{self.class_names[source_class]}->{self.class_names[predicted_class]}"
      metrics[f"flip/{name}"] = float(off_diagonal[source_class, predicted_class])
      if ideal_predicted is not None:
        metrics[f"excess_flip/{name}"] = float(excess[source_class, predicted_class])
    if self.out_dir:
      self._write_pictures(translated_images, predicted, per_image)
    return metrics

  def _write_pictures(self, translated_images, predicted, per_image_flip_rate):
    reference = self.reference_name
    self.pictures = {"flip_matrix.png": self._write_matrix(reference)}
    for rank, index in enumerate(np.argsort(-per_image_flip_rate)[:self.worst_k]):
      translated = np.asarray(translated_images[index])
      height, width = translated.shape[:2]
      prediction = segmenter_lib.resize_labels(np.asarray(predicted[index]), height, width)
      reference_classes = self._reference(index, height, width)
      flipped = (reference_classes != prediction) & (reference_classes < len(self.class_names))
      source = segmenter_lib.resize_image(np.asarray(self.source_images[index]), height, width)
      name = self.source_names[index] if self.source_names is not None else f"image {index}"
      caption = flip_caption(rank, name, per_image_flip_rate[index], reference)
      file_name = f"flips_worst_{rank}.png"
      pictures.write_png(self.out_dir / file_name,
                captioned_panels(flip_overlay(source, translated, flipped), caption))
      self.pictures[file_name] = (
          f"Worst flips #{rank + 1}, {name}: X (left), F(X) (middle), and F(X) with the pixels "
          f"whose class in seg(F(X)) differs from {reference} in magenta (right); "
          f"{per_image_flip_rate[index]:.1%} of its pixels flipped.")

  def _write_matrix(self, reference: str) -> str:
    """Draws flip_matrix.png with a colour bar; returns its caption."""
    # The object-oriented API: no pyplot, so the caller's backend (a notebook's
    # inline one) is left alone.
    from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    present = self.class_pixels > 0
    colormap = colormaps["viridis"].with_extremes(bad="lightgrey")
    figure = Figure(figsize=(9, 7.5))
    axis = figure.subplots()
    image = axis.imshow(np.ma.masked_array(self.flip_matrix, ~present[:, None].repeat(
        len(present), axis=1)), cmap=colormap, vmin=0, vmax=1)
    colorbar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    colorbar.set_label("fraction of the row class's pixels (each row sums to 1)")
    axis.set_xticks(range(len(self.class_names)), self.class_names, rotation=90)
    axis.set_yticks(range(len(self.class_names)), self.class_names)
    axis.set_xlabel("class predicted in F(X) by the segmenter")
    axis.set_ylabel(f"class in X ({reference})")
    axis.set_title("Semantic flips: where the pixels of each class of X end up in F(X)\n"
                   "diagonal = kept, off the diagonal = flipped; grey rows: class absent from X",
                   fontsize=10)
    figure.tight_layout()
    with storage.atomic_write(self.out_dir / "flip_matrix.png") as f:
      figure.savefig(f, format="png", dpi=100)
    return (f"Flip matrix: row = a class in X ({reference}), column = the class the segmenter "
            "predicts for those pixels in F(X); the colour (scale on the right, 0 to 1) is the "
            "fraction of the row class's pixels. A bright diagonal means the classes survived "
            "translation; bright cells off the diagonal are flips. Grey rows: classes absent "
            "from X.")



def _flip_rate(counts: np.ndarray) -> float:
  """The fraction of all reference pixels ([K, K] counts) predicted as another class."""
  return float(1.0 - np.trace(counts) / max(counts.sum(), 1))


def _largest(matrix: np.ndarray, k: int) -> list[tuple[int, int]]:
  """(row, column) of the k largest positive entries of a [K, K] matrix, largest first."""
  flat = np.argsort(matrix, axis=None, kind="stable")[::-1][:k]
  return [(int(row), int(column)) for row, column in zip(*np.unravel_index(flat, matrix.shape))
          if matrix[row, column] > 0]
