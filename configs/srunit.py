"""SRUNIT (Jia et al., ICCV 2021), `--model srunit`, value for value.

CUT's configuration (configs/cut.py: the official CUT-mode defaults, which
SeanJia/SRUNIT keeps, and the shared trainer blocks) with SRUNIT's
semantic-robustness options of SeanJia/SRUNIT options/base_options.py (the
official option name in each comment). Losses: i2i_jax/losses_srunit.py; the
family: i2i_jax/families/srunit.py (docs/srunit.md).

  python -m i2i_jax.train --config=configs/srunit.py --workdir=DIR \
      --config.data.source=folder:DATAROOT/trainA --config.data.target=folder:DATAROOT/trainB
"""

import ml_collections

from i2i_jax.configs import cut


def get_config() -> ml_collections.ConfigDict:
  """Returns the official SRUNIT training configuration."""
  config = cut.get_config()
  config.model.family = "srunit"
  config.model.name = "srunit"  # --model srunit (--CUT_mode CUT)

  config.loss.reg = 0.001  # --reg: weight of the robustness loss (0: CUT)
  config.loss.reg_type = "v2"  # --reg_type: v2 G and F get its gradient, v1 G only
  config.loss.reg_noise = 0.001  # --reg_noise: norm of the feature perturbation
  # "official": the official code's loss; "paper": the paper's ratio (each
  # position perturbed by its drawn magnitude, compared with the clean
  # feature's round trip through the generator; docs/srunit.md). Not official.
  config.loss.reg_variant = "official"
  # --reg_layers: indices into config.model.nce_layers; one is drawn per step.
  config.loss.reg_layers = (0, 1, 2, 3, 4)
  # --inact_epochs: the loss is off while epoch_count + epoch <= inact_epochs.
  config.loss.inact_epochs = 100
  # The official step meanwhile updates D only (G and F stay as initialised);
  # False trains them as CUT does (docs/srunit.md).
  config.loss.freeze_generator_while_inactive = True
  return config
