"""Training over folders holding files a user did not mean to give it.

A real, in-process run of configs/tiny.py (8 fake devices, tests/conftest.py)
over image folders in tmp_path: one unusable file must be skipped, counted and
named, never stop the run.
"""

import logging

import numpy as np
from PIL import Image

from i2i_jax.configs import tiny
from i2i_jax import train


def _write_images(folder, count, size=(20, 24)):
  folder.mkdir(parents=True)
  rng = np.random.default_rng(count)
  for i in range(count):
    Image.fromarray(rng.integers(0, 256, (*size, 3), np.uint8)).save(folder / f"{i}.png")


def test_training_skips_an_image_smaller_than_the_crop_and_names_it_once(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  _write_images(tmp_path / "source", 5)
  _write_images(tmp_path / "target", 5)
  Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "source" / "tiny 10x10.png")
  config = tiny.get_config()
  config.total_steps = 3  # 24 good source records: 5 per pass over the 6 files
  config.data.batch_size = 8
  config.data.source = f"folder:{tmp_path / 'source'}"
  config.data.target = f"folder:{tmp_path / 'target'}"
  # 16x16 crops and batches of 8, as in test_train.py: the compiled programs
  # are shared through the session's compilation cache.
  config.data.preprocess = "random_crop(16,16)|flip_lr|value_range(-1,1)"
  config.log_images_every = 1000

  state = train.train_and_evaluate(config, str(tmp_path / "workdir"))

  assert int(state.step) == 3
  named = [m for m in caplog.messages if "'tiny 10x10.png'" in m]
  assert len(named) == 1 and "10x10" in named[0] and "random_crop(16,16)" in named[0]
  (summary,) = [m for m in caplog.messages if m.startswith("input pipeline: skipped bad")]
  skipped_source = int(summary.split(f"{config.data.source}: ")[1].split(",")[0])
  assert skipped_source >= 3, summary
