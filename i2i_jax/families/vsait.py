"""The VSAIT family: its train state, the pure VSAIT train step, and the family hooks.

The functions `i2i_jax/families/__init__.py` lists as a family's interface
(`make_step_functions`, `init_state`, `pretrained_variables`, `train_step`,
`batch_keys`, `translate`, `trained_generator`, `is_fsdp_leaf`,
`parameter_groups`) are what the shared trainer, checkpoints, translate and
evaluators call; the rest is VSAIT's own.

One step reproduces one optimisation batch of the reference solver:

  G step: loss_G = vsa_coef * vsa + adv, gradients for the generator and the map
          network (the reference's `model.g_net` prefix matches both), Adam update.
  D step: with the *updated* generator and map network, three hinge terms (two
          fakes: the translation's and the mapped source's hypervectors; one real:
          the target's), Adam update of the discriminator.

The VGG and the LSH projections are frozen constants: no optimizer sees them.

Label-guided options (off by default; `i2i_jax/models/label_guidance.py`,
docs/label_guided.md) take the batch's "source_label" [B, H, W]:
  loss.semantic_coef > 0       adds `semantic_coef * CE(seg(G(x)), y_x)` to loss_G,
                               seg the frozen segmenter (also a constant of the step);
  a label-conditioned G        gets y_x in every generator call;
  a class-conditioned D        (projection and/or label-bound inputs) sees each
                               cell's class fractions: y_x's for both fakes, the
                               frozen segmenter's pseudo-labels of the target for the real.

With `config.grad_accum_steps = k` the batch is processed as k micro-batches:
G gradients are averaged over all of them before the G update, then D
gradients (with the updated G) before the D update, so k micro-batches of b
images take the same step as one batch of k*b (every loss is a batch mean).

The step is deterministic: VSAIT draws no random numbers while training (the
reference has no dropout or noise), so the state holds no PRNG key; the data's
randomness (shuffling, crops, flips) lives in the grain iterator, whose state
is checkpointed with the train state.
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from i2i_jax import losses, training, vsa
from i2i_jax.models import label_guidance, pretrained, vsait

Variables = dict[str, Any]

# Crops used only to trace shapes at initialisation (the nets are fully convolutional).
_INIT_IMAGE_SHAPE = (64, 64)


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training (a pytree; checkpointed whole).

  Attributes:
    step: int32 scalar, optimisation batches done.
    variables: all networks' variables (see `i2i_jax.models.vsait`).
    g_opt_state: optimizer state of the generator and map network.
    d_opt_state: optimizer state of the discriminator.
  """
  step: jax.Array
  variables: Variables
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState


def generator_params(variables: Variables) -> Variables:
  """The parameters the G optimizer trains: generator and map network."""
  return {"generator": variables["generator"]["params"],
          "map_net": variables["map_net"]["params"]}


def discriminator_params(variables: Variables) -> Variables:
  return variables["discriminator"]["params"]


def _with_generator_params(variables: Variables, g_params: Variables) -> Variables:
  return {**variables,
          "generator": {**variables["generator"], "params": g_params["generator"]},
          "map_net": {**variables["map_net"], "params": g_params["map_net"]}}


def _with_discriminator_params(variables: Variables, d_params: Variables) -> Variables:
  return {**variables, "discriminator": {**variables["discriminator"], "params": d_params}}


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class StepFunctions:
  """The static parts of a step: modules, optimizers, schedules and loss settings.

  Hashable (frozen, its fields compare by identity or value), as jit's static
  arguments must be; registered as a static pytree so that it can also pass
  through `jax.eval_shape` and friends as a leafless argument.
  """
  modules: vsait.VSAITModules
  g_optimizer: optax.GradientTransformation
  d_optimizer: optax.GradientTransformation
  g_schedule: optax.Schedule
  d_schedule: optax.Schedule
  vsa_coef: float
  gan_loss: str = "hinge"
  grad_accum_steps: int = 1
  semantic_coef: float = 0.0
  # The class-conditioned discriminators read batch["target_label"]
  # (config.data.with_target_labels), not the segmenter's pseudo-labels.
  target_labels: bool = False

  @property
  def needs_source_labels(self) -> bool:
    """Whether the step reads batch["source_label"] (some label-guided option is on)."""
    return bool(self.semantic_coef > 0 or self.modules.generator.label_classes
                or self.modules.discriminator_needs_classes)


