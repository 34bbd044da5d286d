"""Import an official checkpoint into an Orbax workdir, for the family of --config.

* VSAIT (config.model.family "vsait"): a PyTorch Lightning `.ckpt`, every network.
* CUT ("cut"): taesungp/contrastive-unpaired-translation's `latest_net_G.pth`;
  CycleGAN ("cyclegan"): junyanz/pytorch-CycleGAN-and-pix2pix's
  `latest_net_G_A.pth` (the source -> target generator). Only the generator is
  imported: the other networks (CUT's F and D; CycleGAN's G_B, D_A, D_B) and the
  optimizer states start fresh, as the family's `init_state` draws them from
  config.seed. Enough for `translate` and `evaluate`; training from it starts
  with untrained discriminators.

The PyTorch names and layouts live in `i2i_jax.models.torch_layout` (VSAIT) and
`i2i_jax.convert_cut` (CUT and CycleGAN), published weights (torchvision's VGG19)
in `i2i_jax.models.pretrained`; this module is the command line around them.
Reading the files needs torch (`pip install 'i2i_jax[torch]'`) and never
unpickles arbitrary objects.

CLI (writes an Orbax checkpoint that `i2i_jax.translate --workdir`,
`i2i_jax.evaluate` and `i2i_jax.train` can start from):

  python -m i2i_jax.convert --checkpoint=vsait.ckpt --config=configs/vsait.py \
      --workdir=/tmp/imported
  python -m i2i_jax.convert --checkpoint=latest_net_G.pth --config=configs/cut.py \
      --workdir=/tmp/imported_cut
  python -m i2i_jax.convert --checkpoint=latest_net_G_A.pth --config=configs/cyclegan.py \
      --workdir=/tmp/imported_cyclegan
"""

from collections.abc import Sequence
from typing import Any

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags

from i2i_jax import checkpoint
from i2i_jax import cli
from i2i_jax import convert_cut
from i2i_jax import families
from i2i_jax.families import vsait as vsait_family
from i2i_jax.models import pretrained
from i2i_jax.models import torch_layout
from i2i_jax.models import vsait


# The command's own flags (not absl's global FLAGS), so that every entry point
# imports next to the others although their flag names overlap (cli.py).
FLAGS = flags.FlagValues()
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Official checkpoint to import: VSAIT's Lightning .ckpt, CUT's "
    "latest_net_G.pth or CycleGAN's latest_net_G_A.pth (the family of --config).",
    required=True, flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A new directory to write the Orbax checkpoint to (a workdir that "
    "`i2i_jax.translate --workdir` and `i2i_jax.train --workdir` accept); one that "
    "already holds checkpoints is refused.", required=True, flag_values=FLAGS)
_VGG = flags.DEFINE_enum(
    "vgg", "checkpoint", ["checkpoint", "config"],
    "VSAIT only: take the VGG19 weights from the checkpoint's feature extractor, or "
    "from config.model.vgg_weights.", flag_values=FLAGS)
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/vsait.py",
    "Config whose `model` block matches the checkpoint's architecture.", flag_values=FLAGS)


def import_official_checkpoint(state_dict: torch_layout.StateDict,
                               config: ml_collections.ConfigDict,
                               vgg_from_checkpoint: bool = True) -> dict[str, Any]:
  """An official VSAIT state dict -> our variables for `config.model`.

  Args:
    state_dict: the `state_dict` of an official Lightning checkpoint (names with
      or without the "model." prefix).
    config: our config; `config.model` must describe the same architecture.
    vgg_from_checkpoint: take the VGG from the checkpoint's feature extractor
      (official checkpoints carry it) rather than from `config.model.vgg_weights`.
  """
  modules = vsait.build_modules(config.model)
  hw = (256, 256)  # any size the five LSH kernels fit; only shapes are traced
  shapes = jax.eval_shape(lambda: vsait.init_variables(modules, jax.random.key(0), hw))
  variables = torch_layout.convert_state_dict(
      state_dict, torch_layout.vsait_names(config.model, with_vgg=vgg_from_checkpoint), shapes)
  if not vgg_from_checkpoint:
    variables["vgg"] = pretrained.load_vgg_variables(config.model.vgg_weights, None)
  return variables


