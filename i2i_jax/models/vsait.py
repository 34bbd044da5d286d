"""The five VSAIT networks built from `config.model`, and how they compose.

Variables are kept per network so that each optimizer sees only what it trains:

  variables = {
    "generator":     {"params": ..., "constants": {Gaussian blur kernels}},
    "map_net":       {"params": ...},                 # trained with the generator
    "discriminator": {"params": ...},
    "vgg":           {"params": ...},                 # frozen (ImageNet or seeded)
    "lsh":           {"constants": {projections}},    # frozen random projections
  }
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from i2i_jax.models import discriminator, generator, lsh, vgg


@dataclasses.dataclass(frozen=True)
class VSAITModules:
  """The Flax modules of VSAIT (stateless; variables live outside)."""
  generator: generator.ResNetGenerator
  vgg: vgg.VGG19Features
  lsh: lsh.LSHProjection
  map_net: discriminator.MapNetwork
  discriminator: discriminator.HypervectorDiscriminator

  def hypervectors(self, variables: dict[str, Any], images: jax.Array) -> jax.Array:
    """LSH(VGG(images)): [B, H, W, 3] -> [B, H/16, W/16, D] float32 (paper kernels)."""
    features = self.vgg.apply(variables["vgg"], images)
    return self.lsh.apply(variables["lsh"], features)


def build_modules(model_config: ml_collections.ConfigDict,
                  compute_dtype: Any = jnp.float32) -> VSAITModules:
  """Instantiates the modules described by `config.model`."""
  if len(model_config.lsh_kernel_sizes) != len(vgg.RETURN_NODES) or len(
      model_config.lsh_strides) != len(vgg.RETURN_NODES):
    raise ValueError(
        f"config.model.lsh_kernel_sizes and config.model.lsh_strides need one entry "
        f"per VGG return node ({len(vgg.RETURN_NODES)}); got "
        f"{tuple(model_config.lsh_kernel_sizes)} and {tuple(model_config.lsh_strides)}")
  dim = model_config.lsh_out_channels
  map_channels = tuple(model_config.map_net_channels) or (dim, dim)
  if map_channels[-1] != dim:
    raise ValueError(f"config.model.map_net_channels must end with lsh_out_channels={dim}, "
                     f"got {map_channels}")
  return VSAITModules(
      generator=generator.ResNetGenerator(
          res_channels=model_config.res_channels, res_blocks=model_config.res_blocks,
          out_channels=model_config.out_channels, dtype=compute_dtype),
      # .get: configs saved by runs older than the key.
      vgg=vgg.VGG19Features(dtype=compute_dtype,
                            random_bias_std=model_config.get("vgg_random_bias_std", 0.0)),
      lsh=lsh.LSHProjection(
          out_channels=dim, kernel_sizes=tuple(model_config.lsh_kernel_sizes),
          strides=tuple(model_config.lsh_strides), dtype=compute_dtype),
      map_net=discriminator.MapNetwork(channels=map_channels, dtype=compute_dtype),
      discriminator=discriminator.HypervectorDiscriminator(
          channels=tuple(model_config.discriminator_channels), dtype=compute_dtype),
  )


def init_variables(modules: VSAITModules, rng: jax.Array, image_shape: tuple[int, ...],
                   in_channels: int = 3) -> dict[str, Any]:
  """Initialises every network with its reference init scheme.

  Args:
    modules: from `build_modules`.
    rng: PRNG key; each network gets its own fold.
    image_shape: (H, W) of training crops (only used to trace shapes).
    in_channels: channels of the input images.
  Returns:
    The variables dict described in the module docstring (VGG weights seeded
    He-normal here; load real ones with `i2i_jax.models.pretrained`).
  """
  images = jnp.zeros((1, *image_shape, in_channels), jnp.float32)
  keys = dict(zip(["generator", "vgg", "lsh", "map_net", "discriminator"],
                  jax.random.split(rng, 5)))
  variables = {"generator": modules.generator.init(keys["generator"], images)}
  variables["vgg"] = modules.vgg.init(keys["vgg"], images)
  features = jax.eval_shape(lambda v: modules.vgg.apply(v, images), variables["vgg"])
  features = [jnp.zeros(f.shape, jnp.float32) for f in features]
  variables["lsh"] = modules.lsh.init(keys["lsh"], features)
  hypervectors = jnp.zeros((1, 1, 1, modules.lsh.out_channels), jnp.float32)
  variables["map_net"] = modules.map_net.init(keys["map_net"], hypervectors)
  variables["discriminator"] = modules.discriminator.init(keys["discriminator"], hypervectors)
  return variables
