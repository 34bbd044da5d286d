"""SRUNIT's semantic-robustness loss on top of CUT (official SeanJia/SRUNIT models/srunit_model.py).

SRUNIT is CUT (`losses_cut`) plus one term. Each step one NCE layer l is
picked (`--reg_layers`, indices into `--nce_layers`); the generator's feature
of real_A at l gets a random perturbation of norm `--reg_noise` at every
position, runs through the rest of the generator and back through its encoder
to l; the official loss is

  reg = mean_p( ||F_l(perturbed)_p - F_l(feature)_p|| / m_p ) / len(nce_layers)

over the PatchNCE positions p (F_l: netF's MLP of layer l), where m_p is a
magnitude drawn uniformly in [1e-7, reg_noise] per position: the official code
draws it but perturbs by `reg_noise` itself, and divides by the whole NCE layer
count although one layer is used. Both are kept. The official key is the clean
feature itself, so the numerator is mostly the gap between the feature of x and
that of G(x) (the round trip), not the perturbation's effect, and the divisor
(down to 1e-7) weighs a few positions up to 1e4x the others: on the toy worlds
the term drives G's NCE loss up once it is active (docs/srunit.md).
`loss.reg_variant = "paper"` (default "official") computes the paper's ratio
instead: the perturbation at p has norm m_p and the key is the clean feature's
round trip,

  reg = mean_p( ||F_l(E_l(T_l(f + m_p u_p)))_p - F_l(E_l(T_l(f)))_p|| / m_p ) / len(nce_layers)

(T_l: the generator after l; E_l: its layers up to l; u_p: the unit noise). The
G and F objective is
`G + reg * reg_loss` (`--reg_type v2`, the default) or, with `v1`, the same for G
while F gets no gradient of the robustness term.

The official netF normalises `(x + 1e-12) / ||x + 1e-12||` (CUT: `x / (||x|| + 1e-7)`),
which matters in float32 where netF's outputs are small: `PatchSampleF` here.
"""

import functools
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from i2i_jax import losses_cut
from i2i_jax.models import cut

Params = losses_cut.Params


class PatchSampleF(cut.PatchSampleF):
  """SRUNIT's netF: CUT's sampled MLP projections (same parameters), SRUNIT's normalisation.

  `mlp_indices[i]` names the MLP of feature map i (default i): the robustness
  loss runs one NCE layer's feature through that layer's MLP (official `choice`).
  """

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], patch_ids: Sequence[jax.Array],
               mlp_indices: Sequence[int] | None = None) -> list[jax.Array]:
    """features: list of [B, h_i, w_i, c_i]; patch_ids: list of [P_i] int -> list of [B * P_i, nc]."""
    mlp_indices = range(len(features)) if mlp_indices is None else mlp_indices
    pooled = []
    for i, feature, ids in zip(mlp_indices, features, patch_ids, strict=True):
      batch, height, width, channels = feature.shape
      x = feature.reshape(batch, height * width, channels)[:, ids, :].reshape(-1, channels)
      x = nn.Dense(self.nc, dtype=self.dtype, kernel_init=cut.xavier_normal_gain_002,
                   name=f"mlp_{i}_0")(x.astype(self.dtype))
      x = nn.Dense(self.nc, dtype=self.dtype, kernel_init=cut.xavier_normal_gain_002,
                   name=f"mlp_{i}_2")(nn.relu(x))
      x = x + 1e-12
      pooled.append(x / jnp.sqrt(jnp.sum(jnp.square(x), axis=1, keepdims=True)))
    return pooled


class PerturbedGenerator(cut.ResnetGenerator):
  """The generator with offsets added to some layers' outputs: G(x) with a perturbed feature.

  Same attributes and parameters as `cut.ResnetGenerator` (apply it with G's
  params). An offset on the output of layer l is the official round trip of
  the perturbed feature, `netG(layers=, feats=, noises=)`: the layers after l
  on E_l(x) + offset.
  """

  @nn.compact
  def __call__(self, images: jax.Array,  # pylint: disable=arguments-renamed
               offsets: Mapping[int, jax.Array]) -> jax.Array:
    """images: [B, H, W, C_in]; offsets: official layer index -> [B, h, w, c].

    Returns [B, H, W, output_nc].
    """
    entries = cut.generator_layers(self.ngf, self.n_blocks, self.output_nc, self.antialias,
                                   self.antialias_up)
    x = images.astype(self.dtype)
    for index, (kind, width) in enumerate(entries):
      x = self._apply_layer(index, kind, width, x)
      if index in offsets:
        x = x + offsets[index].astype(x.dtype)
    return x


