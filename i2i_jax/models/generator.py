"""The VSAIT ResNet generator (the reference's `ResNetGenerator`, paper config).

Layout for `res_blocks = R` and base width `C` (`[B, H, W, 3] -> [B, H, W, 3]`):

  encoder: conv7x7(3->C) | conv3x3(C->2C), blur-down | conv3x3(2C->4C), blur-down
           | R - R//2 residual blocks
  decoder: R//2 residual blocks | blur-up, conv3x3(4C->2C) | blur-up, conv3x3(2C->C)
           | conv7x7(C->3), tanh

Every conv pads by reflection and (except the output conv) is followed by
instance norm and ReLU. H and W must be divisible by 4.

Label-conditioned (`label_classes = K > 0`, config.model.label_conditioned_generator;
not in the paper): the two up-sampling stages of the decoder (at H/2 and H)
modulate their instance-normalised activations SPADE-style by the source label
map (`SpatialLabelModulation`), so class regions and small objects are
re-injected where the translation would wash them out.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.models import layers


def gaussian_kernel(size: int, scale: float = 1.0) -> np.ndarray:
  """2-D Gaussian (sigma 1) centred on the kernel, summing to `scale`: [size, size] float32."""
  coords = np.arange(size, dtype=np.float64) - (size / 2.0 - 0.5)
  squared = coords[:, None] ** 2 + coords[None, :] ** 2
  kernel = np.exp(-squared / 2.0)
  return (scale * kernel / kernel.sum()).astype(np.float32)


def _depthwise_kernel_init(size: int, scale: float, channels: int):
  return lambda: jnp.asarray(
      np.tile(gaussian_kernel(size, scale)[:, :, None, None], (1, 1, 1, channels)))


class GaussianDownsample(nn.Module):
  """Blur with a 3x3 Gaussian and take every second pixel: [B, H, W, C] -> [B, H/2, W/2, C].

  The depthwise conv (stride 2, zero padding 1) is written as nine weighted
  slices of the padded input split into its 2x2 pixel phases: XLA fuses them
  into one elementwise pass, ~50-100x faster on CPU than a grouped conv.

  The kernel is a fixed buffer (collection "constants", [3, 3, 1, C]) so that
  weights imported from the reference are used bit for bit.
  """
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.variable("constants", "kernel",
                           _depthwise_kernel_init(3, 1.0, self.channels)).value.astype(x.dtype)
    batch, height, width, channels = x.shape
    rows, cols = height // 2, width // 2
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # phases[:, r, p, s, q] = padded[:, 2r + p, 2s + q]
    phases = padded.reshape(batch, rows + 1, 2, cols + 1, 2, channels)
    out = 0
    for i in range(3):
      for j in range(3):
        tap = phases[:, i // 2:i // 2 + rows, i % 2, j // 2:j // 2 + cols, j % 2, :]
        out = out + tap * kernel[i, j, 0]
    return out


# Output phase of the transposed conv -> its two (kernel tap, start row in the
# 1-padded input) pairs; see `GaussianUpsample`.
_UPSAMPLE_TAPS = {0: ((0, 0), (2, 1)), 1: ((1, 1), (3, 2))}


class GaussianUpsample(nn.Module):
  """Transposed 4x4 Gaussian conv, stride 2: [B, H, W, C] -> [B, 2H, 2W, C].

  The reference zero-pads by 1, runs `conv_transpose2d(stride=2, padding=2)` with
  `4 * g4` and crops one pixel from every side; with a symmetric kernel that is
  the correlation of the 2x-dilated input with the kernel. Each output phase
  (even/odd row, even/odd column) sees 2x2 of the 16 taps, so the layer is
  computed as four sums of four weighted slices, interleaved: one fused
  elementwise pass (a grouped, dilated conv is ~100x slower on CPU).
  Output row 2p takes taps 0 and 2 at input rows p - 1 and p; row 2p + 1 takes
  taps 1 and 3 at rows p and p + 1 (zero outside).
  """
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.variable("constants", "kernel",
                           _depthwise_kernel_init(4, 4.0, self.channels)).value.astype(x.dtype)
    batch, height, width, channels = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    rows = []
    for row_phase in (0, 1):
      cols = []
      for col_phase in (0, 1):
        out = 0
        for i, top in _UPSAMPLE_TAPS[row_phase]:
          for j, left in _UPSAMPLE_TAPS[col_phase]:
            out = out + padded[:, top:top + height, left:left + width, :] * kernel[i, j, 0]
        cols.append(out)
      rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2, C]
    return jnp.stack(rows, axis=2).reshape(batch, 2 * height, 2 * width, channels)


class ConvNormReLU(nn.Module):
  """Reflection pad, conv (with bias), instance norm, ReLU."""
  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = layers.reflect_pad(x, self.kernel_size // 2)
    x = nn.Conv(self.features, (self.kernel_size,) * 2,
                padding=layers.CROPPED_CONV_PADDING, dtype=self.dtype,
                kernel_init=layers.xavier_normal_gain_02, name="conv")(x)
    return nn.relu(layers.instance_norm(layers.crop(x)))


def one_hot_labels(labels: jax.Array, height: int, width: int, num_classes: int,
                   dtype: Any = jnp.float32) -> jax.Array:
  """Label map [B, H', W'] int -> one-hot [B, height, width, K], resized nearest.

  Nearest sampling (source index floor(dst * in / out)) keeps class ids
  unmixed; ignore pixels (255) and ids >= K become all-zero vectors.
  """
  rows = (np.arange(height) * labels.shape[1]) // height
  cols = (np.arange(width) * labels.shape[2]) // width
  return jax.nn.one_hot(labels[:, rows][:, :, cols], num_classes, dtype=dtype)


class SpatialLabelModulation(nn.Module):
  """SPADE (Park et al. 2019): `x * (1 + gamma(labels)) + beta(labels)`, per pixel and channel.

  gamma and beta come from a 3x3 conv with ReLU (`hidden` channels) and two 3x3
  convs on the one-hot label map resized (nearest) to x's grid. The last convs
  start at zero, so a fresh module is the identity.

  Attributes:
    num_classes: K, channels of the one-hot map.
    hidden: width of the shared conv.
    dtype: compute dtype.
  """
  num_classes: int
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    """x: [B, h, w, C] normalised activations; labels: [B, H, W] int -> [B, h, w, C]."""
    segmentation = one_hot_labels(labels, x.shape[1], x.shape[2], self.num_classes, self.dtype)
    shared = nn.relu(nn.Conv(self.hidden, (3, 3), dtype=self.dtype, name="shared")(segmentation))
    gamma = nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros,
                    name="gamma")(shared)
    beta = nn.Conv(x.shape[-1], (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros,
                   name="beta")(shared)
    return x * (1 + gamma) + beta


class LabelConvNormReLU(nn.Module):
  """`ConvNormReLU` whose normalised activations are modulated by the label map (SPADE)."""
  features: int
  kernel_size: int
  num_classes: int
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, labels: jax.Array) -> jax.Array:
    x = layers.reflect_pad(x, self.kernel_size // 2)
    x = nn.Conv(self.features, (self.kernel_size,) * 2,
                padding=layers.CROPPED_CONV_PADDING, dtype=self.dtype,
                kernel_init=layers.xavier_normal_gain_02, name="conv")(x)
    x = layers.instance_norm(layers.crop(x))
    x = SpatialLabelModulation(self.num_classes, self.hidden, self.dtype, name="spade")(x, labels)
    return nn.relu(x)


class ResidualBlock(nn.Module):
  """`x + IN(conv3x3(pad(ReLU(IN(conv3x3(pad(x)))))))`, no activation after the sum."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    y = ConvNormReLU(features, 3, self.dtype, name="conv_0")(x)
    y = layers.reflect_pad(y, 1)
    y = nn.Conv(features, (3, 3), padding=layers.CROPPED_CONV_PADDING, dtype=self.dtype,
                kernel_init=layers.xavier_normal_gain_02, name="conv_1")(y)
    return x + layers.instance_norm(layers.crop(y))


