"""GTA5 -> Cityscapes, the paper's main experiment (configs/gta2cityscapes.yaml).

The paper configuration with the two data sets as TFDS sources; prepare them
once with

  python -m i2i_jax.data.tfds gta5 GTA5_MANUAL_DIR
  python -m i2i_jax.data.tfds cityscapes_fine CITYSCAPES_MANUAL_DIR
"""

import ml_collections

from i2i_jax.configs import vsait


def get_config() -> ml_collections.ConfigDict:
  config = vsait.get_config()
  config.data.source = "tfds:gta5:train"
  config.data.target = "tfds:cityscapes_fine:train"
  return config