def make_step_functions(config: ml_collections.ConfigDict) -> StepFunctions:
  """Builds modules and optimizers from the whole config."""
  if config.loss.gan not in losses.GENERATOR_GAN_LOSSES:
    raise ValueError(f"config.loss.gan={config.loss.gan!r} is not one of "
                     f"{sorted(losses.GENERATOR_GAN_LOSSES)}")
  grad_accum_steps = config.get("grad_accum_steps", 1)
  if grad_accum_steps < 1:
    raise ValueError(f"config.grad_accum_steps={grad_accum_steps} must be >= 1")
  opt = config.optimizer
  g_schedule = training.learning_rate_schedule(opt.g, opt.lr_decay_steps, opt.lr_decay_factor)
  d_schedule = training.learning_rate_schedule(opt.d, opt.lr_decay_steps, opt.lr_decay_factor)
  modules = vsait.build_modules(config.model, jnp.dtype(config.compute_dtype))
  semantic_coef = config.loss.get("semantic_coef", 0.0)
  if modules.segmenter is None and semantic_coef > 0:
    raise ValueError(f"config.loss.semantic_coef={semantic_coef} needs the frozen segmenter "
                     "config.model.semantic_segmenter (a train_segmenter folder)")
  target_labels = config.data.get("with_target_labels", False)  # configs older than the key
  if target_labels and not modules.discriminator_needs_classes:
    raise ValueError("config.data.with_target_labels is read only by "
                     "config.model.class_conditional_discriminator and "
                     "label_bound_discriminator; turn one on or leave it off")
  if modules.segmenter is None and modules.discriminator_needs_classes and not target_labels:
    raise ValueError("config.model.class_conditional_discriminator and "
                     "label_bound_discriminator need config.model.semantic_segmenter (a "
                     "train_segmenter folder) for the target's pseudo-labels, or the "
                     "target's own labels (config.data.with_target_labels)")
  return StepFunctions(
      modules=modules,
      g_optimizer=training.make_optimizer(opt.g, g_schedule),
      d_optimizer=training.make_optimizer(opt.d, d_schedule),
      g_schedule=g_schedule,
      d_schedule=d_schedule,
      vsa_coef=config.loss.vsa_coef,
      gan_loss=config.loss.gan,
      grad_accum_steps=grad_accum_steps,
      semantic_coef=semantic_coef,
      target_labels=target_labels,
  )


def create_train_state(fns: StepFunctions, variables: Variables) -> TrainState:
  """A fresh state (step 0, empty optimizer moments) around `variables`."""
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      variables=variables,
      g_opt_state=fns.g_optimizer.init(generator_params(variables)),
      d_opt_state=fns.d_optimizer.init(discriminator_params(variables)),
  )


def init_state(fns: StepFunctions, rng: jax.Array) -> TrainState:
  """A fresh state from `rng` (pure; the trainer jits it into the state's shardings)."""
  return create_train_state(fns, vsait.init_variables(fns.modules, rng, _INIT_IMAGE_SHAPE))


def pretrained_variables(config: ml_collections.ConfigDict, fns: StepFunctions) -> Variables:
  """The frozen networks' variables read from the files the config names.

  {"vgg": ...} unless config.model.vgg_weights="random" (then `init_state`'s
  seeded weights stay), and {"segmenter": {"params": ...}} from
  config.model.semantic_segmenter when set.

  Raises:
    ValueError: naming the key, for a folder that is no segmenter of
      config.model.label_classes classes, or for label-guided options without
      config.data.with_labels.
    FileNotFoundError: VGG weights that are neither cached nor downloadable.
  """
  if fns.needs_source_labels and not config.data.with_labels:
    raise ValueError("the label-guided options (config.loss.semantic_coef, "
                     "config.model.label_conditioned_generator, class_conditional_discriminator, "
                     "label_bound_discriminator) need source labels: set "
                     "--config.data.with_labels=True")
  if (fns.modules.segmenter is None and fns.modules.generator.label_classes
      and config.evals):
    raise ValueError("config.model.label_conditioned_generator with config.evals needs "
                     "config.model.semantic_segmenter: evaluators pass no labels, so the "
                     "generator gets the segmenter's")
  variables = {}
  if fns.modules.segmenter is not None:
    variables["segmenter"] = {"params": label_guidance.restore_segmenter_params(
        config.model.semantic_segmenter, config.model.label_classes, vsait.SEGMENTER_FEATURES)}
  if config.model.vgg_weights != "random":
    variables["vgg"] = pretrained.load_vgg_variables(config.model.vgg_weights, None)
  return variables