class ResNetGenerator(nn.Module):
  """The translator G: images [B, H, W, in] in [-1, 1] -> [B, H, W, out] in (-1, 1).

  Attributes:
    res_channels: base width C (the paper uses 64).
    res_blocks: residual blocks R (the paper uses 9); R - R//2 in the encoder.
    out_channels: channels of the output image.
    label_classes: K > 0: the decoder's up-sampling stages are modulated by the
      source label map (SPADE); 0 (the paper): no labels.
    dtype: compute dtype; parameters stay float32.
  """
  res_channels: int = 64
  res_blocks: int = 9
  out_channels: int = 3
  label_classes: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, labels: jax.Array | None = None) -> jax.Array:
    """images: [B, H, W, in] in [-1, 1]; labels: [B, H, W] int class ids (255 = none),
    required exactly when `label_classes > 0`."""
    if images.shape[1] % 4 or images.shape[2] % 4:
      raise ValueError(f"generator input height and width must be multiples of 4 (two "
                       f"stride-2 resamplings), got images of shape {images.shape}")
    if (labels is None) != (self.label_classes == 0):
      raise ValueError(
          "the label-conditioned generator (config.model.label_conditioned_generator) needs "
          "the source label map [B, H, W]" if labels is None else
          "labels given to a generator that is not label-conditioned "
          "(config.model.label_conditioned_generator=False)")
    width = self.res_channels
    encoder_blocks = self.res_blocks - self.res_blocks // 2
    x = images.astype(self.dtype)
    x = ConvNormReLU(width, 7, self.dtype, name="encoder_in")(x)
    x = ConvNormReLU(2 * width, 3, self.dtype, name="encoder_down_0")(x)
    x = GaussianDownsample(2 * width, name="encoder_blur_0")(x)
    x = ConvNormReLU(4 * width, 3, self.dtype, name="encoder_down_1")(x)
    x = GaussianDownsample(4 * width, name="encoder_blur_1")(x)
    for i in range(encoder_blocks):
      x = ResidualBlock(self.dtype, name=f"encoder_res_{i}")(x)
    for i in range(self.res_blocks - encoder_blocks):
      x = ResidualBlock(self.dtype, name=f"decoder_res_{i}")(x)
    for i, features in enumerate((2 * width, width)):
      x = GaussianUpsample(x.shape[-1], name=f"decoder_blur_{i}")(x)
      if self.label_classes:
        x = LabelConvNormReLU(features, 3, self.label_classes, width, self.dtype,
                              name=f"decoder_up_{i}")(x, labels)
      else:
        x = ConvNormReLU(features, 3, self.dtype, name=f"decoder_up_{i}")(x)
    x = layers.reflect_pad(x, 3)
    x = nn.Conv(self.out_channels, (7, 7), padding=layers.CROPPED_CONV_PADDING,
                dtype=self.dtype, kernel_init=layers.xavier_normal_gain_02,
                name="decoder_out")(x)
    return jnp.tanh(layers.crop(x))