def build_modules(model_config: ml_collections.ConfigDict, dtype: Any = jnp.float32
                  ) -> cut.CUTModules:
  """CUT's G and D (`cut.build_modules`) with SRUNIT's netF."""
  return cut.build_modules(model_config, dtype)._replace(
      patch_sampler=PatchSampleF(model_config.netF_nc, dtype))


def perturbed_generator(modules: cut.CUTModules) -> PerturbedGenerator:
  g = modules.generator
  return PerturbedGenerator(g.ngf, g.n_blocks, g.output_nc, g.dtype, g.antialias,
                            g.antialias_up, g.kernel_init)


def robustness_feature_shape(modules: cut.CUTModules, image_shape: tuple[int, ...],
                             choice: int) -> tuple[int, ...]:
  """[B, h, w, c] of the feature at NCE layer `choice` for images [B, H, W, 3]."""
  images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  params = jax.eval_shape(lambda x: modules.generator.init(jax.random.key(0), x)["params"],
                          images)
  feature, = jax.eval_shape(
      lambda p, x: modules.generator.apply({"params": p}, x, [modules.nce_layers[choice]],
                                           encode_only=True), params, images)
  return feature.shape


def draw_perturbation(rng: jax.Array, feature_shape: tuple[int, ...], num_patches: int,
                      reg_noise: float, variant: str = "official") -> dict[str, jax.Array]:
  """The official draws of one step for a feature [B, h, w, c], in float32 as there.

  Args:
    variant: `loss.reg_variant`; "paper" scales each position's offset by its
      magnitude instead of `reg_noise`.
  Returns:
    {"offset": [B, h, w, c] a standard normal (official `torch.randn`) divided by
     its norm over c (+ 1e-12), times `reg_noise` ("paper": times "magnitude"):
     added to the feature;
     "magnitude": [B, h, w, 1] 1e-7 + (reg_noise - 1e-7) * uniform [0, 1)
     (official `torch.rand`): the loss's divisor;
     "patch_ids": [min(num_patches, h * w)] distinct positions}.
  """
  noise_rng, magnitude_rng, ids_rng = jax.random.split(rng, 3)
  batch, height, width, _ = feature_shape
  noise = jax.random.normal(noise_rng, feature_shape, jnp.float32)
  unit_noise = noise / (jnp.sqrt(jnp.sum(jnp.square(noise), axis=-1, keepdims=True)) + 1e-12)
  uniform = jax.random.uniform(magnitude_rng, (batch, height, width, 1), jnp.float32)
  magnitude = 1e-7 + (reg_noise - 1e-7) * uniform
  return {"offset": unit_noise * (magnitude if variant == "paper" else reg_noise),
          "magnitude": magnitude,
          "patch_ids": jax.random.permutation(ids_rng, height * width)[
              :min(num_patches, height * width)]}


