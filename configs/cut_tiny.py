"""A CUT small enough for unit tests: 32x32 crops, 4 base channels, 16 patches per layer.

The sizes of the parity fixture tests/fixtures/cut_tiny.npz; same code paths as
configs/cut.py (all five NCE layers, NCE on both domains, the full D-then-G step).
"""

import ml_collections

from i2i_jax.configs import cut
from i2i_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
  config = cut.get_config()
  config.model.ngf = 4
  config.model.n_blocks = 2
  config.model.ndf = 4
  config.model.netF_nc = 16
  config.model.num_patches = 16
  config.optimizer.steps_per_epoch = 2
  return tiny.small_run(config)
