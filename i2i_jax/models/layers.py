"""Small building blocks shared by the VSAIT modules (NHWC throughout).

The reference builds every network from PyTorch layers whose defaults matter for
parity (reflection padding, `InstanceNorm2d` without affine parameters, Xavier
initialisation with gain 0.2); they are spelled out here once.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp

# `torch.nn.init.xavier_normal_(w, gain=0.2)`: std = gain * sqrt(2 / (fan_in + fan_out)).
xavier_normal_gain_02 = jax.nn.initializers.variance_scaling(
    0.2**2, "fan_avg", "normal")


def torch_default_bias_init(fan_in: int):
  """`torch.nn.Conv2d`'s default bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# `torch.nn.Conv2d`'s default weight init, kaiming_uniform(a=sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_default_kernel_init = jax.nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform")


def accumulation_dtype(dtype) -> jnp.dtype:
  """float32 for half-precision compute, else the dtype itself (float64 stays float64)."""
  return jnp.promote_types(dtype, jnp.float32)


def reflect_pad(x: jax.Array, pad: int) -> jax.Array:
  """Reflection-pads the two spatial axes of `x: [B, H, W, C]` by `pad`."""
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


# Padding of the convs that run on reflection-padded inputs, whose outputs are
# then `crop`ped by one pixel: the result is the "VALID" conv's. XLA:CPU
# (YNNPACK, jax 0.10) runs a zero-padded conv ~3x (3x3) to ~15x (7x7 -> 3
# channels) faster than the same conv unpadded; the extra border costs ~2-5%.
CROPPED_CONV_PADDING = ((1, 1), (1, 1))


def crop(x: jax.Array, border: int = 1) -> jax.Array:
  """Removes `border` pixels from every side of `x: [B, H, W, C]`."""
  return x[:, border:-border, border:-border, :]


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """`torch.nn.InstanceNorm2d` defaults: no affine, biased variance over H, W.

  Args:
    x: [B, H, W, C]. Statistics are taken in at least float32.
  Returns:
    `(x - mean) / sqrt(var + eps)`, [B, H, W, C] in the dtype of `x`.
  """
  wide = x.astype(accumulation_dtype(x.dtype))
  mean = jnp.mean(wide, axis=(1, 2), keepdims=True)
  var = jnp.mean(jnp.square(wide - mean), axis=(1, 2), keepdims=True)
  return ((wide - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_with_custom_kernel_grad(lhs: jax.Array, rhs: jax.Array,
                                  padding: tuple[tuple[int, int], ...],
                                  kernel_grad: Callable) -> jax.Array:
  del kernel_grad  # Only the backward pass uses it.
  return _nhwc_conv(lhs, rhs, padding)


def _nhwc_conv(lhs, rhs, padding):
  return jax.lax.conv_general_dilated(lhs, rhs, (1, 1), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _kernel_grad_by_taps(padding, lhs, cotangent):
  """The conv's kernel gradient, [kh, kw, C_in, C_out], as one matmul per kernel tap.

  Tap (i, j) is `x_ij^T @ g`, x_ij the padded input's [N, C_in] window that
  meets that tap and g the [N, C_out] output gradient (N = B * H_out * W_out).
  """
  padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  _, out_height, out_width, out_channels = cotangent.shape
  flat_cotangent = cotangent.reshape(-1, out_channels)
  kernel_height = padded.shape[1] - out_height + 1
  kernel_width = padded.shape[2] - out_width + 1
  rows = []
  for i in range(kernel_height):
    taps = []
    for j in range(kernel_width):
      window = padded[:, i:i + out_height, j:j + out_width, :].reshape(-1, lhs.shape[-1])
      taps.append(jax.lax.dot_general(window, flat_cotangent, (((0,), (0,)), ((), ()))))
    rows.append(jnp.stack(taps))
  return jnp.stack(rows)


def _kernel_grad_by_shifted_cotangent(padding, lhs, cotangent):
  """The conv's kernel gradient, [kh, kw, C_in, C_out], as one matmul; for few C_out.

  Tap (i, j) is also `x^T @ g_ij`, x the padded input [N, C_in] and g_ij the
  output gradient shifted by (i, j) inside the padded input's frame, zero
  outside it (N = B * H_pad * W_pad). With few output channels (an image's
  3) the kh * kw shifted cotangents, [N, kh * kw * C_out], are cheap to write,
  and one matmul reads them all.
  """
  padded = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  _, padded_height, padded_width, in_channels = padded.shape
  _, out_height, out_width, out_channels = cotangent.shape
  kernel_height = padded_height - out_height + 1
  kernel_width = padded_width - out_width + 1
  framed = jnp.pad(cotangent, ((0, 0), (kernel_height - 1,) * 2, (kernel_width - 1,) * 2, (0, 0)))
  shifted = jnp.stack(
      [framed[:, kernel_height - 1 - i:kernel_height - 1 - i + padded_height,
              kernel_width - 1 - j:kernel_width - 1 - j + padded_width]
       for i in range(kernel_height) for j in range(kernel_width)], axis=3)
  grad = jax.lax.dot_general(
      padded.reshape(-1, in_channels),
      shifted.reshape(-1, kernel_height * kernel_width * out_channels), (((0,), (0,)), ((), ())))
  return grad.reshape(in_channels, kernel_height, kernel_width, out_channels).transpose(1, 2, 0, 3)


def _conv_with_custom_kernel_grad_fwd(lhs, rhs, padding, kernel_grad):
  del kernel_grad
  return _nhwc_conv(lhs, rhs, padding), (lhs, rhs)


def _conv_with_custom_kernel_grad_bwd(padding, kernel_grad, residuals, cotangent):
  lhs, rhs = residuals
  _, lhs_vjp = jax.vjp(lambda x: _nhwc_conv(x, rhs, padding), lhs)
  return lhs_vjp(cotangent)[0], kernel_grad(padding, lhs, cotangent).astype(rhs.dtype)


_conv_with_custom_kernel_grad.defvjp(_conv_with_custom_kernel_grad_fwd,
                                     _conv_with_custom_kernel_grad_bwd)

# A conv with at most this many output channels (and a kernel larger than 3x3)
# gets its CPU kernel gradient from shifted cotangents.
FEW_OUTPUT_CHANNELS = 4


def conv_with_fast_cpu_kernel_grad(lhs: jax.Array, rhs: jax.Array, window_strides, padding,
                                   lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
                                   feature_group_count=1, batch_group_count=1, precision=None,
                                   preferred_element_type=None) -> jax.Array:
  """`jax.lax.conv_general_dilated`, with a kernel gradient XLA:CPU computes fast.

  For `nn.Conv(..., conv_general_dilated=conv_with_fast_cpu_kernel_grad)`.
  XLA:CPU (jax 0.10) computes the kernel gradient of a stride-1 NHWC 3x3 conv
  on large maps slowly: 64 -> 128 channels on [2, 256, 256, 64] takes 1.1 s,
  128 -> 64 on [2, 256, 256, 128] 0.55 s, 256 -> 128 on [2, 128, 128, 256]
  0.49 s, where one matmul per kernel tap (`_kernel_grad_by_taps`) takes 0.30,
  0.41 and 0.24 s; and that of a 7x7 conv to an image, 64 -> 3 channels on
  [2, 264, 264, 64], in 0.25 s, where one matmul over shifted cotangents
  (`_kernel_grad_by_shifted_cotangent`) takes 0.12 s (the same sums in
  another order: float32 rounding apart; benchmarks/RESULTS.md, CUT's sixth
  and eighth rounds). Such a conv, run on a CPU, gets that gradient; every
  other conv, and every conv on a GPU or TPU, is
  `jax.lax.conv_general_dilated` unchanged. Values are always the lax conv's.
  """
  lax_conv = functools.partial(
      jax.lax.conv_general_dilated, window_strides=window_strides, padding=padding,
      lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  supported = (
      lhs.ndim == 4 and not isinstance(padding, str)
      and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
      and tuple(window_strides) == (1, 1) and set(lhs_dilation or (1,)) == {1}
      and set(rhs_dilation or (1,)) == {1} and feature_group_count == batch_group_count == 1
      and precision is None and preferred_element_type is None)
  if not supported:
    return lax_conv(lhs, rhs)
  if rhs.shape[:2] == (3, 3):
    kernel_grad = _kernel_grad_by_taps
  elif rhs.shape[3] <= FEW_OUTPUT_CHANNELS:
    kernel_grad = _kernel_grad_by_shifted_cotangent
  else:
    return lax_conv(lhs, rhs)
  padding = tuple(tuple(pair) for pair in padding)
  return jax.lax.platform_dependent(
      lhs, rhs, cpu=lambda x, w: _conv_with_custom_kernel_grad(x, w, padding, kernel_grad),
      default=lax_conv)
