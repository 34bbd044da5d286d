"""The CUT objective and its update (official models/cut_model.py, models/patchnce.py, CUT mode).

Losses of one batch (real_A: source images, real_B: target images):

  fake_B, idt_B = G(real_A), G(real_B)                       (one G call on both, as official)
  G_GAN = lsgan(D(fake_B), real) * lambda_GAN
  NCE   = PatchNCE(real_A, fake_B),  NCE_Y = PatchNCE(real_B, idt_B)      (nce_idt)
  G     = G_GAN + (NCE + NCE_Y) / 2                          (G_GAN + NCE without nce_idt)
  D     = (lsgan(D(stop_grad(fake_B)), fake) + lsgan(D(real_B), real)) / 2

and one training step in the official order (`CUTModel.optimize_parameters`):
forward, D step, then the G and F step whose G_GAN sees the *updated* D.
Adam (PyTorch's, no weight decay) for D and for G with F; G and F have separate
official optimizers with the same settings, which is one Adam over both (Adam
acts element by element).
"""

import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from i2i_jax.models import cut

Params = Mapping[str, Any]
# {"nce": ids for NCE(real_A, fake_B), "nce_idt": ids for NCE_Y(real_B, idt_B)},
# each a list of [P_i] int arrays, one per NCE layer.
PatchIds = Mapping[str, Sequence[jax.Array]]


def lsgan_loss(prediction: jax.Array, target_is_real: bool) -> jax.Array:
  """The official `GANLoss("lsgan")`: `mean((prediction - target)^2)`, target 1 (real) or 0."""
  return jnp.mean(jnp.square(prediction - (1.0 if target_is_real else 0.0)))


def patch_nce_loss(feat_q: jax.Array, feat_k: jax.Array, batch_size: int, temperature: float,
                   all_negatives_from_minibatch: bool = False) -> jax.Array:
  """The official `PatchNCELoss`: cross-entropy of each query against its key among negatives.

  Args:
    feat_q: [B * P, C] sampled, projected features of the translation (queries).
    feat_k: [B * P, C] the same positions in the source (keys; no gradient).
    batch_size: B. Negatives of a query are the other P - 1 keys of its image
      (or of the whole batch with `all_negatives_from_minibatch`).
    temperature: `--nce_T`.
  Returns:
    [B * P]: `-log softmax([q.k+, q.k-_1, ...] / T)[0]`, the query's own position
    masked to -10 before the division.
  """
  feat_k = jax.lax.stop_gradient(feat_k)
  channels = feat_q.shape[1]
  positive = jnp.sum(feat_q * feat_k, axis=1, keepdims=True)
  groups = 1 if all_negatives_from_minibatch else batch_size
  queries = feat_q.reshape(groups, -1, channels)
  keys = feat_k.reshape(groups, -1, channels)
  negatives = jnp.einsum("gpc,gnc->gpn", queries, keys)
  npatches = queries.shape[1]
  negatives = jnp.where(jnp.eye(npatches, dtype=bool)[None], -10.0, negatives)
  logits = jnp.concatenate([positive, negatives.reshape(-1, npatches)], axis=1) / temperature
  return -jax.nn.log_softmax(logits, axis=1)[:, 0]


