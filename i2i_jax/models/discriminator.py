"""Networks on hypervectors: the 1x1-conv discriminator (plain or class-conditioned) and the
VSA map network."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from i2i_jax.models import layers


class HypervectorDiscriminator(nn.Module):
  """Per-cell real/fake logits: hypervectors [B, h, w, D] -> [B, h, w, channels[-1]].

  1x1 convs with bias and LeakyReLU(0.2) between them, no norm, no final
  activation; Xavier-normal (gain 0.2) init with zero biases, as the reference.
  """
  channels: Sequence[int] = (1024, 1024, 1)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hypervectors: jax.Array) -> jax.Array:
    x = hypervectors.astype(self.dtype)
    for i, features in enumerate(self.channels):
      x = nn.Dense(features, dtype=self.dtype,
                   kernel_init=layers.xavier_normal_gain_02, name=f"conv_{i}")(x)
      if i < len(self.channels) - 1:
        x = nn.leaky_relu(x, 0.2)
    return x.astype(layers.accumulation_dtype(x.dtype))


class ClassProjectionDiscriminator(nn.Module):
  """A projection discriminator (Miyato & Koyama 2018) per hypervector cell, conditioned on classes.

  `logit(h, p) = w . phi(h) + b + <E p, phi(h)>`: phi is the stack of 1x1 convs
  of `HypervectorDiscriminator` up to its last hidden layer, E a learned
  embedding of each class (zero at init, so a fresh module is the plain
  discriminator), p the cell's class fractions. The class term lets the
  discriminator judge each cell against the real cells *of its class*, so a
  translation is not rewarded for repainting one class as another that the
  target domain has more of.

  Attributes:
    channels: widths of the 1x1 convs; the last must be 1 (one logit per cell).
    num_classes: K, length of the class-fraction vectors.
    dtype: compute dtype.
  """
  channels: Sequence[int] = (1024, 1024, 1)
  num_classes: int = 19
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hypervectors: jax.Array, class_fractions: jax.Array) -> jax.Array:
    """hypervectors: [B, h, w, D]; class_fractions: [B, h, w, K] -> logits [B, h, w, 1]."""
    if self.channels[-1] != 1:
      raise ValueError("config.model.discriminator_channels must end with 1 for the class "
                       f"projection discriminator, got {tuple(self.channels)}")
    x = hypervectors.astype(self.dtype)
    for i, features in enumerate(self.channels[:-1]):
      x = nn.leaky_relu(nn.Dense(features, dtype=self.dtype,
                                 kernel_init=layers.xavier_normal_gain_02, name=f"conv_{i}")(x),
                        0.2)
    logits = nn.Dense(1, dtype=self.dtype, kernel_init=layers.xavier_normal_gain_02,
                      name=f"conv_{len(self.channels) - 1}")(x)
    embedding = nn.Dense(x.shape[-1], use_bias=False, dtype=self.dtype,
                         kernel_init=nn.initializers.zeros, name="class_embedding")(
                             class_fractions.astype(self.dtype))
    logits = logits + jnp.sum(embedding * x, axis=-1, keepdims=True)
    return logits.astype(layers.accumulation_dtype(logits.dtype))


class MapNetwork(nn.Module):
  """The learned source->target binding key: hypervectors [B,h,w,D] -> [B,h,w,D] in (-1, 1).

  1x1 convs with ReLU between them, then tanh. Hidden layers use PyTorch's
  default conv init; the last layer starts at weight 0, bias 1, so the key starts
  as tanh(1) everywhere (binding is then a uniform rescaling).
  """
  channels: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hypervectors: jax.Array) -> jax.Array:
    x = hypervectors.astype(self.dtype)
    for i, features in enumerate(self.channels):
      last = i == len(self.channels) - 1
      x = nn.Dense(
          features, dtype=self.dtype,
          kernel_init=(jax.nn.initializers.zeros if last
                       else layers.torch_default_kernel_init),
          bias_init=(jax.nn.initializers.ones if last
                     else layers.torch_default_bias_init(x.shape[-1])),
          name=f"conv_{i}")(x)
      if not last:
        x = nn.relu(x)
    return jnp.tanh(x).astype(layers.accumulation_dtype(x.dtype))
