"""Small building blocks shared by the VSAIT modules (NHWC throughout).

The reference builds every network from PyTorch layers whose defaults matter for
parity (reflection padding, `InstanceNorm2d` without affine parameters, Xavier
initialisation with gain 0.2); they are spelled out here once.
"""

import functools

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


# Convs with at most this many channels on a side run that side as a shift-sum on CPU.
FEW_CHANNELS = 4

Padding = tuple[tuple[int, int], tuple[int, int]]


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


def _nhwc_conv(x: jax.Array, kernel: jax.Array, padding: Padding = ((0, 0), (0, 0))) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _zero_pad(x: jax.Array, padding: Padding) -> jax.Array:
  return jnp.pad(x, ((0, 0), *padding, (0, 0))) if any(map(any, padding)) else x


def _batch_stacked_kernel_grad(padding: Padding, x: jax.Array, kernel: jax.Array,
                               grad: jax.Array) -> jax.Array:
  """The kernel gradient of `_nhwc_conv(x, kernel, padding)`, with the batch stacked along H.

  The B padded inputs, one above the other, are one [1, B * H_pad, W_pad, C_in]
  image (a free reshape), and the output gradient gets kh - 1 zero rows under
  each image's rows (the outputs whose windows straddle two images), so one
  conv of batch 1 gives the kernel gradient: XLA:CPU computes it 1.2-1.5x
  faster than that of the batch-B conv, whose layout puts the batch in the
  innermost dimension (benchmarks/RESULTS.md). Same sums in another order.
  """
  kh = kernel.shape[0]
  padded = _zero_pad(x, padding)
  batch, padded_h, padded_w, in_channels = padded.shape
  framed = jnp.pad(grad, ((0, 0), (0, kh - 1), (0, 0), (0, 0)))
  stacked_grad = framed.reshape(1, batch * padded_h, *grad.shape[2:])[:, :batch * padded_h - kh + 1]
  stacked_x = padded.reshape(1, batch * padded_h, padded_w, in_channels)
  return jax.vjp(lambda k: _nhwc_conv(stacked_x, k), kernel)[1](stacked_grad)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cpu_conv(padding: Padding, x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`_nhwc_conv`, as a shift-sum when it has few output channels."""
  if kernel.shape[3] <= FEW_CHANNELS < kernel.shape[2]:
    return _shift_sum_conv(_zero_pad(x, padding), kernel)
  return _nhwc_conv(x, kernel, padding)


def _cpu_conv_grad(padding: Padding, residuals, grad):
  x, kernel = residuals
  kh, kw, in_channels, out_channels = kernel.shape
  if in_channels <= FEW_CHANNELS < out_channels:
    # The padded input's gradient is the full correlation of `grad` with the
    # kernel flipped in space and in/out swapped: a conv with few output
    # channels; the padding's rows and columns are then dropped.
    framed = jnp.pad(grad, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
    padded_grad = _shift_sum_conv(framed, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    (top, _), (left, _) = padding
    x_grad = padded_grad[:, top:top + x.shape[1], left:left + x.shape[2]]
  else:
    x_grad = jax.vjp(lambda v: _nhwc_conv(v, kernel, padding), x)[1](grad)[0]
  if x.shape[0] > 1 and out_channels > FEW_CHANNELS:
    kernel_grad = _batch_stacked_kernel_grad(padding, x, kernel, grad)
  else:
    kernel_grad = jax.vjp(lambda k: _nhwc_conv(x, k, padding), kernel)[1](grad)[0]
  return x_grad, kernel_grad


_cpu_conv.defvjp(lambda padding, x, kernel: (_cpu_conv(padding, x, kernel), (x, kernel)),
                 _cpu_conv_grad)


def cpu_tuned_conv(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
                   rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                   precision=None) -> jax.Array:
  """`lax.conv_general_dilated` for stride-1 NHWC convs, with CPU-friendly gradients.

  A drop-in for `nn.Conv(conv_general_dilated=...)` with "VALID" or explicit
  zero padding. On CPU (elsewhere it is the plain conv):
  - a side with at most `FEW_CHANNELS` channels (a 7x7 conv from or to RGB:
    the forward when the outputs are few, the input gradient when the inputs
    are) is one matmul over channels and a sum of the shifted taps
    (`_shift_sum_conv`); XLA:CPU's own conv kernels run it at a tenth of its
    matmul rate;
  - the kernel gradient of a batch of several images (more than
    `FEW_CHANNELS` outputs) is that of one image made of the batch stacked
    along H (`_batch_stacked_kernel_grad`).
  Same values up to float rounding (`benchmarks/cpu_conv_grads.py`).
  """
  del lhs_dilation, rhs_dilation, precision  # none (checked by the caller's layer: 1, default)
  if (tuple(window_strides) != (1, 1) or isinstance(padding, str) and padding != "VALID"
      or feature_group_count != 1
      or tuple(dimension_numbers.lhs_spec) != (0, 3, 1, 2)
      or tuple(dimension_numbers.rhs_spec) != (3, 2, 0, 1)):
    raise ValueError("cpu_tuned_conv supports stride-1, ungrouped NHWC/HWIO convs with "
                     "'VALID' or explicit padding")
  padding = ((0, 0), (0, 0)) if padding == "VALID" else tuple(tuple(pair) for pair in padding)
  return jax.lax.platform_dependent(lhs, rhs, cpu=functools.partial(_cpu_conv, padding),
                                    default=functools.partial(_nhwc_conv, padding=padding))
