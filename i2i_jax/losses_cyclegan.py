"""The CycleGAN networks, image pool, objective and update (official models/cycle_gan_model.py).

CycleGAN (Zhu et al., ICCV 2017) in the defaults of
junyanz/pytorch-CycleGAN-and-pix2pix (`--model cycle_gan`). The networks are
CUT's modules (`i2i_jax/models/cut.py`, which descend from this code) without
antialiasing and with the official `init_weights(net, "normal", 0.02)`:

  generator          G_A: A -> B   (the paper's G; the trained translator)
  inverse_generator  G_B: B -> A   (the paper's F)
  target_discriminator  D_A: real B vs G_A(A)   (the paper's D_Y)
  source_discriminator  D_B: real A vs G_B(B)   (the paper's D_X)

Losses of one batch (real_A: source images, real_B: target images; L1 = mean |.|):

  fake_B, rec_A = G_A(real_A), G_B(fake_B);  fake_A, rec_B = G_B(real_B), G_A(fake_A)
  idt_A, idt_B  = G_A(real_B), G_B(real_A)                   (lambda_identity > 0)
  G_A = lsgan(D_A(fake_B), real),  G_B = lsgan(D_B(fake_A), real)
  cycle_A = L1(rec_A, real_A) * lambda_A,  cycle_B = L1(rec_B, real_B) * lambda_B
  idt_A = L1(idt_A, real_B) * lambda_B * lambda_identity
  idt_B = L1(idt_B, real_A) * lambda_A * lambda_identity
  G = G_A + G_B + cycle_A + cycle_B + idt_A + idt_B
  D_A = (lsgan(D_A(real_B), real) + lsgan(D_A(pool_B(fake_B)), fake)) / 2     (and D_B alike)

and one training step in the official order (`optimize_parameters`): forward,
the G step (D_A and D_B fixed), then the D step on the forward's fakes (from
the generators *before* their update) after each went through its image pool.
One Adam over both generators and one over both discriminators, as the
official `optimizer_G` and `optimizer_D` (itertools.chain of two networks).
"""

from typing import Any, Mapping, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from i2i_jax import losses_cut
from i2i_jax.models import cut

Params = Mapping[str, Any]
GENERATORS = ("generator", "inverse_generator")
DISCRIMINATORS = ("target_discriminator", "source_discriminator")

# `init_weights(net, "normal", 0.02)`: N(0, 0.02) on every conv weight, biases 0.
normal_init_002 = jax.nn.initializers.normal(0.02)


class CycleGANModules(NamedTuple):
  """The two network architectures: both generators share one, both discriminators the other."""
  generator: cut.ResnetGenerator
  discriminator: cut.NLayerDiscriminator


def build_modules(model_config: ml_collections.ConfigDict, dtype: Any = jnp.float32
                  ) -> CycleGANModules:
  """G and D for `config.model`: the official `define_G(resnet_<n>blocks)`, `define_D(basic)`."""
  return CycleGANModules(
      generator=cut.ResnetGenerator(model_config.ngf, model_config.n_blocks,
                                    model_config.output_nc, dtype, antialias=False,
                                    antialias_up=False, kernel_init=normal_init_002),
      discriminator=cut.NLayerDiscriminator(model_config.ndf, model_config.n_layers_D, dtype,
                                            antialias=False, kernel_init=normal_init_002))


def init_params(modules: CycleGANModules, rng: jax.Array, image_shape: tuple[int, int, int]
                ) -> dict[str, Any]:
  """{"generator", "inverse_generator", "target_discriminator", "source_discriminator"}: "params".

  image_shape: (H, W, C) of a training crop (the parameters' shapes do not depend on it).
  """
  images = jnp.zeros((1, *image_shape), jnp.float32)
  keys = dict(zip(GENERATORS + DISCRIMINATORS, jax.random.split(rng, 4)))
  return {name: (modules.generator if name in GENERATORS else modules.discriminator).init(
      keys[name], images)["params"] for name in keys}


@flax.struct.dataclass
class ImagePool:
  """The official `ImagePool` as arrays: up to N generated images the D step may see again.

  Attributes:
    images: [N, H, W, C] float (float32 in a train state), N = `--pool_size`;
      the first `count` are filled.
    count: int32 scalar, the official `num_imgs`.
  """
  images: jax.Array
  count: jax.Array


def empty_pool(pool_size: int, image_shape: tuple[int, int, int],
               dtype: Any = jnp.float32) -> ImagePool:
  """A pool of `pool_size` images of shape `image_shape` (H, W, C) and `dtype` holding none yet."""
  return ImagePool(images=jnp.zeros((pool_size, *image_shape), dtype),
                   count=jnp.zeros((), jnp.int32))