def batch_keys(fns: StepFunctions) -> tuple[str, ...]:
  """The batch entries `train_step` reads: the labels only for the label-guided options."""
  return (("source", "target") + (("source_label",) if fns.needs_source_labels else ())
          + (("target_label",) if fns.target_labels else ()))


def _check_labels(source_label: jax.Array | None, fns: StepFunctions) -> None:
  if fns.needs_source_labels and source_label is None:
    raise ValueError("a label-guided option is on but the batch has no 'source_label'; set "
                     "config.data.with_labels=True (and config.data.source_labels for "
                     "folder sources)")


def translate(variables: Variables, images: jax.Array, fns: StepFunctions,
              source_label: jax.Array | None = None) -> jax.Array:
  """G(images) [B, H, W, 3] in [-1, 1], for logging and evaluation.

  A label-conditioned generator takes `source_label` [B, H, W] when given,
  else the frozen segmenter's pseudo-labels of `images` (evaluators pass no labels).
  """
  generator = fns.modules.generator
  if not generator.label_classes:
    return generator.apply(variables["generator"], images)
  if source_label is None:
    if fns.modules.segmenter is None:
      raise ValueError("the label-conditioned generator got no labels, and without "
                       "config.model.semantic_segmenter none can be predicted")
    source_label = label_guidance.pseudo_labels(fns.modules.segmenter, variables["segmenter"],
                                                images)
  return generator.apply(variables["generator"], images, source_label)


def discriminate(d_variables: Variables, hypervectors: jax.Array,
                 class_fractions: jax.Array | None, fns: StepFunctions) -> jax.Array:
  """Discriminator logits [B, h, w, 1] of hypervectors [B, h, w, D].

  With label-bound inputs the hypervectors are first bound with their cells'
  class hypervectors; a projection discriminator also gets the class fractions
  [B, h, w, K] (None when the discriminator is the paper's).
  """
  modules = fns.modules
  if modules.label_bound_discriminator:
    codebook = vsa.class_codebook(modules.label_classes, hypervectors.shape[-1])
    hypervectors = vsa.bind(hypervectors, vsa.label_hypervectors(class_fractions, codebook))
  if modules.class_conditional_discriminator:
    return modules.discriminator.apply(d_variables, hypervectors, class_fractions)
  return modules.discriminator.apply(d_variables, hypervectors)


def _class_fractions(labels: jax.Array, hypervectors: jax.Array,
                     fns: StepFunctions) -> jax.Array | None:
  """labels [B, H, W] pooled onto the grid of hypervectors [B, h, w, D], if D needs them."""
  if not fns.modules.discriminator_needs_classes:
    return None
  return label_guidance.class_fractions(labels, fns.modules.label_classes,
                                        hypervectors.shape[1:3])


def generator_loss(g_params: Variables, variables: Variables, source: jax.Array,
                   fns: StepFunctions, source_label: jax.Array | None = None
                   ) -> tuple[jax.Array, dict[str, Any]]:
  """`vsa_coef * vsa + adv (+ semantic_coef * semantic)` for sources [B, H, W, 3] in [-1, 1].

  The VSA term sees the map network's key and the source hypervectors as
  constants (the map network learns only through the adversarial term).
  `source_label` [B, H, W] (255 = ignore) is needed by the label-guided options.

  Returns:
    (total loss, aux) with aux["losses"] = {"vsa", "adv", "total"} (and
    "semantic" when semantic_coef > 0) and aux["outputs"] = {"translated",
    "hv_source", "hv_translated", "key", "hv_source_bound", "d_translated",
    "d_source_bound"} for inspection.
  """
  _check_labels(source_label, fns)
  modules = fns.modules
  variables = _with_generator_params(variables, g_params)
  translated = translate(variables, source, fns, source_label)
  hv_translated = modules.hypervectors(variables, translated)
  hv_source = jax.lax.stop_gradient(modules.hypervectors(variables, source))
  key = modules.map_net.apply(variables["map_net"], hv_source)
  vsa_term = losses.vsa_loss(
      vsa.unbind(hv_translated, jax.lax.stop_gradient(key)), hv_source)
  hv_source_bound = vsa.bind(hv_source, key)
  classes = _class_fractions(source_label, hv_source, fns)
  d_translated = discriminate(variables["discriminator"], hv_translated, classes, fns)
  d_source_bound = discriminate(variables["discriminator"], hv_source_bound, classes, fns)
  adv = losses.GENERATOR_GAN_LOSSES[fns.gan_loss]([d_translated, d_source_bound])
  total = fns.vsa_coef * vsa_term + adv
  generator_losses = {"vsa": vsa_term, "adv": adv}
  if fns.semantic_coef > 0:
    logits = modules.segmenter.apply(variables["segmenter"],
                                     label_guidance.segmenter_images(translated))
    generator_losses["semantic"] = losses.semantic_consistency_loss(logits, source_label)
    total = total + fns.semantic_coef * generator_losses["semantic"]
  aux = {
      "losses": {**generator_losses, "total": total},
      "outputs": {"translated": translated, "hv_source": hv_source,
                  "hv_translated": hv_translated, "key": key,
                  "hv_source_bound": hv_source_bound, "d_translated": d_translated,
                  "d_source_bound": d_source_bound},
  }
  return total, aux


