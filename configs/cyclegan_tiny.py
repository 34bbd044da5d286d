"""A CycleGAN small enough for unit tests: 32x32 crops, 3 base channels, pools of 3 images.

The network sizes of the parity fixture tests/fixtures/cyclegan_tiny.npz; same
code paths as configs/cyclegan.py (both cycles, the identity losses, the full
G-then-D step). The pools hold 3 images, so that a test-sized run fills them
in its first step and then swaps images, as a full run does after 50 images.
"""

import ml_collections

from i2i_jax.configs import cyclegan
from i2i_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
  config = cyclegan.get_config()
  config.model.ngf = 3
  config.model.n_blocks = 2
  config.model.ndf = 3
  config.model.pool_size = 3
  config.optimizer.steps_per_epoch = 2
  return tiny.small_run(config)
