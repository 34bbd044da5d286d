"""VSAIT losses: pure functions of arrays (means over all their elements)."""

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from i2i_jax import vsa


def vsa_loss(translated_unbound: jax.Array, source_hypervectors: jax.Array) -> jax.Array:
  """`mean(1 - cos)` between the unbound translation and the source, per grid cell.

  Args:
    translated_unbound: [B, h, w, D], `unbind(hv(G(x)), key)`.
    source_hypervectors: [B, h, w, D], `hv(x)`.
  Returns:
    scalar float32; 0 when every cell points the same way as its source.
  """
  return jnp.mean(1.0 - vsa.similarity(translated_unbound, source_hypervectors))


def semantic_consistency_loss(logits: jax.Array, labels: jax.Array,
                              ignore_label: int = 255) -> jax.Array:
  """Pixel cross-entropy of a frozen segmenter on G(x) against x's labels (CyCADA's term).

  Args:
    logits: [B, H, W, K] the segmenter's class logits on the translation.
    labels: [B, H, W] integer class ids of the source; `ignore_label` pixels
      (and ids >= K) do not count.
  Returns:
    scalar float32: mean cross-entropy over the counted pixels (0 when none
    counts); minimal when the segmenter reads G(x) as x's labels.
  """
  labels = labels.astype(jnp.int32)
  counted = (labels != ignore_label) & (labels < logits.shape[-1])
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), jnp.where(counted, labels, 0))
  return jnp.sum(per_pixel * counted) / jnp.maximum(jnp.sum(counted), 1)


def hinge_generator_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
  """Generator side of the hinge GAN: mean over the list of `-mean(logits)`."""
  return sum(-jnp.mean(logits) for logits in fake_logits) / len(fake_logits)


def hinge_discriminator_loss(fake_logits: Sequence[jax.Array],
                             real_logits: Sequence[jax.Array]) -> jax.Array:
  """Discriminator side of the hinge GAN, every term weighted equally.

  `mean(relu(1 + fake))` per fake and `mean(relu(1 - real))` per real, averaged
  over all terms (the reference has two fakes and one real: weights 1/3 each).
  """
  terms = [jnp.mean(jax.nn.relu(1.0 + logits)) for logits in fake_logits]
  terms += [jnp.mean(jax.nn.relu(1.0 - logits)) for logits in real_logits]
  return sum(terms) / len(terms)


GENERATOR_GAN_LOSSES = {"hinge": hinge_generator_loss}
DISCRIMINATOR_GAN_LOSSES = {"hinge": hinge_discriminator_loss}
