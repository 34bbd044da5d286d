"""Evaluators from `config.evals`: built from the registry, named errors, scores that move."""

import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from i2i_jax import evaluators
from i2i_jax.data import toy_streets
from i2i_jax.metrics import sensitivity


def _evals(**blocks):
  evals = ml_collections.ConfigDict()
  for name, block in blocks.items():
    evals[name] = block
  return evals


def _detail(**overrides):
  return dict(type="detail", every_steps=2, source="toy_streets:sim_detail:val", num_images=2,
              height=128, width=256, **overrides)


def _blur(images):
  """translate_fn that blurs each image (sigma 3 px): small objects melt into their surroundings."""
  return ndimage.gaussian_filter(images, (0, 3, 3, 0))


def test_identity_translation_retains_more_detail_than_a_blur():
  (every_steps, evaluator), = evaluators.build(_evals(detail=_detail())).values()
  assert every_steps == 2
  identity = evaluator.run(lambda images: images)
  blurred = evaluator.run(_blur)
  assert identity["checked"] > 0
  assert identity["retention"] > blurred["retention"]
  assert identity["contrast"] > blurred["contrast"]


def test_ideal_metrics_come_with_every_run():
  (_, evaluator), = evaluators.build(_evals(
      detail=_detail(ideal="toy_streets:real_mismatch:val"))).values()
  metrics = evaluator.run(_blur)
  assert metrics["ideal/retention"] > metrics["retention"]


def test_translate_images_pads_the_last_batch_to_one_shape():
  shapes = []

  def translate_fn(images):
    shapes.append(images.shape)
    return -images
  images = [np.full((4, 8, 3), value, np.uint8) for value in (0, 255, 0)]
  translated = evaluators.translate_images(translate_fn, images, batch_size=2)
  assert shapes == [(2, 4, 8, 3), (2, 4, 8, 3)]
  assert [int(image[0, 0, 0]) for image in translated] == [255, 0, 255]


@pytest.mark.parametrize("block,expected", [
    (dict(type="sharpness", every_steps=2), "config.evals.bad.type='sharpness'"),
    (_detail(num_imgs=2), "config.evals.bad.num_imgs"),
    (dict(type="detail", source="toy_streets:sim_detail:val"), "config.evals.bad.every_steps"),
    (dict(type="detail", every_steps=2), "config.evals.bad: a 'detail' evaluator needs source"),
    (_detail(ideal="folder:/nonexistent"), "config.evals.bad.ideal='folder:/nonexistent'"),
    (dict(type="flips", every_steps=2, source="toy_streets:sim_detail:val", num_images=1,
          segmenter="/nonexistent"), "config.evals.bad.segmenter='/nonexistent'"),
])
def test_a_bad_block_is_an_error_naming_its_key(block, expected):
  with pytest.raises(ValueError, match=None) as error:
    evaluators.build(_evals(bad=block))
  assert expected in str(error.value)
  assert "\n" not in str(error.value)


def test_flips_segments_f_of_x_once_per_run_and_sees_sky_repainted_as_foliage():
  seeds = toy_streets.split_seeds("sim_detail", "val")[:4]
  scenes = [toy_streets.render(seed, "sim_detail", 128, 256) for seed in seeds]
  sources = [image for image, _ in scenes]
  labels = [label for _, label in scenes]
  ideal = [toy_streets.render(seed, "real_mismatch", 128, 256)[0] for seed in seeds]
  nearest_colour = sensitivity.nearest_colour_segmenter(ideal, labels)
  calls = []

  def segment_fn(images):
    calls.append(len(images))
    return nearest_colour(images)
  evaluator = evaluators.FlipsEvaluator(
      sources, labels, segment_fn=segment_fn, ideal_predicted=list(nearest_colour(np.stack(ideal))))
  repainted = sensitivity.repaint_class(ideal, labels, painted=toy_streets.SKY,
                                        painter=toy_streets.VEGETATION)

  def returning(images):
    """translate_fn whose F(X) is `images` ([H, W, 3] uint8 each), in [-1, 1]."""
    return lambda batch: np.stack(images).astype(np.float32) / 127.5 - 1.0
  as_ideal = evaluator.run(returning(ideal))
  assert calls == [4]
  flipped = evaluator.run(returning(repainted))
  assert calls == [4, 4]
  assert as_ideal["excess_flip_rate"] == 0.0
  assert flipped["excess_flip/sky->vegetation"] >= 0.6
