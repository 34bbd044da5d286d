"""`python -m i2i_jax.data.tfds NAME MANUAL_DIR [--data_dir=DIR]`: see the package docstring."""

from i2i_jax import cli
from i2i_jax.data.tfds import main

cli.run(main)
