"""Small building blocks shared by the VSAIT modules (NHWC throughout).

The reference builds every network from PyTorch layers whose defaults matter for
parity (reflection padding, `InstanceNorm2d` without affine parameters, Xavier
initialisation with gain 0.2); they are spelled out here once.
"""

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


def _shift_sum_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Unpadded, stride-1 conv as one matmul over input channels and a sum of shifted taps.

  Args:
    x: [B, H, W, C_in]; kernel: [kh, kw, C_in, C_out] (HWIO).
  Returns:
    [B, H - kh + 1, W - kw + 1, C_out], the "VALID" cross-correlation.
  Every tap's contribution is computed at every input position
  ([B, H, W, kh * kw, C_out]: cheap when C_out is small), then each tap's
  window is added up.
  """
  kh, kw, in_channels, out_channels = kernel.shape
  _, height, width, _ = x.shape
  out_h, out_w = height - kh + 1, width - kw + 1
  per_tap = jnp.einsum("bhwc,tco->bhwto", x,
                       kernel.reshape(kh * kw, in_channels, out_channels))
  out = per_tap[:, :out_h, :out_w, 0]
  for tap in range(1, kh * kw):
    i, j = divmod(tap, kw)
    out = out + per_tap[:, i:i + out_h, j:j + out_w, tap]
  return out


def _nhwc_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def _few_channel_conv_cpu(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`_nhwc_conv` with a shift-sum forward (few output channels) or input gradient (few inputs)."""
  if kernel.shape[3] < kernel.shape[2]:
    return _shift_sum_conv(x, kernel)
  return _nhwc_conv(x, kernel)


def _few_channel_conv_cpu_grad(residuals, grad):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  x_grad, kernel_grad = jax.vjp(_nhwc_conv, x, kernel)[1](grad)
  if kernel.shape[2] < kernel.shape[3]:
    # The input gradient is the full correlation of `grad` with the kernel
    # flipped in space and in/out swapped: a conv with few output channels.
    padded = jnp.pad(grad, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    x_grad = _shift_sum_conv(padded, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
  return x_grad, kernel_grad


_few_channel_conv_cpu.defvjp(lambda x, kernel: (_few_channel_conv_cpu(x, kernel), (x, kernel)),
                             _few_channel_conv_cpu_grad)


def few_channel_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                     rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                     precision=None) -> jax.Array:
  """`lax.conv_general_dilated` for unpadded, stride-1 NHWC convs with few in or out channels.

  A drop-in for `nn.Conv(conv_general_dilated=...)` (e.g. a 7x7 conv from or to
  RGB). On CPU the side with few channels goes through `_shift_sum_conv`
  (the forward when the outputs are few, the input gradient when the inputs
  are): XLA:CPU's own kernels run those convs at a tenth of its matmul rate
  (benchmarks/RESULTS.md). Elsewhere it is the plain conv. Same values up to
  float rounding.
  """
  del lhs_dilation, rhs_dilation, precision  # none (checked by the caller's layer: 1, default)
  if (tuple(window_strides) != (1, 1) or padding != "VALID" or feature_group_count != 1
      or tuple(dimension_numbers.lhs_spec) != (0, 3, 1, 2)
      or tuple(dimension_numbers.rhs_spec) != (3, 2, 0, 1)):
    raise ValueError("few_channel_conv supports unpadded, stride-1, ungrouped NHWC/HWIO convs")
  return jax.lax.platform_dependent(lhs, rhs, cpu=_few_channel_conv_cpu, default=_nhwc_conv)
