"""A CUT small enough for unit tests: 32x32 crops, 4 base channels, 16 patches per layer.

The sizes of the parity fixture tests/fixtures/cut_tiny.npz; same code paths as
configs/cut.py (all five NCE layers, NCE on both domains, the full D-then-G step).
"""

import ml_collections

from i2i_jax.configs import cut


def get_config() -> ml_collections.ConfigDict:
  config = cut.get_config()
  config.total_steps = 4
  config.model.ngf = 4
  config.model.n_blocks = 2
  config.model.ndf = 4
  config.model.netF_nc = 16
  config.model.num_patches = 16
  config.optimizer.steps_per_epoch = 2
  config.data.source = "toy_streets:sim"
  config.data.target = "toy_streets:real"
  config.data.batch_size = 2
  config.data.preprocess = "resize(32,64)|random_crop(32,32)|flip_lr|value_range(-1,1)"
  config.data.read_threads = 2
  config.data.prefetch_buffer_size = 4
  config.checkpoint.every_steps = 2
  config.checkpoint.keep = 0
  config.checkpoint.keep_every_steps = 0
  config.checkpoint.async_save = False
  config.log_every_steps = 1
  config.log_images_every = 2
  config.image_grid_rows = 2
  return config