def nce_losses(g_params: Params, f_params: Params, sources: Sequence[jax.Array],
               translations: Sequence[jax.Array], patch_ids: Sequence[Sequence[jax.Array]],
               modules: cut.CUTModules, loss_config: ml_collections.ConfigDict,
               source_features: Sequence[Sequence[jax.Array]] | None = None
               ) -> list[tuple[jax.Array, dict[str, list]]]:
  """The official `calculate_NCE_loss(src, tgt)` of each (source, translation) pair.

  PatchNCE averaged over the NCE layers. The pairs' translations go through G's
  encoder as one batch, and their sources as another (instance norm is per
  image, so each image's features are those of its own pass): fewer, larger
  convolutions than one pass per image set, with the same values.

  Args:
    g_params, f_params: generator and patch-sampler parameters.
    sources: [B, H, W, 3] images the keys come from, per pair (real_A for NCE,
      real_B for NCE_Y).
    translations: [B, H, W, 3] G(source) of each pair (the queries' images).
    patch_ids: per pair, one [P_i] int array per NCE layer (the positions of
      the keys and queries).
    source_features: per pair, G's features of the source at the NCE layers
      when the caller has them (`translate_and_encode`); None: encoded here.
  Returns:
    Per pair, (scalar loss, {"feat_k": [...], "feat_q": [...]} the sampled
    features [B * P_i, nc]).
  """

  def encode(images):
    features = modules.generator.apply({"params": g_params}, jnp.concatenate(images),
                                       modules.nce_layers, encode_only=True)
    batch = images[0].shape[0]
    return [[feature[i * batch:(i + 1) * batch] for feature in features]
            for i in range(len(images))]

  results = []
  if source_features is None:
    source_features = encode(sources)
  for source, query_features, key_features, ids in zip(
      sources, encode(translations), source_features, patch_ids, strict=True):
    sample = functools.partial(modules.patch_sampler.apply, {"params": f_params},
                               patch_ids=ids)
    feat_q, feat_k = sample(query_features), sample(key_features)
    total = 0.0
    for query, key in zip(feat_q, feat_k):
      per_patch = patch_nce_loss(query, key, source.shape[0], loss_config.nce_T,
                                 loss_config.nce_includes_all_negatives_from_minibatch)
      total = total + jnp.mean(per_patch * loss_config.lambda_NCE)
    results.append((total / len(feat_q), {"feat_k": feat_k, "feat_q": feat_q}))
  return results


def translate(g_params: Params, real_a: jax.Array, real_b: jax.Array, modules: cut.CUTModules,
              loss_config: ml_collections.ConfigDict) -> tuple[jax.Array, jax.Array | None]:
  """The official `forward`: (fake_B = G(real_A), idt_B = G(real_B) or None without nce_idt)."""
  return translate_and_encode(g_params, real_a, real_b, modules, loss_config)[0]


def translate_and_encode(g_params: Params, real_a: jax.Array, real_b: jax.Array,
                         modules: cut.CUTModules, loss_config: ml_collections.ConfigDict,
                         ) -> tuple[tuple[jax.Array, jax.Array | None], list | None]:
  """`translate`, and the NCE keys' features from the same forward of G.

  The official code encodes real_A (and real_B) again for the NCE keys; the
  forward that translates them computes the same features on the way, which
  `nce_losses` takes instead of a second pass (the keys get no gradient).

  Returns:
    ((fake_B, idt_B or None), source features): per NCE pair (real_A's, then
    real_B's with nce_idt) the features at `modules.nce_layers`, each
    [B, h_i, w_i, c_i]; None where they would differ from an encoder pass
    (`cut.forward_features_equal_encoder_features`).
  """
  real = jnp.concatenate([real_a, real_b]) if loss_config.nce_idt else real_a
  batch = real_a.shape[0]
  if not cut.forward_features_equal_encoder_features(modules.generator, modules.nce_layers):
    fake = modules.generator.apply({"params": g_params}, real)
    return (fake[:batch], fake[batch:] if loss_config.nce_idt else None), None
  fake, features = modules.generator.apply({"params": g_params}, real, modules.nce_layers)
  pairs = len(real) // batch
  source_features = [[feature[i * batch:(i + 1) * batch] for feature in features]
                     for i in range(pairs)]
  return (fake[:batch], fake[batch:] if loss_config.nce_idt else None), source_features


