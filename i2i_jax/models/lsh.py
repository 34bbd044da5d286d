"""Locality-sensitive hashing of multi-layer features into hypervectors.

One fixed Gaussian projection per feature map (kernel = stride, no overlap),
applied as if the patches of all maps and the projection rows were
concatenated: the result is, per output cell, the cosine between the
concatenated patch and each concatenated projection row (`LSHCat` in the
reference). Hypervector entries are ~1/sqrt(dim) in size.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.models import layers


def _project_patches(features: jax.Array, weight: jax.Array, kernel: int,
                     stride: int, dtype: Any) -> jax.Array:
  """`conv2d(features, weight, stride, padding=0)`: [B,H,W,C] x [k,k,C,D] -> [B,h,w,D].

  Inputs are cast to `dtype`; accumulation and result are in at least float32.

  With kernel == stride the patches do not overlap and the conv is one matmul of
  the reshaped patches, which is what accelerators (and XLA on CPU) run best.
  """
  accumulate = layers.accumulation_dtype(dtype)
  if kernel == stride:
    batch, height, width, channels = features.shape
    rows, cols = height // kernel, width // kernel
    patches = features[:, :rows * kernel, :cols * kernel, :].reshape(
        batch, rows, kernel, cols, kernel, channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(batch, rows, cols, kernel * kernel * channels)
    return jnp.dot(patches.astype(dtype),
                   weight.reshape(-1, weight.shape[-1]).astype(dtype),
                   preferred_element_type=accumulate)
  return jax.lax.conv_general_dilated(
      features.astype(dtype), weight.astype(dtype), (stride, stride), "VALID",
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=accumulate)


def _patch_squared_norms(features: jax.Array, kernel: int, stride: int) -> jax.Array:
  """Sum of squares of each projected patch: [B,H,W,C] -> [B,h,w,1], at least float32."""
  squares = jnp.sum(jnp.square(features.astype(layers.accumulation_dtype(features.dtype))),
                    axis=-1, keepdims=True)
  return jax.lax.reduce_window(squares, 0.0, jax.lax.add, (1, kernel, kernel, 1),
                               (1, stride, stride, 1), "VALID")


def _nearest_resize(x: jax.Array, height: int, width: int) -> jax.Array:
  """`F.interpolate(mode="nearest")` on [B,h,w,D]: source index floor(dst * in / out)."""

  def indices(size_in, size_out):
    scale = np.float32(size_in / size_out)
    return np.minimum(np.floor(np.arange(size_out) * scale).astype(np.int64), size_in - 1)

  if x.shape[1:3] == (height, width):
    return x
  return x[:, indices(x.shape[1], height)][:, :, indices(x.shape[2], width)]


class LSHProjection(nn.Module):
  """Feature maps -> hypervectors [B, h0, w0, D] on the grid of the first map.

  The projections are fixed buffers in the "constants" collection:
  `weight_<i>`: [k_i, k_i, C_i, D] raw standard-normal draws (not normalised) and
  `ssq_weight_<i>`: [D], each row's squared norm, stored rather than recomputed
  so that imported reference buffers are used bit for bit.

  Attributes:
    out_channels: hypervector dimension D.
    kernel_sizes: patch size per feature map.
    strides: stride per feature map.
    dtype: dtype of the projection matmuls (accumulation stays float32).
  """
  out_channels: int
  kernel_sizes: Sequence[int]
  strides: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]) -> jax.Array:
    if len(features) != len(self.kernel_sizes):
      raise ValueError(f"LSH got {len(features)} feature maps but has "
                       f"{len(self.kernel_sizes)} kernel sizes")
    projections, squared_norms, weight_norms = [], [], []
    for i, (x, kernel, stride) in enumerate(
        zip(features, self.kernel_sizes, self.strides)):
      shape = (kernel, kernel, x.shape[-1], self.out_channels)
      weight = self.variable(
          "constants", f"weight_{i}",
          lambda s=shape: jax.random.normal(self.make_rng("params"), s, jnp.float32))
      ssq_weight = self.variable(
          "constants", f"ssq_weight_{i}",
          lambda w=weight: jnp.sum(jnp.square(w.value), axis=(0, 1, 2)))
      projections.append(_project_patches(x, weight.value, kernel, stride, self.dtype))
      squared_norms.append(_patch_squared_norms(x, kernel, stride))
      weight_norms.append(ssq_weight.value)
    height, width = projections[0].shape[1:3]
    projection = sum(_nearest_resize(p, height, width) for p in projections)
    squared_norm = sum(_nearest_resize(n, height, width) for n in squared_norms)
    weight_norm = sum(weight_norms)
    return projection / (jnp.sqrt(squared_norm) * jnp.sqrt(weight_norm) + 1e-5)
