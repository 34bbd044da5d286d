"""Issue 7's acceptance on the toy world: the demo model moves sim images toward the real style.

The demo model is the one the README's first command trains (`runs/demo`, which
CI trains before the tests); when that run is missing or from another config,
the test trains it here (~6 minutes on 2 CPU cores). The held-out scenes are
translated and evaluated through the command-line tools, as a user runs them.
The feature network is a random-weight Inception (nothing can be downloaded
offline): the distance is FD_inception_random_init, not FID.
"""

import json
import os
import subprocess
import sys

import pytest

from i2i_jax.configs import demo
from i2i_jax import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, *args, cwd=REPO):
  # One CPU device, as a user's machine has (the test session fakes 8).
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=env)
  assert result.returncode == 0, f"{module} failed:\n{result.stderr[-3000:]}"
  return result


def _finished_demo_run(workdir: str) -> bool:
  """Whether `workdir` holds the last checkpoint of a run of today's configs/demo.py."""
  try:
    loaded = checkpoint.load_generator(workdir)
  except FileNotFoundError:
    return False
  wanted = demo.get_config()
  as_json = lambda config: json.loads(config.to_json())  # tuples and lists compare equal
  return (loaded.step == wanted.total_steps
          and as_json(loaded.config.model) == as_json(wanted.model))


@pytest.mark.slow
def test_demo_model_shrinks_the_distance_to_the_real_style(tmp_path):
  workdir = os.environ.get("I2I_DEMO_WORKDIR", os.path.join(REPO, "runs", "demo"))
  if not _finished_demo_run(workdir):
    workdir = str(tmp_path / "demo")
    _run("i2i_jax.train", "--config=configs/demo.py", f"--workdir={workdir}")
  toy = tmp_path / "toy"
  _run("i2i_jax.data.toy_streets", f"--out={toy}", "--n=100", "--split=val", "--height=64",
       "--width=128")
  translated = tmp_path / "translated"
  _run("i2i_jax.translate", f"--workdir={workdir}", f"--input=folder:{toy / 'sim' / 'images'}",
       f"--output={translated}")
  out = tmp_path / "eval"
  _run("i2i_jax.evaluate", f"--source=folder:{toy / 'sim' / 'images'}",
       f"--translated=folder:{translated / 'images'}",
       f"--target=folder:{toy / 'real' / 'images'}", f"--out={out}",
       "--fd_network=inception_random_init")
  gap = json.loads((out / "report.json").read_text())["metrics"]["domain_gap"]
  before = gap["FD_inception_random_init(X,Y)"]
  after = gap["FD_inception_random_init(F(X),Y)"]
  assert after < before, f"FD(F(X),Y) = {after:.2f} is not below FD(X,Y) = {before:.2f}"
  assert "domain_gap.png" in (out / "report.md").read_text()
