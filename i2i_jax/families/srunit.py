"""The SRUNIT family: CUT's family (`families/cut.py`) with SRUNIT's step (`losses_srunit`).

State, initialisation, translate, the trained generator and sharding are
CUT's: SRUNIT has the same three networks (its netF differs only in the
normalisation, `losses_srunit.PatchSampleF`, same parameters). The step is
`losses_cut.train_step` with `losses_srunit.generator_loss` as the G and F
objective. Each step draws, from `fold_in(patch_rng, step)`, the PatchNCE
positions, the robustness layer (uniform over `loss.reg_layers`, the official
`np.random.choice`), its noise, magnitudes and positions, so a resumed run
draws what a straight one does.

While the robustness loss is inactive (epochs up to `loss.inact_epochs`) the
official `optimize_parameters` steps D only: G and F are neither updated nor
their Adam states advanced. `loss.freeze_generator_while_inactive` (True, the
official behaviour) keeps that; False trains G and F as CUT does meanwhile
(what the paper describes).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections

from i2i_jax import losses_cut
from i2i_jax import losses_srunit
from i2i_jax.families import cut as cut_family
from i2i_jax.models import cut

TrainState = cut_family.TrainState
init_state = cut_family.init_state
pretrained_variables = cut_family.pretrained_variables
batch_keys = cut_family.batch_keys
translate = cut_family.translate
trained_generator = cut_family.trained_generator
is_fsdp_leaf = cut_family.is_fsdp_leaf
parameter_groups = cut_family.parameter_groups

_METRIC_NAMES = {**cut_family._METRIC_NAMES, "reg": "g_reg"}  # pylint: disable=protected-access


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StepFunctions(cut_family.StepFunctions):
  """CUT's static step parts (SRUNIT's modules) and the optimizer config (for the epoch)."""
  optimizer_config: ml_collections.FrozenConfigDict = None


def make_step_functions(config: ml_collections.ConfigDict) -> StepFunctions:
  """CUT's checks and step parts, SRUNIT's modules and checks of `config.loss` (configs/srunit.py).

  Raises:
    ValueError: naming the key, for settings SRUNIT cannot run.
  """
  cut_fns = cut_family.make_step_functions(config)
  loss, model = config.loss, config.model
  if loss.reg_type not in ("v1", "v2"):
    raise ValueError(f"config.loss.reg_type={loss.reg_type!r}: 'v1' or 'v2'")
  if loss.reg_variant not in ("official", "paper"):
    raise ValueError(f"config.loss.reg_variant={loss.reg_variant!r}: 'official' or 'paper'")
  if loss.reg > 0 and not loss.reg_noise > 0:
    raise ValueError(f"config.loss.reg_noise={loss.reg_noise}: must be > 0 with loss.reg > 0")
  if loss.reg > 0 and not loss.lambda_NCE > 0:
    raise ValueError(f"config.loss.lambda_NCE={loss.lambda_NCE}: the official SRUNIT steps "
                     "netF only with lambda_NCE > 0, which loss.reg > 0 needs")
  nce_count = len(model.nce_layers)
  if not loss.reg_layers or any(not 0 <= i < nce_count for i in loss.reg_layers):
    raise ValueError(f"config.loss.reg_layers={tuple(loss.reg_layers)}: indices into "
                     f"config.model.nce_layers ({nce_count} layers)")
  entries = cut.generator_layers(model.ngf, model.n_blocks, model.output_nc)
  followed_by_relu = [i for i in model.nce_layers
                      if i + 1 < len(entries) and entries[i + 1][0] == "relu"]
  if followed_by_relu:
    # The official SRUNIT takes the NCE keys from its full forward, where the
    # in-place ReLU has overwritten such a feature (CUT's encoder pass has not).
    raise ValueError(f"config.model.nce_layers={tuple(model.nce_layers)}: layers "
                     f"{followed_by_relu} are followed by a ReLU (with config.model.n_blocks="
                     f"{model.n_blocks}); SRUNIT here needs NCE layers that are not")
  return StepFunctions(
      **{f.name: getattr(cut_fns, f.name) for f in dataclasses.fields(cut_fns)} | {
          "modules": losses_srunit.build_modules(model, jnp.dtype(config.compute_dtype))},
      optimizer_config=ml_collections.FrozenConfigDict(config.optimizer))


def _draw_robustness(rng: jax.Array, fns: StepFunctions, image_shape: tuple[int, ...]):
  """`losses_srunit.robustness_loss` on a random layer of `loss.reg_layers`, with fresh draws.

  Each candidate layer gets its draws from the same key (those of the drawn
  layer are what drawing for it alone gives); the layer itself is traced.
  """
  choice_rng, draw_rng = jax.random.split(rng)
  reg_layers = tuple(fns.loss_config.reg_layers)
  choice = jnp.asarray(reg_layers)[jax.random.randint(choice_rng, (), 0, len(reg_layers))]
  perturbations = {
      candidate: losses_srunit.draw_perturbation(
          draw_rng, losses_srunit.robustness_feature_shape(fns.modules, image_shape, candidate),
          fns.num_patches, fns.loss_config.reg_noise, fns.loss_config.reg_variant)
      for candidate in set(reg_layers)}
  return functools.partial(losses_srunit.robustness_loss, perturbations=perturbations,
                           choice=choice, modules=fns.modules, loss_config=fns.loss_config)


def train_step(state: TrainState, batch: dict[str, jax.Array],
               fns: StepFunctions) -> tuple[TrainState, dict[str, jax.Array]]:
  """One official SRUNIT `optimize_parameters(epoch)` on fresh draws.

  Args:
    state: current state.
    batch: {"source": real_A, "target": real_B}, each [B, H, W, 3] float in [-1, 1].
    fns: static step functions.
  Returns:
    (new state, scalar metrics: CUT's (`families/cut.py`) and g_reg, the
    robustness loss (0 while inactive, as the official log)).
  """
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.patch_rng), state.step)
  nce_rng, reg_rng = jax.random.split(step_rng)
  patch_ids = losses_cut.draw_patch_ids(nce_rng, fns.modules, batch["source"].shape[1:],
                                        fns.num_patches)
  robustness = _draw_robustness(reg_rng, fns, batch["source"].shape)
  active = losses_srunit.robustness_is_active(state.step, fns.loss_config, fns.optimizer_config)
  weight = jnp.where(active, fns.loss_config.reg, 0.0)
  objective = functools.partial(losses_srunit.generator_loss, robustness=robustness,
                                robustness_weight=weight)
  params = cut_family._params(state.variables)  # pylint: disable=protected-access
  new_params, opt_states, losses = losses_cut.train_step(
      params, state.opt_states, batch["source"], batch["target"], patch_ids, fns.modules,
      fns.loss_config, fns.optimizer, objective)
  if fns.loss_config.reg > 0 and fns.loss_config.freeze_generator_while_inactive:
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)
    for name in ("generator", "patch_sampler"):
      new_params[name] = keep(new_params[name], params[name])
    opt_states = {**opt_states, "gf": keep(opt_states["gf"], state.opt_states["gf"])}
  losses["reg"] = jnp.where(active, losses["reg"], 0.0)
  metrics = {_METRIC_NAMES[name]: value for name, value in losses.items()}
  metrics["g_lr"] = metrics["d_lr"] = fns.schedule(state.step)
  new_state = state.replace(
      step=state.step + 1,
      variables={name: {"params": new_params[name]} for name in cut_family.NETWORKS},
      opt_states=opt_states)
  return new_state, metrics
