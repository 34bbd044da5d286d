"""The CUT family: its train state and the family hooks around `losses_cut.train_step`.

The functions `i2i_jax/families/__init__.py` lists as a family's interface are
what the shared trainer, checkpoints, translate and evaluators call; the
networks are `i2i_jax.models.cut`'s and one step is `losses_cut.train_step`
(the official `optimize_parameters`: forward, D step, then the G and F step
against the updated D), unchanged.

The official code draws the PatchNCE positions from numpy's global generator;
here they come from a key in the state folded with the step, so a resumed run
draws the same positions as a straight one and resume is bit-exact. The data's
randomness (shuffling, crops, flips) lives in the grain iterator, checkpointed
with the state.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from i2i_jax import losses_cut
from i2i_jax.models import cut

Variables = dict[str, Any]

NETWORKS = ("generator", "patch_sampler", "discriminator")
# Crops used only to trace shapes at initialisation: the parameters' shapes do
# not depend on the image size (the nets are fully convolutional, F's MLPs see
# only the features' channels).
_INIT_IMAGE_SHAPE = (64, 64, 3)
# losses_cut's loss names (the official ones) -> the logged metrics; those named
# `*_total` are the progress line's.
_METRIC_NAMES = {"G_GAN": "g_gan", "NCE": "g_nce", "NCE_Y": "g_nce_y", "G": "g_total",
                 "D_fake": "d_fake", "D_real": "d_real", "D": "d_total"}


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree; checkpointed whole).

  Attributes:
    step: int32 scalar, optimisation steps done.
    variables: {"generator", "patch_sampler", "discriminator"}: {"params": ...}.
    opt_states: {"gf": Adam state of {"generator", "patch_sampler"} (the official
      optimizer_G and optimizer_F), "d": of "discriminator"}.
    patch_rng: uint32 [2], the key data the step's PatchNCE positions are drawn
      from (`fold_in(patch_rng, step)`).
  """
  step: jax.Array
  variables: Variables
  opt_states: dict[str, optax.OptState]
  patch_rng: jax.Array


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The static parts of a step: modules, optimizer, schedule and loss settings (hashable)."""
  modules: cut.CUTModules
  loss_config: ml_collections.FrozenConfigDict
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  num_patches: int


def make_step_functions(config: ml_collections.ConfigDict) -> StepFunctions:
  """Builds modules and the optimizer from the whole config (configs/cut.py).

  Raises:
    ValueError: naming the key, for settings CUT or the data pipeline cannot run.
  """
  model = config.model
  if config.grad_accum_steps != 1:
    raise ValueError(f"config.grad_accum_steps={config.grad_accum_steps}: the CUT family "
                     "does not accumulate gradients (set 1)")
  if config.loss.gan_mode != "lsgan":
    raise ValueError(f"config.loss.gan_mode={config.loss.gan_mode!r}: only 'lsgan' (the CUT "
                     "default) is implemented")
  for key in ("input_nc", "output_nc"):
    if model[key] != 3:
      raise ValueError(f"config.model.{key}={model[key]}: the data pipeline and translate "
                       "work on RGB images (3)")
  layer_count = len(cut.generator_layers(model.ngf, model.n_blocks, model.output_nc))
  if not model.nce_layers or any(not 0 <= i < layer_count for i in model.nce_layers):
    raise ValueError(f"config.model.nce_layers={tuple(model.nce_layers)}: indices into the "
                     f"generator's {layer_count} layers (config.model.n_blocks={model.n_blocks})")
  return StepFunctions(
      modules=cut.build_modules(model, jnp.dtype(config.compute_dtype)),
      loss_config=ml_collections.FrozenConfigDict(config.loss),
      optimizer=losses_cut.make_optimizer(config.optimizer),
      schedule=losses_cut.learning_rate_schedule(config.optimizer),
      num_patches=model.num_patches)


def _params(variables: Variables) -> Variables:
  return {name: variables[name]["params"] for name in NETWORKS}


def init_state(fns: StepFunctions, rng: jax.Array) -> TrainState:
  """A fresh state from the key `rng` (pure; the trainer jits it into the state's shardings)."""
  params_rng, patch_rng = jax.random.split(rng)
  params = cut.init_params(fns.modules, params_rng, _INIT_IMAGE_SHAPE)
  gf_params = {"generator": params["generator"], "patch_sampler": params["patch_sampler"]}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      variables={name: {"params": params[name]} for name in NETWORKS},
      opt_states={"gf": fns.optimizer.init(gf_params),
                  "d": fns.optimizer.init(params["discriminator"])},
      patch_rng=jax.random.key_data(patch_rng))


def pretrained_variables(config: ml_collections.ConfigDict, fns: StepFunctions) -> Variables:
  """None: every CUT network starts from its seeded initialisation."""
  del config, fns
  return {}


def batch_keys(fns: StepFunctions) -> tuple[str, ...]:
  del fns
  return ("source", "target")


def translate(variables: Variables, images: jax.Array, fns: StepFunctions,
              source_label: jax.Array | None = None) -> jax.Array:
  """G(images): [B, H, W, 3] in [-1, 1] (H, W multiples of 4) -> same shape; no labels."""
  del source_label
  return fns.modules.generator.apply(variables["generator"], images)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               fns: StepFunctions) -> tuple[TrainState, dict[str, jax.Array]]:
  """One official `optimize_parameters` (`losses_cut.train_step`) on fresh patch positions.

  Args:
    state: current state.
    batch: {"source": real_A, "target": real_B}, each [B, H, W, 3] float in [-1, 1].
    fns: static step functions.
  Returns:
    (new state, scalar metrics: g_gan, g_nce, g_nce_y (with loss.nce_idt),
    g_total, d_fake, d_real, d_total, and g_lr, d_lr: the rate this step used).
  """
  patch_rng = jax.random.fold_in(jax.random.wrap_key_data(state.patch_rng), state.step)
  patch_ids = losses_cut.draw_patch_ids(patch_rng, fns.modules, batch["source"].shape[1:],
                                        fns.num_patches)
  params, opt_states, losses = losses_cut.train_step(
      _params(state.variables), state.opt_states, batch["source"], batch["target"],
      patch_ids, fns.modules, fns.loss_config, fns.optimizer)
  metrics = {_METRIC_NAMES[name]: value for name, value in losses.items()}
  metrics["g_lr"] = metrics["d_lr"] = fns.schedule(state.step)
  new_state = state.replace(step=state.step + 1,
                            variables={name: {"params": params[name]} for name in NETWORKS},
                            opt_states=opt_states)
  return new_state, metrics


def trained_generator(config: ml_collections.ConfigDict, variables: Variables,
                      compute_dtype: Any) -> tuple[cut.ResnetGenerator, Variables]:
  """The run's ResnetGenerator and its variables (`module.apply(variables, images)`)."""
  return cut.build_modules(config.model, compute_dtype).generator, variables["generator"]


def is_fsdp_leaf(path: str) -> bool:
  """Both Adam states may be split over the devices; parameters stay replicated."""
  return path.startswith("opt_states/")


def parameter_groups(variables: Variables) -> Variables:
  """The trained networks' parameters: generator, patch sampler (F), discriminator."""
  return _params(variables)