def discriminator_inputs(variables: Variables, source: jax.Array, target: jax.Array,
                         hv_source: jax.Array, fns: StepFunctions,
                         source_label: jax.Array | None = None,
                         target_label: jax.Array | None = None) -> dict[str, jax.Array]:
  """What the D step discriminates, from the (already updated) generator and map network.

  Args:
    source_label, target_label: [B, H, W] uint8 label maps (255 = ignore); the
      target's, when given, replace the segmenter's pseudo-labels of `target`.
  Returns:
    {"translated": [B,H,W,3], "hv_translated", "hv_source_bound", "hv_target": [B,h,w,D]},
    with a class-conditioned discriminator also "source_classes" and
    "target_classes" [B,h,w,K] (the target's from `target_label`, else from the
    segmenter's pseudo-labels).
  """
  _check_labels(source_label, fns)
  modules = fns.modules
  translated = translate(variables, source, fns, source_label)
  key = modules.map_net.apply(variables["map_net"], hv_source)
  inputs = {
      "translated": translated,
      "hv_translated": modules.hypervectors(variables, translated),
      "hv_source_bound": vsa.bind(hv_source, key),
      "hv_target": modules.hypervectors(variables, target),
  }
  if modules.discriminator_needs_classes:
    if target_label is None:
      target_label = label_guidance.pseudo_labels(modules.segmenter, variables["segmenter"],
                                                  target)
    inputs["source_classes"] = _class_fractions(source_label, hv_source, fns)
    inputs["target_classes"] = _class_fractions(target_label, inputs["hv_target"], fns)
  return inputs


def discriminator_loss(d_params: Variables, inputs: dict[str, jax.Array],
                       fns: StepFunctions) -> tuple[jax.Array, dict[str, Any]]:
  """Hinge loss of the discriminator on two fakes and one real (weights 1/3 each)."""
  source_classes, target_classes = inputs.get("source_classes"), inputs.get("target_classes")
  apply = lambda hv, classes: discriminate({"params": d_params}, hv, classes, fns)
  d_translated = apply(inputs["hv_translated"], source_classes)
  d_source_bound = apply(inputs["hv_source_bound"], source_classes)
  d_target = apply(inputs["hv_target"], target_classes)
  total = losses.DISCRIMINATOR_GAN_LOSSES[fns.gan_loss](
      [d_translated, d_source_bound], [d_target])
  return total, {"d_translated": d_translated, "d_source_bound": d_source_bound,
                 "d_target": d_target}


