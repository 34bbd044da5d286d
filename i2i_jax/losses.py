"""VSAIT losses: pure functions of arrays (means over all their elements)."""

from typing import Sequence

import jax
import jax.numpy as jnp

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
