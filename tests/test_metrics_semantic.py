"""Semantic consistency, flips and detail retention on hand-built scenes.

The segmenter here is a real (if simple) one: each class is painted in its own
colour and pixels are classified by the nearest palette colour, so what the
metrics must report is known exactly.
"""

import numpy as np
import pytest
from PIL import Image

from i2i_jax.metrics import detail
from i2i_jax.metrics import flips
from i2i_jax.metrics import instances
from i2i_jax.metrics import segmenter
from i2i_jax.metrics import semantic

NAMES = semantic.CITYSCAPES_CLASSES
PALETTE = np.random.RandomState(0).randint(0, 256, size=(len(NAMES), 3)).astype(np.uint8)
ROAD, POLE, LIGHT, SIGN, VEGETATION, SKY = 0, 5, 6, 7, 8, 10


def nearest_colour_segmenter(images):
  """[B, H, W, 3] uint8 -> [B, H, W] int32: the class whose palette colour is nearest."""
  distances = ((images[..., None, :].astype(np.int32) - PALETTE.astype(np.int32)) ** 2).sum(-1)
  return distances.argmin(-1).astype(np.int32)


def scene():
  """A 32x48 scene: sky on top, road below, a pole, a traffic light and a sign."""
  labels = np.full((32, 48), SKY, np.uint8)
  labels[16:] = ROAD
  labels[4:28, 10:12] = POLE
  labels[6:14, 20:24] = LIGHT
  labels[5:11, 30:36] = SIGN
  labels[0, 0] = 255  # ignored
  return labels


def paint(labels):
  return PALETTE[np.where(labels == 255, ROAD, labels)]


def segment(images):
  """The class maps of the nearest-colour segmenter, as `segmenter.segment_all` gives them."""
  return segmenter.segment_all(nearest_colour_segmenter, images, batch_size=2)


def test_confusion_matrix_counts_and_ignores_255():
  reference = np.array([[0, 0, 1], [1, 255, 2]])
  predicted = np.array([[0, 1, 1], [1, 0, 0]])
  confusion = semantic.confusion_matrix(reference, predicted, 3)
  np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
  scores = semantic.scores_from_confusion(confusion, ("a", "b", "c"))
  assert scores["pixel_accuracy"] == pytest.approx(3 / 5)
  assert scores["IoU/b"] == pytest.approx(2 / 3)
  assert scores["IoU/c"] == 0.0
  assert scores["mIoU"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)


def test_semantic_consistency_is_perfect_for_an_unchanged_scene_and_drops_when_sky_turns_to_trees():
  labels = scene()
  evaluator = semantic.SemanticConsistencyEvaluator([labels, labels])
  unchanged = evaluator.run(segment([paint(labels), paint(labels)]))
  assert unchanged["mIoU"] == 1.0 and unchanged["pixel_accuracy"] == 1.0
  assert set(unchanged) == {"mIoU", "pixel_accuracy"} | {
      f"IoU/{NAMES[c]}" for c in (ROAD, POLE, LIGHT, SIGN, SKY)}
  flipped = labels.copy()
  flipped[flipped == SKY] = VEGETATION
  changed = evaluator.run(segment([paint(labels), paint(flipped)]))
  assert changed["IoU/sky"] == pytest.approx(0.5)  # sky survives in one of the two images
  assert changed["mIoU"] < 1.0