def import_official_generator(state_dict: torch_layout.StateDict,
                              config: ml_collections.ConfigDict,
                              source: str = "state dict") -> Any:
  """An official CUT or CycleGAN generator's state dict -> a train state of config.model.family.

  The state is the family's `init_state` from `jax.random.key(config.seed)`
  with its "generator" replaced by the imported one: the other networks and
  the optimizer states start fresh.

  Args:
    state_dict: an official `latest_net_G.pth` (CUT) or `latest_net_G_A.pth`
      (CycleGAN), as `torch_layout.load_torch_file` reads it.
    config: a config of a family whose `fns.modules.generator` is the official
      ResnetGenerator (configs/cut.py, configs/cyclegan.py); `config.model`
      must describe the same architecture.
    source: what `state_dict` came from, for error messages.
  Raises:
    ValueError: a config key the family cannot run.
    torch_layout.ConversionError: naming `source` and the mismatching parameters.
  """
  family = families.get(config)
  fns = family.make_step_functions(config)
  params = convert_cut.import_official_network(fns.modules.generator, state_dict, source)
  state = jax.jit(family.init_state)(fns, jax.random.key(config.seed))
  return state.replace(variables={**state.variables,
                                  "generator": {"params": jax.tree.map(jnp.asarray, params)}})


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.convert` in this process: `argv` as sys.argv; returns the exit status.

  Raises:
    cli.HelpRequested: --help.
    cli.UsageError: a bad flag, a file that is not a matching checkpoint, a
      workdir that already holds checkpoints.
    cli.RunError: the checkpoint cannot be written.
  """
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments {arguments[1:]}")
  checkpoint.quiet_orbax_logs()
  config = _CONFIG.value
  existing = checkpoint.checkpoint_dir(_WORKDIR.value)
  if existing.exists() and any(existing.iterdir()):
    # Never mix an imported step 0 into a run (or another import): its keep policy
    # could delete the run's own checkpoints, and resuming would be ambiguous.
    raise cli.UsageError(f"--workdir={_WORKDIR.value} already holds checkpoints in "
                         f"{existing}; import into a new, empty --workdir")
  try:
    state_dict = torch_layout.load_torch_file(_CHECKPOINT.value)
  except (FileNotFoundError, ImportError) as e:
    raise cli.UsageError(str(e)) from e
  except Exception as e:  # pylint: disable=broad-except
    # torch raises RuntimeError, UnpicklingError, ... for a file that is not a checkpoint.
    raise cli.UsageError(f"--checkpoint={_CHECKPOINT.value} cannot be read as a PyTorch "
                         f"checkpoint: {type(e).__name__}: {e}") from e
  if families.family_name(config) == "vsait":
    try:
      variables = import_official_checkpoint(state_dict, config, _VGG.value == "checkpoint")
    except (torch_layout.ConversionError, FileNotFoundError, RuntimeError, ValueError) as e:
      raise cli.UsageError(f"--checkpoint={_CHECKPOINT.value}: {e}") from e
    fns = vsait_family.make_step_functions(config)
    state = vsait_family.create_train_state(fns, jax.tree.map(jnp.asarray, variables))
    fresh = "optimizer states start fresh"
  else:
    try:
      state = import_official_generator(state_dict, config, f"--checkpoint={_CHECKPOINT.value}")
    except torch_layout.ConversionError as e:
      raise cli.UsageError(str(e)) from e
    except ValueError as e:
      raise cli.UsageError(f"--config: {e}") from e
    fresh = "the generator; the other networks and the optimizer states start fresh"
  try:
    manager = checkpoint.make_manager(_WORKDIR.value, config.checkpoint)
    checkpoint.save(manager, 0, state, None, config, force=True)
    manager.wait_until_finished()
  except OSError as e:
    raise cli.RunError(f"--workdir={_WORKDIR.value}: cannot write the checkpoint: {e}") from e
  print(f"wrote {checkpoint.checkpoint_dir(_WORKDIR.value)}/0 from {_CHECKPOINT.value} "
        f"({fresh})")
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
