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
  labels[6:10, 20:23] = LIGHT
  labels[5:9, 30:35] = SIGN
  labels[0, 0] = 255  # ignored
  return labels


def paint(labels):
  return PALETTE[np.where(labels == 255, ROAD, labels)]


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
  evaluator = semantic.SemanticConsistencyEvaluator(nearest_colour_segmenter, [labels, labels])
  unchanged = evaluator.run([paint(labels), paint(labels)])
  assert unchanged["mIoU"] == 1.0 and unchanged["pixel_accuracy"] == 1.0
  assert set(unchanged) == {"mIoU", "pixel_accuracy"} | {
      f"IoU/{NAMES[c]}" for c in (ROAD, POLE, LIGHT, SIGN, SKY)}
  flipped = labels.copy()
  flipped[flipped == SKY] = VEGETATION
  changed = evaluator.run([paint(labels), paint(flipped)])
  assert changed["IoU/sky"] == pytest.approx(0.5)  # sky survives in one of the two images
  assert changed["mIoU"] < 1.0


def test_flip_evaluator_reports_the_flip_and_draws_the_worst_image(tmp_path):
  labels = scene()
  flipped = labels.copy()
  flipped[flipped == SKY] = VEGETATION
  sources = [paint(labels), paint(labels)]
  evaluator = flips.FlipEvaluator(nearest_colour_segmenter, sources, [labels, labels],
                                  out_dir=str(tmp_path), worst_k=1)
  metrics = evaluator.run([paint(labels), paint(flipped)])
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


def test_flip_evaluator_without_labels_uses_seg_of_the_source():
  labels = scene()
  evaluator = flips.FlipEvaluator(nearest_colour_segmenter, [paint(labels)])
  assert evaluator.run([paint(labels)])["flip_rate"] == 0.0
  assert not evaluator.pictures


def test_detail_retention_counts_instances_and_notices_a_removed_sign():
  labels = scene()
  source = paint(labels)
  translated = source.copy()
  translated[labels == SIGN] = PALETTE[SKY]  # the sign is painted over
  evaluator = detail.DetailRetentionEvaluator(nearest_colour_segmenter, [source], [labels])
  metrics = evaluator.run([translated])
  assert metrics["instances/pole"] == 1 and metrics["instances/traffic sign"] == 1
  assert metrics["retention/pole"] == 1.0 and metrics["retention/traffic light"] == 1.0
  assert metrics["retention/traffic sign"] == 0.0
  assert metrics["retention"] == pytest.approx(2 / 3)
  assert metrics["hf_energy_ratio/pole"] == pytest.approx(1.0)
  assert metrics["hf_energy_ratio/traffic sign"] < 1.0


def test_detail_retention_counts_separate_instances_and_the_hf_ratio_of_blur():
  labels = np.full((32, 32), ROAD, np.uint8)
  labels[2:30, 4] = POLE
  labels[2:30, 20] = POLE
  source = paint(labels)
  blurred = source.copy()
  blurred[:, 1:-1] = (source[:, :-2].astype(np.int32) + source[:, 1:-1] + source[:, 2:]) // 3
  metrics = detail.DetailRetentionEvaluator(nearest_colour_segmenter, [source], [labels]).run(
      [blurred.astype(np.uint8)])
  assert metrics["instances/pole"] == 2
  assert metrics["hf_energy_ratio/pole"] < 0.9


def test_evaluators_reject_a_translated_set_of_the_wrong_length():
  labels = scene()
  with pytest.raises(ValueError, match="2 translated images but 1"):
    flips.FlipEvaluator(nearest_colour_segmenter, [paint(labels)]).run([paint(labels)] * 2)
