"""The five VSAIT networks built from `config.model`, and how they compose.

Variables are kept per network so that each optimizer sees only what it trains:

  variables = {
    "generator":     {"params": ..., "constants": {Gaussian blur kernels}},
    "map_net":       {"params": ...},                 # trained with the generator
    "discriminator": {"params": ...},
    "vgg":           {"params": ...},                 # frozen (ImageNet or seeded)
    "lsh":           {"constants": {projections}},    # frozen random projections
    "segmenter":     {"params": ...},                 # frozen, only with
  }                                                   # config.model.semantic_segmenter

The label-guided options (config.model.label_conditioned_generator,
class_conditional_discriminator, label_bound_discriminator, semantic_segmenter;
`i2i_jax/models/label_guidance.py`) are off by default, and then the networks
and their variables are exactly the paper's.
"""

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.models import discriminator, generator, lsh, vgg

# Widths of the frozen segmenter (`SmallUNet`'s, as `python -m i2i_jax.train_segmenter` trains it).
SEGMENTER_FEATURES = (16, 32, 64)


@dataclasses.dataclass(frozen=True)
class VSAITModules:
  """The Flax modules of VSAIT (stateless; variables live outside).

  Attributes beyond the paper's five networks (label-guided options):
    segmenter: the frozen source segmenter, or None.
    label_classes: K, the classes of the source label maps (ids >= K and 255: none).
    label_bound_discriminator: the discriminator sees hypervectors bound with
      their cells' class hypervectors.
  """
  generator: generator.ResNetGenerator
  vgg: vgg.VGG19Features
  lsh: lsh.LSHProjection
  map_net: discriminator.MapNetwork
  discriminator: (discriminator.HypervectorDiscriminator
                  | discriminator.ClassProjectionDiscriminator)
  segmenter: segmenter_lib.SmallUNet | None = None
  label_classes: int = 0
  label_bound_discriminator: bool = False

  @property
  def class_conditional_discriminator(self) -> bool:
    return isinstance(self.discriminator, discriminator.ClassProjectionDiscriminator)

  @property
  def discriminator_needs_classes(self) -> bool:
    """Whether the discriminator's inputs depend on the cells' classes (source and target)."""
    return self.class_conditional_discriminator or self.label_bound_discriminator

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
  # .get: configs saved by runs older than the label-guided keys.
  label_classes = model_config.get("label_classes", 19)
  label_generator = model_config.get("label_conditioned_generator", False)
  class_discriminator = model_config.get("class_conditional_discriminator", False)
  bound_discriminator = model_config.get("label_bound_discriminator", False)
  segmenter_path = model_config.get("semantic_segmenter", "")
  if label_classes < 1:
    raise ValueError(f"config.model.label_classes={label_classes} must be >= 1")
  discriminator_channels = tuple(model_config.discriminator_channels)
  return VSAITModules(
      generator=generator.ResNetGenerator(
          res_channels=model_config.res_channels, res_blocks=model_config.res_blocks,
          out_channels=model_config.out_channels,
          label_classes=label_classes if label_generator else 0, dtype=compute_dtype),
      # .get: configs saved by runs older than the key.
      vgg=vgg.VGG19Features(dtype=compute_dtype,
                            random_bias_std=model_config.get("vgg_random_bias_std", 0.0)),
      lsh=lsh.LSHProjection(
          out_channels=dim, kernel_sizes=tuple(model_config.lsh_kernel_sizes),
          strides=tuple(model_config.lsh_strides), dtype=compute_dtype),
      map_net=discriminator.MapNetwork(channels=map_channels, dtype=compute_dtype),
      discriminator=(
          discriminator.ClassProjectionDiscriminator(
              channels=discriminator_channels, num_classes=label_classes, dtype=compute_dtype)
          if class_discriminator else discriminator.HypervectorDiscriminator(
              channels=discriminator_channels, dtype=compute_dtype)),
      segmenter=(segmenter_lib.SmallUNet(label_classes, SEGMENTER_FEATURES)
                 if segmenter_path else None),
      label_classes=label_classes,
      label_bound_discriminator=bound_discriminator,
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
    He-normal here, load real ones with `i2i_jax.models.pretrained`; the
    segmenter's are random here, load them with
    `label_guidance.restore_segmenter_params`).
  """
  images = jnp.zeros((1, *image_shape, in_channels), jnp.float32)
  keys = dict(zip(["generator", "vgg", "lsh", "map_net", "discriminator"],
                  jax.random.split(rng, 5)))
  labels = jnp.zeros((1, *image_shape), jnp.int32) if modules.generator.label_classes else None
  variables = {"generator": modules.generator.init(keys["generator"], images, labels)}
  variables["vgg"] = modules.vgg.init(keys["vgg"], images)
  features = jax.eval_shape(lambda v: modules.vgg.apply(v, images), variables["vgg"])
  features = [jnp.zeros(f.shape, jnp.float32) for f in features]
  variables["lsh"] = modules.lsh.init(keys["lsh"], features)
  hypervectors = jnp.zeros((1, 1, 1, modules.lsh.out_channels), jnp.float32)
  variables["map_net"] = modules.map_net.init(keys["map_net"], hypervectors)
  if modules.class_conditional_discriminator:
    classes = jnp.zeros((1, 1, 1, modules.label_classes), jnp.float32)
    variables["discriminator"] = modules.discriminator.init(
        keys["discriminator"], hypervectors, classes)
  else:
    variables["discriminator"] = modules.discriminator.init(keys["discriminator"], hypervectors)
  if modules.segmenter is not None:
    variables["segmenter"] = modules.segmenter.init(jax.random.fold_in(rng, 5), images)
  return variables
