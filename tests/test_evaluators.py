"""Evaluators from `config.evals`: built from the registry, named errors, scores that move."""

import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from i2i_jax import evaluators


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
