"""Example ablation: hypervector width x VSA loss weight on the tiny config (2 x 2 runs).

  python launch/sweep.py run launch/sweeps/example.py --root=/tmp/sweep_example
  python launch/sweep.py collect --root=/tmp/sweep_example --sort=g_vsa
"""


def get_sweep():
  return {
      "base_config": "configs/tiny.py",
      # Every run: a few steps, no intermediate checkpoints or image grids.
      "fixed": {"total_steps": 2, "checkpoint.every_steps": 1000, "log_images_every": 1000},
      "grid": {"model.lsh_out_channels": [32, 64], "loss.vsa_coef": [1.0, 10.0]},
  }