def query_pool(pool: ImagePool, images: jax.Array, rng: jax.Array) -> tuple[ImagePool, jax.Array]:
  """The official `ImagePool.query`, image by image in batch order.

  While the pool is not full an image is stored and returned as it is. Once it
  is full, with probability 1/2 (the official `random.uniform(0, 1) > 0.5`) a
  uniformly chosen stored image is returned and the new one takes its place,
  otherwise the new image is returned and the pool is unchanged. A pool of size 0
  returns the images.

  Args:
    pool: the pool before the query.
    images: [B, H, W, C], the generator's latest outputs (no gradient flows back).
    rng: a JAX key; image i uses `split(rng, B)[i]` (instead of Python's global
      `random`, so that a resumed run draws what a straight one draws).
  Returns:
    (the pool after the query, [B, H, W, C] in the pool's dtype: the images for
    the discriminator).
  """
  size = pool.images.shape[0]
  images = jax.lax.stop_gradient(images).astype(pool.images.dtype)
  if size == 0:
    return pool, images

  def query_one(pool, image_and_key):
    image, key = image_and_key
    swap_key, index_key = jax.random.split(key)
    filling = pool.count < size
    swap = jax.random.uniform(swap_key) > 0.5
    index = jnp.where(filling, pool.count, jax.random.randint(index_key, (), 0, size))
    stored = pool.images[index]
    returned = jnp.where(filling | ~swap, image, stored)
    pool = ImagePool(
        images=pool.images.at[index].set(jnp.where(filling | swap, image, stored)),
        count=jnp.minimum(pool.count + 1, size))
    return pool, returned

  return jax.lax.scan(query_one, pool, (images, jax.random.split(rng, images.shape[0])))


