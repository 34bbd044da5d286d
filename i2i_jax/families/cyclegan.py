"""The CycleGAN family: its train state and the family hooks around `losses_cyclegan.train_step`.

The functions `i2i_jax/families/__init__.py` lists as a family's interface are
what the shared trainer, checkpoints, translate and evaluators call; the
networks, the image pools and one step (the official `optimize_parameters`:
forward, G step, D step on pooled fakes) are `i2i_jax.losses_cyclegan`'s. The
trained generator is G_A (source -> target).

The two image pools are part of the train state and so of every checkpoint,
and their draws come from a key in the state folded with the step: a resumed
run continues with the pools and the draws of a straight one (bit-exact). The
official pools use Python's global `random` and are not saved, so an official
run resumed with `--continue_train` starts with empty pools. The data's
randomness (shuffling, crops, flips) lives in the grain iterator,
checkpointed with the state.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from i2i_jax import losses_cut
from i2i_jax import losses_cyclegan
from i2i_jax.data import preprocess
from i2i_jax.models import cut

Variables = dict[str, Any]

NETWORKS = losses_cyclegan.GENERATORS + losses_cyclegan.DISCRIMINATORS
# Crops used only to trace shapes at initialisation: the parameters' shapes do
# not depend on the image size (the nets are fully convolutional).
_INIT_IMAGE_SHAPE = (64, 64, 3)
# losses_cyclegan's loss names (the official ones) -> the logged metrics; those
# named `*_total` are the progress line's.
_METRIC_NAMES = {"G_A": "g_a", "G_B": "g_b", "cycle_A": "cycle_a", "cycle_B": "cycle_b",
                 "idt_A": "idt_a", "idt_B": "idt_b", "G": "g_total",
                 "D_A": "d_a", "D_B": "d_b", "D": "d_total"}


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree; checkpointed whole).

  Attributes:
    step: int32 scalar, optimisation steps done.
    variables: {"generator" (G_A), "inverse_generator" (G_B),
      "target_discriminator" (D_A), "source_discriminator" (D_B)}: {"params": ...}.
    opt_states: {"g": Adam state of both generators (the official optimizer_G),
      "d": of both discriminators (optimizer_D)}.
    pools: {"fake_B": D_A's image pool, "fake_A": D_B's} (`losses_cyclegan.ImagePool`).
    pool_rng: uint32 [2], the key data the step's pool draws come from
      (`fold_in(pool_rng, step)`).
  """
  step: jax.Array
  variables: Variables
  opt_states: dict[str, optax.OptState]
  pools: dict[str, losses_cyclegan.ImagePool]
  pool_rng: jax.Array


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The static parts of a step: modules, optimizer, schedule, loss and pool settings (hashable)."""
  modules: losses_cyclegan.CycleGANModules
  loss_config: ml_collections.FrozenConfigDict
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  pool_size: int
  pool_image_shape: tuple[int, int, int]


def crop_shape(preprocess_spec: str) -> tuple[int, int, int]:
  """(H, W, 3): the size of the training images the ops of `preprocess_spec` make.

  That is the size set by its last resize or crop op (the other ops keep it).

  Raises:
    ValueError: naming config.data.preprocess when no op fixes the size.
  """
  sized = [op for op in preprocess.parse(preprocess_spec)
           if hasattr(op, "height") and hasattr(op, "width")]
  if not sized:
    raise ValueError(f"config.data.preprocess={preprocess_spec!r} fixes no image size; the "
                     "CycleGAN image pools store images of one size: end it with "
                     "resize(h,w), random_crop(h,w) or center_crop(h,w)")
  return (sized[-1].height, sized[-1].width, 3)


def make_step_functions(config: ml_collections.ConfigDict) -> StepFunctions:
  """Builds modules, the optimizer and the pools' size from the whole config (configs/cyclegan.py).

  Raises:
    ValueError: naming the key, for settings CycleGAN or the data pipeline cannot run.
  """
  model = config.model
  if config.grad_accum_steps != 1:
    raise ValueError(f"config.grad_accum_steps={config.grad_accum_steps}: the CycleGAN "
                     "family does not accumulate gradients (set 1)")
  if config.loss.gan_mode != "lsgan":
    raise ValueError(f"config.loss.gan_mode={config.loss.gan_mode!r}: only 'lsgan' (the "
                     "CycleGAN default) is implemented")
  for key in ("input_nc", "output_nc"):
    if model[key] != 3:
      raise ValueError(f"config.model.{key}={model[key]}: the data pipeline and translate "
                       "work on RGB images (3)")
  if model.pool_size < 0:
    raise ValueError(f"config.model.pool_size={model.pool_size}: the number of stored fakes "
                     "per discriminator, 0 or more")
  return StepFunctions(
      modules=losses_cyclegan.build_modules(model, jnp.dtype(config.compute_dtype)),
      loss_config=ml_collections.FrozenConfigDict(config.loss),
      # junyanz's train.py steps the LambdaLR at the start of every epoch.
      optimizer=losses_cut.make_optimizer(config.optimizer, stepped_at_epoch_start=True),
      schedule=losses_cut.learning_rate_schedule(config.optimizer, stepped_at_epoch_start=True),
      pool_size=model.pool_size,
      pool_image_shape=crop_shape(config.data.preprocess))


def _params(variables: Variables) -> Variables:
  return {name: variables[name]["params"] for name in NETWORKS}


def init_state(fns: StepFunctions, rng: jax.Array) -> TrainState:
  """A fresh state from the key `rng` (pure; the trainer jits it into the state's shardings).

  The parameters are drawn with an "rbg" key (XLA's RngBitGenerator) made from
  `rng`: for the ~40 kernels of two generators and two discriminators its
  normal draws compile ~5x faster on CPU than threefry's (3.5 s against 17 s on
  2 shared cores), and they are as deterministic for a given backend and JAX
  version.
  """
  params_seed, pool_rng = jax.random.split(rng)
  params_rng = jax.random.wrap_key_data(jax.random.bits(params_seed, (4,), jnp.uint32),
                                        impl="rbg")
  params = losses_cyclegan.init_params(fns.modules, params_rng, _INIT_IMAGE_SHAPE)
  pool = losses_cyclegan.empty_pool(fns.pool_size, fns.pool_image_shape)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      variables={name: {"params": params[name]} for name in NETWORKS},
      opt_states={
          "g": fns.optimizer.init({k: params[k] for k in losses_cyclegan.GENERATORS}),
          "d": fns.optimizer.init({k: params[k] for k in losses_cyclegan.DISCRIMINATORS})},
      pools={"fake_B": pool, "fake_A": pool},
      pool_rng=jax.random.key_data(pool_rng))


def pretrained_variables(config: ml_collections.ConfigDict, fns: StepFunctions) -> Variables:
  """None: every CycleGAN network starts from its seeded initialisation."""
  del config, fns
  return {}


def batch_keys(fns: StepFunctions) -> tuple[str, ...]:
  del fns
  return ("source", "target")


def translate(variables: Variables, images: jax.Array, fns: StepFunctions,
              source_label: jax.Array | None = None) -> jax.Array:
  """G_A(images): [B, H, W, 3] in [-1, 1] (H, W multiples of 4) -> same shape; no labels."""
  del source_label
  return fns.modules.generator.apply(variables["generator"], images)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               fns: StepFunctions) -> tuple[TrainState, dict[str, jax.Array]]:
  """One official `optimize_parameters` (`losses_cyclegan.train_step`) with this step's pool draws.

  Args:
    state: current state.
    batch: {"source": real_A, "target": real_B}, each [B, H, W, 3] float in [-1, 1],
      H x W the size the pools were made for.
    fns: static step functions.
  Returns:
    (new state, scalar metrics: g_a, g_b, cycle_a, cycle_b, idt_a, idt_b,
    g_total (the official G), d_a, d_b, d_total (D_A + D_B), and g_lr, d_lr:
    the rate this step used).
  Raises:
    ValueError: (when traced) the batch's images are not of the pools' size.
  """
  for key in ("source", "target"):
    if batch[key].shape[1:] != fns.pool_image_shape:
      raise ValueError(f"batch {key!r} images are {batch[key].shape[1:]}, the image pools "
                       f"hold {fns.pool_image_shape} (the last resize or crop of "
                       "config.data.preprocess)")
  pool_rng = jax.random.fold_in(jax.random.wrap_key_data(state.pool_rng), state.step)
  params, opt_states, pools, losses = losses_cyclegan.train_step(
      _params(state.variables), state.opt_states, state.pools, batch["source"],
      batch["target"], pool_rng, fns.modules, fns.loss_config, fns.optimizer)
  metrics = {_METRIC_NAMES[name]: value for name, value in losses.items()}
  metrics["g_lr"] = metrics["d_lr"] = fns.schedule(state.step)
  new_state = state.replace(step=state.step + 1,
                            variables={name: {"params": params[name]} for name in NETWORKS},
                            opt_states=opt_states, pools=pools)
  return new_state, metrics


def trained_generator(config: ml_collections.ConfigDict, variables: Variables,
                      compute_dtype: Any) -> tuple[cut.ResnetGenerator, Variables]:
  """The run's G_A (source -> target) and its variables (`module.apply(variables, images)`)."""
  return (losses_cyclegan.build_modules(config.model, compute_dtype).generator,
          variables["generator"])


def is_fsdp_leaf(path: str) -> bool:
  """Both Adam states may be split over the devices; parameters and pools stay replicated."""
  return path.startswith("opt_states/")


def parameter_groups(variables: Variables) -> Variables:
  """The trained networks' parameters: both generators, both discriminators."""
  return _params(variables)