def generator_loss(gf_params: Params, d_params: Params, real_a: jax.Array, real_b: jax.Array,
                   patch_ids: PatchIds, modules: cut.CUTModules,
                   loss_config: ml_collections.ConfigDict,
                   translations: tuple[jax.Array, jax.Array | None] | None = None,
                   source_features: list | None = None) -> tuple[jax.Array, dict[str, Any]]:
  """The official `compute_G_loss` (after `forward`), differentiable in G and F.

  Args:
    gf_params: {"generator": ..., "patch_sampler": ...}.
    d_params: discriminator parameters (no gradient is taken for them here).
    real_a, real_b: [B, H, W, 3] in [-1, 1].
    patch_ids: see `PatchIds` (`draw_patch_ids`).
    translations, source_features: `translate_and_encode(gf_params["generator"],
      real_a, real_b, ...)` when the caller has it (`train_step`, which
      differentiates through the translations itself); None: computed here.
  Returns:
    (loss G, {"losses": {G_GAN, NCE, NCE_Y, G}, "outputs": {fake_B, idt_B,
    pred_fake, nce, nce_idt}}).
  """
  g_params, f_params = gf_params["generator"], gf_params["patch_sampler"]
  if translations is None:
    translations = translate(g_params, real_a, real_b, modules, loss_config)
  fake_b, idt_b = translations
  losses, outputs = {}, {"fake_B": fake_b, "idt_B": idt_b}
  if loss_config.lambda_GAN > 0:
    outputs["pred_fake"] = modules.discriminator.apply({"params": d_params}, fake_b)
    losses["G_GAN"] = lsgan_loss(outputs["pred_fake"], True) * loss_config.lambda_GAN
  else:
    losses["G_GAN"] = jnp.zeros((), fake_b.dtype)
  nce_both = jnp.zeros((), fake_b.dtype)
  if loss_config.lambda_NCE > 0:
    terms = [("NCE", "nce", real_a, fake_b)]
    if loss_config.nce_idt:
      terms.append(("NCE_Y", "nce_idt", real_b, idt_b))
    results = nce_losses(g_params, f_params, [term[2] for term in terms],
                         [term[3] for term in terms], [patch_ids[term[1]] for term in terms],
                         modules, loss_config, source_features)
    for (loss_name, output_name, _, _), (loss, aux) in zip(terms, results):
      losses[loss_name], outputs[output_name] = loss, aux
    nce_both = (losses["NCE"] + losses["NCE_Y"]) * 0.5 if loss_config.nce_idt else losses["NCE"]
  losses["G"] = losses["G_GAN"] + nce_both
  return losses["G"], {"losses": losses, "outputs": outputs}


def discriminator_loss(d_params: Params, fake_b: jax.Array, real_b: jax.Array,
                       modules: cut.CUTModules) -> tuple[jax.Array, dict[str, Any]]:
  """The official `compute_D_loss`: `(lsgan(D(fake), fake) + lsgan(D(real), real)) / 2`.

  Returns:
    (loss D, {"losses": {D_fake, D_real, D}, "outputs": {pred_fake, pred_real}}).
  """
  pred_fake = modules.discriminator.apply({"params": d_params}, jax.lax.stop_gradient(fake_b))
  pred_real = modules.discriminator.apply({"params": d_params}, real_b)
  losses = {"D_fake": lsgan_loss(pred_fake, False), "D_real": lsgan_loss(pred_real, True)}
  losses["D"] = (losses["D_fake"] + losses["D_real"]) * 0.5
  return losses["D"], {"losses": losses,
                       "outputs": {"pred_fake": pred_fake, "pred_real": pred_real}}


def draw_patch_ids(rng: jax.Array, modules: cut.CUTModules, image_shape: tuple[int, int, int],
                   num_patches: int) -> dict[str, list[jax.Array]]:
  """Fresh patch ids for one step: {"nce": [...], "nce_idt": [...]} (see `cut.sample_patch_ids`).

  image_shape: (H, W, C) of the batch; only the NCE features' shapes matter.
  """
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  shapes = jax.eval_shape(
      lambda p, x: modules.generator.apply({"params": p}, x, modules.nce_layers,
                                           encode_only=True),
      jax.eval_shape(lambda x: modules.generator.init(jax.random.key(0), x)["params"], images),
      images)
  nce_rng, idt_rng = jax.random.split(rng)
  return {"nce": cut.sample_patch_ids(nce_rng, shapes, num_patches),
          "nce_idt": cut.sample_patch_ids(idt_rng, shapes, num_patches)}


