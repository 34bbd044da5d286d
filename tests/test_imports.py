"""Importing the package must not start a JAX backend or touch device memory."""

import subprocess
import sys

MODULES = ["i2i_jax", "i2i_jax.vsa", "i2i_jax.losses", "i2i_jax.models.vsait",
           "i2i_jax.training", "i2i_jax.convert", "i2i_jax.checkpoint",
           "i2i_jax.data.pipeline", "i2i_jax.data.toy_streets", "i2i_jax.models.cut",
           "i2i_jax.losses_cut", "i2i_jax.convert_cut"]


def test_imports_do_not_initialise_a_backend():
  code = "\n".join([
      "import sys",
      *[f"import {m}" for m in MODULES],
      "from jax._src import xla_bridge",
      "assert not xla_bridge._backends, sorted(xla_bridge._backends)",
      "print('clean')",
  ])
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr
  assert "clean" in result.stdout
