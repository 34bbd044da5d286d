"""An SRUNIT small enough for unit tests: 32x32 crops, 4 base channels, 16 patches per layer.

The sizes of the parity fixture tests/fixtures/srunit_tiny.npz. Five residual
blocks (CUT's tiny config has 2) so that NCE layer 16 is a block, as with the
official 9, not an instance norm followed by a ReLU (families/srunit.py).
The robustness loss is off in epoch 1 (steps 0 and 1) and on from step 2.
"""

import ml_collections

from i2i_jax.configs import srunit
from i2i_jax.configs import tiny


def get_config() -> ml_collections.ConfigDict:
  config = srunit.get_config()
  config.model.ngf = 4
  config.model.n_blocks = 5
  config.model.ndf = 4
  config.model.netF_nc = 16
  config.model.num_patches = 16
  config.loss.inact_epochs = 1
  config.optimizer.steps_per_epoch = 2
  return tiny.small_run(config)