def train_step(state: TrainState, batch: dict[str, jax.Array],
               fns: StepFunctions) -> tuple[TrainState, dict[str, jax.Array]]:
  """One reference optimisation batch: G (and map network) update, then D update.

  Args:
    state: current state.
    batch: {"source": [B, H, W, 3], "target": [B, H, W, 3]} float in [-1, 1]
      (and "source_label": [B, H, W] uint8, 255 = ignore, which the
      label-guided options read; "target_label" likewise with
      `fns.target_labels`); B a multiple of `fns.grad_accum_steps`.
    fns: static step functions (close over them with functools.partial before jit).
  Returns:
    (new state, scalar metrics: g_vsa, g_adv, g_total (g_semantic with
    loss.semantic_coef > 0), d_total (batch means of the losses), g_lr, d_lr
    (the learning rates this step used)).
  """
  count = fns.grad_accum_steps
  sources = training.micro_batches(batch["source"], count)
  targets = training.micro_batches(batch["target"], count)
  # Labels travel only when an option reads them, so the paper's step is unchanged.
  labels = (training.micro_batches(batch["source_label"], count)
            if fns.needs_source_labels and "source_label" in batch else None)
  target_labels = (training.micro_batches(batch["target_label"], count)
                   if fns.target_labels else None)

  g_params = generator_params(state.variables)
  g_grad_fn = jax.value_and_grad(generator_loss, has_aux=True)

  def g_micro_step(micro_batch):
    source, source_label = micro_batch
    (_, aux), grads = g_grad_fn(g_params, state.variables, source, fns, source_label)
    return (grads, aux["losses"]), aux["outputs"]["hv_source"]

  loss_names = ["vsa", "adv", "total"] + (["semantic"] if fns.semantic_coef > 0 else [])
  zero_losses = dict.fromkeys(loss_names, 0.0)
  (g_grads, g_losses), hv_sources = training.mean_over_micro_batches(
      g_micro_step, (g_params, zero_losses), (sources, labels), count)
  g_updates, g_opt_state = fns.g_optimizer.update(g_grads, state.g_opt_state, g_params)
  variables = _with_generator_params(state.variables, optax.apply_updates(g_params, g_updates))

  d_params = discriminator_params(variables)
  d_grad_fn = jax.value_and_grad(discriminator_loss, has_aux=True)

  def d_micro_step(micro_batch):
    source, target, hv_source, source_label, target_label = micro_batch
    d_inputs = jax.lax.stop_gradient(discriminator_inputs(
        variables, source, target, hv_source, fns, source_label, target_label))
    (d_total, _), grads = d_grad_fn(d_params, d_inputs, fns)
    return (grads, d_total), None

  (d_grads, d_total), _ = training.mean_over_micro_batches(
      d_micro_step, (d_params, 0.0), (sources, targets, hv_sources, labels, target_labels),
      count)
  d_updates, d_opt_state = fns.d_optimizer.update(d_grads, state.d_opt_state, d_params)
  variables = _with_discriminator_params(variables, optax.apply_updates(d_params, d_updates))

  metrics = {f"g_{k}": v for k, v in g_losses.items()}
  metrics["d_total"] = d_total
  metrics["g_lr"] = fns.g_schedule(state.step)
  metrics["d_lr"] = fns.d_schedule(state.step)
  new_state = state.replace(step=state.step + 1, variables=variables,
                            g_opt_state=g_opt_state, d_opt_state=d_opt_state)
  return new_state, metrics


def trained_generator(config: ml_collections.ConfigDict, variables: Variables,
                      compute_dtype: Any) -> tuple[Any, Variables]:
  """(module, its variables) that translate as `module.apply(variables, images)`.

  Args:
    config: the run's config, as its checkpoint saved it.
    variables: the checkpoint's `state.variables`.
    compute_dtype: the dtype of the activations.
  A label-conditioned generator comes as a `label_guidance.PseudoLabelledGenerator`:
  its frozen source segmenter gives it the classes of the images it translates.

  Raises:
    ValueError: a label-conditioned generator trained without its segmenter.
  """
  modules = vsait.build_modules(config.model, compute_dtype)
  if not modules.generator.label_classes:
    return modules.generator, variables["generator"]
  if modules.segmenter is None:
    raise ValueError("a label-conditioned generator trained without "
                     "config.model.semantic_segmenter; nothing can give it the classes of "
                     "the images it translates")
  return (label_guidance.PseudoLabelledGenerator(modules.generator, modules.segmenter),
          {"generator": variables["generator"], "segmenter": variables["segmenter"]})


def is_fsdp_leaf(path: str) -> bool:
  """Whether FSDP may split the TrainState leaf at `path` ("variables/lsh/constants/weight_0").

  The fixed LSH projections (the largest arrays: 16*16*64*4096 floats for the
  first VGG map of the paper model) and both optimizer states; trained
  parameters stay replicated.
  """
  return path.startswith(("g_opt_state/", "d_opt_state/", "variables/lsh/"))


def parameter_groups(variables: Variables) -> dict[str, Variables]:
  """The trained networks' parameters by name (generator, map network, discriminator)."""
  return {**generator_params(variables), "discriminator": discriminator_params(variables)}