def robustness_loss(g_params: Params, f_params: Params, real_a: jax.Array,
                    perturbations: Mapping[int, dict[str, jax.Array]], choice: jax.Array | int,
                    modules: cut.CUTModules, loss_config: ml_collections.ConfigDict
                    ) -> tuple[jax.Array, dict[str, Any]]:
  """The official `compute_reg_loss` on NCE layer `choice`, or the paper's (module docstring).

  Every candidate layer (the keys of `perturbations`) runs in one generator
  pass: the offsets of the layers not chosen are zero and their losses masked,
  so the value and the gradients are those of the chosen layer alone. A traced
  choice so needs no `lax.switch`, whose branches XLA:CPU compiles without its
  convolution libraries (a 256x256 SRUNIT step took 6x as long).

  Args:
    g_params, f_params: generator and patch-sampler parameters (with `v1`, F
      gets no gradient of this loss).
    real_a: [B, H, W, 3] the source images.
    perturbations: index into `modules.nce_layers` -> `draw_perturbation` for the
      feature at that layer, for each candidate layer.
    choice: int32 scalar, may be traced: the perturbed layer, a key of
      `perturbations`.
  Returns:
    (scalar loss, {"feat_k", "feat_q": per candidate (sorted), [B * P, nc] netF
    of the clean and the perturbed feature}).
  """
  candidates = sorted(perturbations)
  layers = [modules.nce_layers[i] for i in candidates]
  encode = functools.partial(modules.generator.apply, {"params": g_params},
                             feature_layers=layers, encode_only=True)
  offsets = {layer: jnp.where(choice == i, perturbations[i]["offset"], 0.0)
             for i, layer in zip(candidates, layers)}
  perturbed = encode(perturbed_generator(modules).apply({"params": g_params}, real_a, offsets))
  if loss_config.reg_variant == "paper":  # the key: the clean feature's round trip
    keys = encode(modules.generator.apply({"params": g_params}, real_a))
  else:
    keys = encode(real_a)
  if loss_config.reg_type == "v1":
    f_params = jax.lax.stop_gradient(f_params)
  sample = functools.partial(modules.patch_sampler.apply, {"params": f_params},
                             patch_ids=[perturbations[i]["patch_ids"] for i in candidates],
                             mlp_indices=candidates)
  feat_k, feat_q = sample(keys), sample(perturbed)
  loss = 0.0
  for i, key, query, feature in zip(candidates, feat_k, feat_q, keys, strict=True):
    distance = jnp.sqrt(jnp.sum(jnp.square(query - key), axis=-1) + 1e-12)
    batch, height, width, _ = feature.shape
    magnitude = perturbations[i]["magnitude"].reshape(batch, height * width)[
        :, perturbations[i]["patch_ids"]].reshape(-1)
    layer_loss = jnp.mean(distance / magnitude.astype(distance.dtype)) / len(modules.nce_layers)
    loss = loss + jnp.where(choice == i, layer_loss, 0.0)
  return loss, {"feat_k": feat_k, "feat_q": feat_q}


def generator_loss(gf_params: Params, d_params: Params, real_a: jax.Array, real_b: jax.Array,
                   patch_ids: losses_cut.PatchIds, modules: cut.CUTModules,
                   loss_config: ml_collections.ConfigDict,
                   translations: tuple[jax.Array, jax.Array | None] | None = None,
                   source_features: list | None = None, *, robustness,
                   robustness_weight: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
  """The official SRUNIT G and F objective: `losses_cut.generator_loss` + weight * reg.

  Args:
    translations, source_features: see `losses_cut.generator_loss`.
    robustness: (g_params, f_params, real_a) -> (reg loss, aux), e.g.
      `robustness_loss` with its layer and perturbation bound.
    robustness_weight: scalar, `--reg` where the loss is active, else 0.
  Returns:
    (loss, `losses_cut.generator_loss`'s aux with losses["reg"] and outputs["reg"]).
    losses["G"] stays the CUT loss the official code logs.
  """
  cut_loss, aux = losses_cut.generator_loss(gf_params, d_params, real_a, real_b, patch_ids,
                                            modules, loss_config, translations,
                                            source_features)
  reg, aux["outputs"]["reg"] = robustness(gf_params["generator"], gf_params["patch_sampler"],
                                          real_a)
  aux["losses"]["reg"] = reg
  return cut_loss + robustness_weight * reg, aux


def robustness_is_active(step: jax.Array, loss_config: ml_collections.ConfigDict,
                         optimizer_config: ml_collections.ConfigDict) -> jax.Array:
  """Bool scalar: the official `curr_epoch > inact_epochs`, curr_epoch = epoch_count + step // steps_per_epoch."""
  epoch = optimizer_config.epoch_count + step // optimizer_config.steps_per_epoch
  return epoch > loss_config.inact_epochs
