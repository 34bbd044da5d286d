"""Hypervector operations of the VSA (multiply-add-permute family), on [..., D] arrays.

VSAIT works with real-valued hypervectors: LSH outputs (cosines, ~1/sqrt(D)) and
the map network's keys (tanh outputs in (-1, 1)). Binding is the element-wise
product; with a key whose entries have magnitude ~1 (bipolar in the limit),
binding is its own inverse up to a per-element positive factor key**2, which
cosine similarity largely ignores. All functions are pure and jittable.
"""

import jax
import jax.numpy as jnp


def bind(hypervectors: jax.Array, key: jax.Array) -> jax.Array:
  """Binds `hypervectors` with `key` (element-wise product); shapes broadcast over [..., D]."""
  return hypervectors * key


def unbind(bound: jax.Array, key: jax.Array) -> jax.Array:
  """Releases `key` from `bound`: multiplies by the key again (MAP binding is self-inverse).

  For a bipolar key (entries +-1) `unbind(bind(x, key), key) == x` exactly; for a
  real key it gives `x * key**2`, i.e. `x` re-weighted per element. This is what
  the reference does to compare a translation with its source.
  """
  return bound * key


def bundle(hypervectors: jax.Array, axis: int = 0) -> jax.Array:
  """Superposes hypervectors along `axis` (sum); the result is similar to every member."""
  return jnp.sum(hypervectors, axis=axis)


def similarity(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Cosine similarity over the last axis, as `torch.cosine_similarity(a, b, dim=-1, eps)`.

  Args:
    a, b: [..., D] (broadcastable).
  Returns:
    [...] float in [-1, 1]: `sum(a/max(|a|, eps) * b/max(|b|, eps))`.
  """
  a_norm = jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
  b_norm = jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), eps)
  return jnp.sum((a / a_norm) * (b / b_norm), axis=-1)
