"""Hypervector operations of the VSA (multiply-add-permute family), on [..., D] arrays.

VSAIT works with real-valued hypervectors: LSH outputs (cosines, ~1/sqrt(D)) and
the map network's keys (tanh outputs in (-1, 1)). Binding is the element-wise
product; with a key whose entries have magnitude ~1 (bipolar in the limit),
binding is its own inverse up to a per-element positive factor key**2, which
cosine similarity largely ignores. All functions are pure and jittable.

Label-bound hypervectors (`class_codebook`, `label_hypervectors`; the maths is in
`i2i_jax/models/label_guidance.py` and docs/label_guided.md) give each class a
fixed random bipolar code and each grid cell the bundle of its classes' codes.
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


def class_codebook(num_classes: int, dim: int, seed: int = 0) -> jax.Array:
  """A fixed random bipolar code per class: [num_classes, dim] float32 of +-1.

  Random bipolar vectors are quasi-orthogonal (cosines ~ N(0, 1/dim)) to each
  other and to the all-ones vector, so a bundle of them can be read out class
  by class. The same arguments always give the same codebook (no state to save).
  """
  return jax.random.rademacher(jax.random.key(seed), (num_classes, dim), jnp.float32)


def label_hypervectors(class_fractions: jax.Array, codebook: jax.Array) -> jax.Array:
  """Each cell's class hypervector: the bundle of its classes' codes, weighted by area.

  `l = sum_c p_c C_c + (1 - sum_c p_c) * 1`: the unlabelled part of a cell
  (ignore pixels) binds with the identity (all ones), so a cell without labels
  is left unbound. A cell of one class gets exactly that class's bipolar code,
  which binding undoes exactly (`unbind(bind(x, l), l) == x`).

  Args:
    class_fractions: [..., K] fraction of each class per cell (sums to <= 1).
    codebook: [K, D] from `class_codebook`.
  Returns:
    [..., D] float32.
  """
  fractions = class_fractions.astype(jnp.float32)
  unlabelled = 1.0 - jnp.sum(fractions, axis=-1, keepdims=True)
  return fractions @ codebook + unlabelled
