"""A VSAIT small enough for unit tests: 32x32 crops, 8 base channels, D = 64.

Same code paths as the paper config (all five VGG nodes, all LSH kernels, the
full G/D step); random VGG weights so nothing is downloaded.
"""

import ml_collections

from i2i_jax.configs import vsait


def get_config() -> ml_collections.ConfigDict:
  config = vsait.get_config()
  config.model.res_blocks = 2
  config.model.res_channels = 8
  config.model.vgg_weights = "random"
  config.model.lsh_out_channels = 64
  config.model.discriminator_channels = (32, 16, 1)
  return small_run(config)


def small_run(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with a test-sized run around its model (every family's tiny config uses it).

  4 steps on 32x32 crops of toy_streets sim -> real, batch 2, a synchronous
  checkpoint every 2 steps, metrics every step and image grids every 2.
  """
  config.total_steps = 4
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