def test_flip_evaluator_reports_the_flip_and_draws_the_worst_image(tmp_path):
  labels = scene()
  flipped = labels.copy()
  flipped[flipped == SKY] = VEGETATION
  sources = [paint(labels), paint(labels)]
  evaluator = flips.FlipEvaluator(sources, [labels, labels], out_dir=str(tmp_path), worst_k=1)
  translated = [paint(labels), paint(flipped)]
  metrics = evaluator.run(translated, segment(translated))
  assert metrics["flip_rate/sky"] == pytest.approx(0.5)
  assert metrics["flip/sky->vegetation"] == pytest.approx(0.5)
  assert metrics["flip_rate/road"] == 0.0
  sky_pixels = (labels == SKY).sum()
  assert metrics["flip_rate"] == pytest.approx(sky_pixels / (2 * (labels != 255).sum()))
  assert list(evaluator.pictures) == ["flip_matrix.png", "flips_worst_0.png"]
  picture = np.asarray(Image.open(tmp_path / "flips_worst_0.png"))
  scale = -(-flips.MIN_PANEL_WIDTH // 48)  # panels enlarged so that their titles fit
  assert picture.shape[1] == 3 * 48 * scale and picture.shape[0] > 32 * scale
  overlay = picture[-32 * scale::scale, ::scale]  # the panels below the caption, original size
  # The worst image is the second one: its sky is magenta-tinted in the overlay panel.
  np.testing.assert_array_equal(overlay[:, 48:96][labels != 255], paint(flipped)[labels != 255])
  assert not np.array_equal(overlay[2, 96 + 40], paint(flipped)[2, 40])


def test_flip_evaluator_against_seg_of_the_source_and_without_pictures():
  source = [paint(scene())]
  evaluator = flips.FlipEvaluator(source, segment(source), reference_name="seg(X)")
  assert evaluator.run(source, segment(source))["flip_rate"] == 0.0
  assert not evaluator.pictures


def test_excess_flips_subtract_what_the_ideal_translation_flips_too():
  """Sky repainted as vegetation raises sky->vegetation beyond the segmenter's own error."""
  labels = scene()
  sky = labels == SKY
  # The segmenter's own error, on the ideal translation too: a quarter of the sky's rows.
  segmenter_error = labels.copy()
  segmenter_error[:2][sky[:2]] = VEGETATION
  repainted = labels.copy()
  repainted[sky] = VEGETATION
  evaluator = flips.FlipEvaluator([paint(labels)] * 2, [labels] * 2)
  images = [paint(labels)] * 2
  ideal = evaluator.run(images, [segmenter_error] * 2, [segmenter_error] * 2)
  assert ideal["flip/sky->vegetation"] > 0.1  # the raw rate shows the segmenter's error
  assert ideal["excess_flip/sky->vegetation"] == 0.0 and ideal["excess_flip_rate"] == 0.0
  flipped = evaluator.run(images, [segmenter_error, repainted], [segmenter_error] * 2)
  share = (sky.sum() - sky[:2].sum()) / (2 * sky.sum())  # sky left in the ideal, one image of two
  assert flipped["excess_flip/sky->vegetation"] == pytest.approx(share)
  assert flipped["flip/sky->vegetation"] == pytest.approx(
      ideal["flip/sky->vegetation"] + share)
  assert flipped["excess_flip_rate/sky"] == pytest.approx(share)
  assert flipped["excess_flip_rate/road"] == 0.0
  assert flipped["ideal/flip_rate"] == ideal["flip_rate"]


def test_detail_retention_counts_instances_and_notices_a_removed_sign():
  labels = scene()
  source = paint(labels)
  translated = source.copy()
  translated[labels == SIGN] = PALETTE[SKY]  # the sign is painted over
  components = instances.LabelComponents([labels], detail.DETAIL_CLASSES)
  evaluator = detail.DetailRetentionEvaluator([source], components)
  metrics = evaluator.run([translated], segment([translated]))
  assert metrics["instances/pole"] == 1 and metrics["instances/traffic sign"] == 1
  assert metrics["retention_seg/pole"] == 1.0 and metrics["retention_seg/traffic light"] == 1.0
  assert metrics["retention_seg/traffic sign"] == 0.0
  assert metrics["retention_seg"] == pytest.approx(2 / 3)
  # Without a segmenter: the painted-over sign no longer stands out, the others do.
  assert metrics["retention/pole"] == 1.0 and metrics["retention/traffic sign"] == 0.0


def test_evaluators_reject_a_translated_set_of_the_wrong_length():
  labels = scene()
  with pytest.raises(ValueError, match="2 translated images but 1"):
    flips.FlipEvaluator([paint(labels)], [labels]).run([paint(labels)] * 2,
                                                        segment([paint(labels)] * 2))
