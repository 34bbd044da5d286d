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