def l1_loss(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """`torch.nn.L1Loss()`: mean |prediction - target| over every element."""
  return jnp.mean(jnp.abs(prediction - target))


def translate(g_params: Params, real_a: jax.Array, real_b: jax.Array, modules: CycleGANModules,
              loss_config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """The official `forward` and the identity images of `backward_G`.

  Args:
    g_params: {"generator": G_A's params, "inverse_generator": G_B's}.
    real_a, real_b: [B, H, W, 3] in [-1, 1].
  Returns:
    {fake_B, rec_A, fake_A, rec_B, and with lambda_identity > 0 idt_A, idt_B}:
    each [B, H, W, 3]. Calls of a generator on independent inputs share one
    batch (instance norm keeps the images of a batch independent).
  """
  def g_a(images):
    return modules.generator.apply({"params": g_params["generator"]}, images)

  def g_b(images):
    return modules.generator.apply({"params": g_params["inverse_generator"]}, images)

  batch = real_a.shape[0]
  outputs = {}
  if loss_config.lambda_identity > 0:
    from_a, from_b = g_a(jnp.concatenate([real_a, real_b])), g_b(jnp.concatenate([real_b, real_a]))
    outputs["fake_B"], outputs["idt_A"] = from_a[:batch], from_a[batch:]
    outputs["fake_A"], outputs["idt_B"] = from_b[:batch], from_b[batch:]
  else:
    outputs["fake_B"], outputs["fake_A"] = g_a(real_a), g_b(real_b)
  outputs["rec_A"], outputs["rec_B"] = g_b(outputs["fake_B"]), g_a(outputs["fake_A"])
  return outputs


def generator_loss(g_params: Params, d_params: Params, real_a: jax.Array, real_b: jax.Array,
                   modules: CycleGANModules, loss_config: ml_collections.ConfigDict
                   ) -> tuple[jax.Array, dict[str, Any]]:
  """The official `backward_G`'s loss, differentiable in both generators.

  Args:
    g_params: {"generator", "inverse_generator"}.
    d_params: {"target_discriminator", "source_discriminator"} (no gradient is
      taken for them, as the official `set_requires_grad(False)`).
    real_a, real_b: [B, H, W, 3] in [-1, 1].
  Returns:
    (loss G, {"losses": {G_A, G_B, cycle_A, cycle_B, idt_A, idt_B, G},
    "outputs": `translate`'s images and pred_fake_B = D_A(fake_B),
    pred_fake_A = D_B(fake_A)}).
  """
  c = loss_config
  outputs = translate(g_params, real_a, real_b, modules, c)
  outputs["pred_fake_B"] = modules.discriminator.apply(
      {"params": d_params["target_discriminator"]}, outputs["fake_B"])
  outputs["pred_fake_A"] = modules.discriminator.apply(
      {"params": d_params["source_discriminator"]}, outputs["fake_A"])
  losses = {"G_A": losses_cut.lsgan_loss(outputs["pred_fake_B"], True),
            "G_B": losses_cut.lsgan_loss(outputs["pred_fake_A"], True),
            "cycle_A": l1_loss(outputs["rec_A"], real_a) * c.lambda_A,
            "cycle_B": l1_loss(outputs["rec_B"], real_b) * c.lambda_B}
  if c.lambda_identity > 0:
    losses["idt_A"] = l1_loss(outputs["idt_A"], real_b) * c.lambda_B * c.lambda_identity
    losses["idt_B"] = l1_loss(outputs["idt_B"], real_a) * c.lambda_A * c.lambda_identity
  else:
    losses["idt_A"] = losses["idt_B"] = jnp.zeros((), outputs["fake_B"].dtype)
  losses["G"] = (losses["G_A"] + losses["G_B"] + losses["cycle_A"] + losses["cycle_B"]
                 + losses["idt_A"] + losses["idt_B"])
  return losses["G"], {"losses": losses, "outputs": outputs}


def discriminator_loss(d_params: Params, real: jax.Array, fake: jax.Array,
                       modules: CycleGANModules) -> tuple[jax.Array, dict[str, Any]]:
  """The official `backward_D_basic`: `(lsgan(D(real), real) + lsgan(D(fake), fake)) * 0.5`.

  Args:
    d_params: one discriminator's params.
    real: [B, H, W, 3] images of the discriminator's domain.
    fake: [B, H, W, 3] what the image pool returned (no gradient).
  Returns:
    (loss, {"pred_real", "pred_fake"}: the discriminator's outputs [B, h, w, 1]).
  """
  pred_real = modules.discriminator.apply({"params": d_params}, real)
  pred_fake = modules.discriminator.apply({"params": d_params}, jax.lax.stop_gradient(fake))
  loss = (losses_cut.lsgan_loss(pred_real, True) + losses_cut.lsgan_loss(pred_fake, False)) * 0.5
  return loss, {"pred_real": pred_real, "pred_fake": pred_fake}


def discriminators_loss(d_params: Params, real_a: jax.Array, real_b: jax.Array,
                        pooled_fake_a: jax.Array, pooled_fake_b: jax.Array,
                        modules: CycleGANModules) -> tuple[jax.Array, dict[str, Any]]:
  """`backward_D_A` + `backward_D_B`: D_A + D_B, whose gradient `optimizer_D` steps along.

  Returns:
    (D_A + D_B, {"losses": {D_A, D_B, D}, "outputs": {"D_A": ..., "D_B": ...}
    (`discriminator_loss`'s outputs)}).
  """
  d_a, d_a_outputs = discriminator_loss(d_params["target_discriminator"], real_b,
                                        pooled_fake_b, modules)
  d_b, d_b_outputs = discriminator_loss(d_params["source_discriminator"], real_a,
                                        pooled_fake_a, modules)
  losses = {"D_A": d_a, "D_B": d_b, "D": d_a + d_b}
  return losses["D"], {"losses": losses, "outputs": {"D_A": d_a_outputs, "D_B": d_b_outputs}}


def train_step(params: Params, opt_states: Params, pools: Mapping[str, ImagePool],
               real_a: jax.Array, real_b: jax.Array, pool_rng: jax.Array,
               modules: CycleGANModules, loss_config: ml_collections.ConfigDict,
               optimizer: optax.GradientTransformation
               ) -> tuple[Params, Params, dict[str, ImagePool], dict[str, jax.Array]]:
  """One official `optimize_parameters`: forward, G step, then D step on the pooled fakes.

  Args:
    params: `init_params`'s four networks.
    opt_states: {"g": optimizer state of {"generator", "inverse_generator"},
      "d": of {"target_discriminator", "source_discriminator"}}.
    pools: {"fake_B": the pool of D_A's fakes, "fake_A": of D_B's} (`empty_pool`).
    real_a, real_b: [B, H, W, 3] in [-1, 1].
    pool_rng: this step's key for the two pool queries (fake_B's first, as the official).
    optimizer: `losses_cut.make_optimizer(config.optimizer, stepped_at_epoch_start=True)`.
  Returns:
    (new params, new optimizer states, new pools, every loss of both steps).
  """
  g_params = {name: params[name] for name in GENERATORS}
  d_params = {name: params[name] for name in DISCRIMINATORS}
  (_, g_aux), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(
      g_params, d_params, real_a, real_b, modules, loss_config)
  g_updates, g_state = optimizer.update(g_grads, opt_states["g"], g_params)
  fake_b_key, fake_a_key = jax.random.split(pool_rng)
  fake_b_pool, pooled_fake_b = query_pool(pools["fake_B"], g_aux["outputs"]["fake_B"], fake_b_key)
  fake_a_pool, pooled_fake_a = query_pool(pools["fake_A"], g_aux["outputs"]["fake_A"], fake_a_key)
  (_, d_aux), d_grads = jax.value_and_grad(discriminators_loss, has_aux=True)(
      d_params, real_a, real_b, pooled_fake_a, pooled_fake_b, modules)
  d_updates, d_state = optimizer.update(d_grads, opt_states["d"], d_params)
  new_params = {**optax.apply_updates(g_params, g_updates),
                **optax.apply_updates(d_params, d_updates)}
  return (new_params, {"g": g_state, "d": d_state},
          {"fake_B": fake_b_pool, "fake_A": fake_a_pool},
          {**g_aux["losses"], **d_aux["losses"]})