def learning_rate_schedule(optimizer_config: ml_collections.ConfigDict,
                           stepped_at_epoch_start: bool = False) -> optax.Schedule:
  """The official `--lr_policy linear` per optimizer step.

  The official LambdaLR steps once per epoch: in epoch e (0-based) the rate is
  `lr * (1 - max(0, e + epoch_count - n_epochs) / (n_epochs_decay + 1))`,
  constant for `n_epochs` epochs, then linear towards 0 over `n_epochs_decay`.
  Here e = step // steps_per_epoch. With `stepped_at_epoch_start` (the train.py
  of junyanz/pytorch-CycleGAN-and-pix2pix, which steps the scheduler at the
  start of every epoch) epoch e trains at the rate of e + 1.
  """
  c = optimizer_config
  scheduler_steps_before = 1 if stepped_at_epoch_start else 0

  def schedule(step):
    epoch = step // c.steps_per_epoch + scheduler_steps_before
    decay = jnp.maximum(0, epoch + c.epoch_count - c.n_epochs) / (c.n_epochs_decay + 1.0)
    return c.learning_rate * (1.0 - decay)

  return schedule


def make_optimizer(optimizer_config: ml_collections.ConfigDict,
                   stepped_at_epoch_start: bool = False) -> optax.GradientTransformation:
  """`torch.optim.Adam(lr, betas=(beta1, beta2))` with the linear schedule (one per network group).

  `stepped_at_epoch_start`: see `learning_rate_schedule`.
  """
  c = optimizer_config
  return optax.adam(learning_rate_schedule(c, stepped_at_epoch_start), b1=c.b1, b2=c.b2,
                    eps=c.eps)


def train_step(params: Params, opt_states: Params, real_a: jax.Array, real_b: jax.Array,
               patch_ids: PatchIds, modules: cut.CUTModules,
               loss_config: ml_collections.ConfigDict, optimizer: optax.GradientTransformation,
               generator_objective: Callable[..., tuple[jax.Array, dict[str, Any]]] = generator_loss
               ) -> tuple[Params, Params, dict[str, jax.Array]]:
  """One official `optimize_parameters`: forward, D step, then G and F step against the new D.

  Args:
    params: {"generator", "patch_sampler", "discriminator"} (`cut.init_params`).
    opt_states: {"gf": optimizer state of {"generator", "patch_sampler"},
      "d": of "discriminator"} (`optimizer.init` of each).
    real_a, real_b: [B, H, W, 3] in [-1, 1].
    patch_ids: from `draw_patch_ids`.
    optimizer: `make_optimizer(config.optimizer)`, used for both groups.
    generator_objective: the G and F loss, with `generator_loss`'s arguments
      (`translations` and `source_features` included) and result (CUT's;
      SRUNIT's adds its robustness term, losses_srunit.py).
  Returns:
    (new params, new optimizer states, every loss of both steps).
  """
  # One forward of G serves both steps, as in the official code: the G and F
  # gradient is the objective's own plus what flows back through the translations.
  def forward(g_params):
    translations, source_features = translate_and_encode(g_params, real_a, real_b, modules,
                                                         loss_config)
    return translations, jax.lax.stop_gradient(source_features)

  translations, translations_vjp, source_features = jax.vjp(forward, params["generator"],
                                                            has_aux=True)
  (_, d_aux), d_grads = jax.value_and_grad(discriminator_loss, has_aux=True)(
      params["discriminator"], translations[0], real_b, modules)
  d_updates, d_state = optimizer.update(d_grads, opt_states["d"], params["discriminator"])
  d_params = optax.apply_updates(params["discriminator"], d_updates)
  gf_params = {"generator": params["generator"], "patch_sampler": params["patch_sampler"]}
  objective = lambda gf_params, translations: generator_objective(
      gf_params, d_params, real_a, real_b, patch_ids, modules, loss_config,
      translations=translations, source_features=source_features)
  (_, g_aux), (gf_grads, translation_grads) = jax.value_and_grad(
      objective, argnums=(0, 1), has_aux=True)(gf_params, translations)
  gf_grads = {**gf_grads, "generator": jax.tree.map(
      jnp.add, gf_grads["generator"], translations_vjp(translation_grads)[0])}
  gf_updates, gf_state = optimizer.update(gf_grads, opt_states["gf"], gf_params)
  gf_params = optax.apply_updates(gf_params, gf_updates)
  return ({**gf_params, "discriminator": d_params}, {"gf": gf_state, "d": d_state},
          {**d_aux["losses"], **g_aux["losses"]})
