"""CUT (Park et al., ECCV 2020): generator, patch sampler and PatchGAN discriminator.

Flax versions of the official networks (taesungp/contrastive-unpaired-translation,
models/networks.py) in their CUT defaults: `--netG resnet_9blocks --normG instance
--netF mlp_sample --netD basic --normD instance --init_type xavier --init_gain
0.02`, antialiased down- and up-sampling (`--no_antialias`, `--no_antialias_up`
off). NHWC throughout. docs/cut.md maps every official module to ours.

The official `--no_antialias` / `--no_antialias_up` networks (strided convs and
a transposed conv instead of the blur layers) are the networks of the CycleGAN
code they descend from (junyanz/pytorch-CycleGAN-and-pix2pix), which the
CycleGAN family (`i2i_jax/losses_cyclegan.py`) builds from these modules with
`antialias=False`, `antialias_up=False` and its own `kernel_init`.

The official networks are `nn.Sequential`s and CUT picks its contrastive
features by index into the generator's list (`--nce_layers 0,4,8,12,16`), so
`ResnetGenerator` builds the same list, names each parameterised entry after
its index (`model_4`, the official `model.4`) and returns the features at given
indices.
"""

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from i2i_jax.models import layers

# `init_weights(net, "xavier", 0.02)`: xavier_normal_(gain=0.02) on every conv
# and linear weight, biases 0.
xavier_normal_gain_002 = jax.nn.initializers.variance_scaling(0.02**2, "fan_avg", "normal")


def binomial_filter(size: int) -> np.ndarray:
  """The official `get_filter`: outer product of a binomial row, summing to 1: [size, size].

  Every entry is a dyadic fraction (1/16, 3/64, ...), exact in any float type.
  """
  row = np.array([math.comb(size - 1, k) for k in range(size)], np.float64)
  return np.outer(row, row) / np.outer(row, row).sum()


def _downsample_axis(x: jax.Array, axis: int) -> jax.Array:
  """Reflection-pads `axis` of x by 1 and blurs it with [1, 2, 1] / 4, stride 2: n -> ceil(n/2).

  Written as three weighted slices of the padded axis split into its even and
  odd entries (one fused elementwise pass on XLA:CPU).
  """
  length = x.shape[axis]
  out_length = (length + 1) // 2
  padded = jnp.pad(x, _axis_pad(axis, (1, 1)), mode="reflect")
  # An odd length gets one more (never read) entry so that it splits into pairs.
  padded = jnp.pad(padded, _axis_pad(axis, (0, 2 * out_length - length)))
  # pairs[..., r, p, ...] = padded[..., 2r + p, ...]
  pairs = padded.reshape(x.shape[:axis] + (out_length + 1, 2) + x.shape[axis + 1:])

  def tap(start: int, parity: int) -> jax.Array:
    rows = jax.lax.slice_in_dim(pairs, start, start + out_length, axis=axis)
    return jax.lax.index_in_dim(rows, parity, axis + 1, keepdims=False)

  return 0.25 * tap(0, 0) + 0.5 * tap(0, 1) + 0.25 * tap(1, 0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _upsample_axis(x: jax.Array, axis: int) -> jax.Array:
  """Replication-pads `axis` of x by 1 and up-samples it 2x with [1, 3, 3, 1] / 4: n -> 2n.

  The official transposed conv along one axis: output 2p is 1/4 x[p - 1] +
  3/4 x[p], output 2p + 1 is 3/4 x[p] + 1/4 x[p + 1] (x clamped at the ends);
  the even and odd outputs are interleaved. Its gradient is written out
  (`_upsample_axis_grad`): ~2.5x faster on XLA:CPU than the transpose JAX derives.
  """
  length = x.shape[axis]
  padded = jnp.pad(x, _axis_pad(axis, (1, 1)), mode="edge")

  def shifted(start: int) -> jax.Array:
    return jax.lax.slice_in_dim(padded, start, start + length, axis=axis)

  even = 0.25 * shifted(0) + 0.75 * shifted(1)
  odd = 0.75 * shifted(1) + 0.25 * shifted(2)
  return jnp.stack([even, odd], axis=axis + 1).reshape(
      x.shape[:axis] + (2 * length,) + x.shape[axis + 1:])


def _upsample_axis_grad(axis: int, _, grad: jax.Array) -> tuple[jax.Array]:
  """The transpose of `_upsample_axis`: grad n -> 2n along `axis` back to n.

  With q the gradient replication-padded by 1, input p gets 1/4 q[2p] +
  3/4 q[2p + 1] + 3/4 q[2p + 2] + 1/4 q[2p + 3] (the padding folds the end
  outputs' weight on the clamped neighbour back onto the end input).
  """
  length = grad.shape[axis] // 2
  padded = jnp.pad(grad, _axis_pad(axis, (1, 1)), mode="edge")
  # pairs[..., r, p, ...] = padded[..., 2r + p, ...]
  pairs = padded.reshape(grad.shape[:axis] + (length + 1, 2) + grad.shape[axis + 1:])

  def tap(start: int, parity: int) -> jax.Array:
    rows = jax.lax.slice_in_dim(pairs, start, start + length, axis=axis)
    return jax.lax.index_in_dim(rows, parity, axis + 1, keepdims=False)

  return (0.25 * tap(0, 0) + 0.75 * tap(0, 1) + 0.75 * tap(1, 0) + 0.25 * tap(1, 1),)


_upsample_axis.defvjp(lambda x, axis: (_upsample_axis(x, axis), None), _upsample_axis_grad)


def _axis_pad(axis: int, widths: tuple[int, int]) -> list[tuple[int, int]]:
  """`jnp.pad` widths for x: [B, H, W, C] that pad only `axis` by `widths`."""
  return [widths if a == axis else (0, 0) for a in range(4)]


def blur_downsample(x: jax.Array) -> jax.Array:
  """The official `Downsample` (filter 3, stride 2): [B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C].

  Reflection-pads by 1, then the [1, 2, 1] x [1, 2, 1] / 16 blur with stride 2.
  The filter is `binomial_filter(3)`, an outer product, so the blur runs along
  H, then W, as weighted slices: on XLA:CPU 6-9x faster (value and gradient)
  than as a grouped conv (benchmarks/RESULTS.md).
  """
  return _downsample_axis(_downsample_axis(x, 1), 2)


def blur_upsample(x: jax.Array) -> jax.Array:
  """The official `Upsample` (filter 4, stride 2): [B, H, W, C] -> [B, 2H, 2W, C].

  Replication-pads by 1, `conv_transpose2d(stride=2, padding=2)` with the
  [1, 3, 3, 1] x [1, 3, 3, 1] / 64 filter times 4 (`4 * binomial_filter(4)`),
  then drops the first and last row and column. The filter is an outer
  product, so this runs along H, then W, as weighted slices: on XLA:CPU 10-30x
  faster (value and gradient) than as a grouped, input-dilated conv
  (benchmarks/RESULTS.md).
  """
  return _upsample_axis(_upsample_axis(x, 1), 2)


class ResnetBlock(nn.Module):
  """The official `ResnetBlock` (reflect padding, instance norm, no dropout): `x + block(x)`.

  block = pad1, conv3x3 (`conv_block_1`), IN, ReLU, pad1, conv3x3 (`conv_block_5`), IN.
  """
  dtype: Any = jnp.float32
  kernel_init: Callable = xavier_normal_gain_002

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    y = x
    for index in (1, 5):
      y = nn.Conv(features, (3, 3), padding="VALID", dtype=self.dtype,
                  kernel_init=self.kernel_init,
                  name=f"conv_block_{index}")(layers.reflect_pad(y, 1))
      y = layers.instance_norm(y)
      if index == 1:
        y = nn.relu(y)
    return x + y


# One entry of the official generator's nn.Sequential: (kind, output channels).
# Kinds: reflect3 | conv7 | conv3 | conv3s2 | convT | norm | relu | down | res |
# up | tanh.
_Layer = tuple[str, int]


def generator_layers(ngf: int, n_blocks: int, output_nc: int, antialias: bool = True,
                     antialias_up: bool = True) -> list[_Layer]:
  """The official `ResnetGenerator.model` list, entry by entry (index = official index).

  `antialias=False` (official `--no_antialias`): each down-sampling stage is a
  stride-2 conv3x3 ("conv3s2"), norm, ReLU, without the blur layer;
  `antialias_up=False` (`--no_antialias_up`): each up-sampling stage is a
  transposed conv3x3 ("convT", stride 2), norm, ReLU. Both off is the
  CycleGAN `ResnetGenerator`.
  """
  entries: list[_Layer] = [("reflect3", 0), ("conv7", ngf), ("norm", 0), ("relu", 0)]
  for i in range(2):
    width = ngf * 2 ** (i + 1)
    entries += ([("conv3", width), ("norm", 0), ("relu", 0), ("down", 0)] if antialias
                else [("conv3s2", width), ("norm", 0), ("relu", 0)])
  entries += [("res", 0)] * n_blocks
  for i in range(2):
    width = ngf * 2 ** (1 - i)
    entries += ([("up", 0), ("conv3", width), ("norm", 0), ("relu", 0)] if antialias_up
                else [("convT", width), ("norm", 0), ("relu", 0)])
  entries += [("reflect3", 0), ("conv7", output_nc), ("tanh", 0)]
  return entries


def forward_features_equal_encoder_features(generator: "ResnetGenerator",
                                            feature_layers: Sequence[int]) -> bool:
  """Whether a full forward's features at `feature_layers` are an `encode_only` pass's.

  They differ only when the last of the layers is followed by a ReLU: the full
  forward runs it (in place, officially), the encoder pass stops before it.
  """
  entries = generator_layers(generator.ngf, generator.n_blocks, generator.output_nc,
                             generator.antialias, generator.antialias_up)
  last = max(feature_layers)
  return last + 1 == len(entries) or entries[last + 1][0] != "relu"


class ResnetGenerator(nn.Module):
  """The CUT generator G: images [B, H, W, 3] in [-1, 1] -> [B, H, W, output_nc] in (-1, 1).

  H and W must be divisible by 4. Every layer follows the official list
  (`generator_layers`): reflect-pad 3, conv7x7, IN, ReLU, two stages of conv3x3
  (zero padding 1), IN, ReLU, blur-downsample; `n_blocks` residual blocks; two
  stages of blur-upsample, conv3x3 (zero padding 1), IN, ReLU; reflect-pad 3,
  conv7x7, tanh. All convs have biases (instance norm has no affine part).
  Without `antialias` a down-sampling stage is a stride-2 conv3x3 (zero padding
  1), IN, ReLU; without `antialias_up` an up-sampling stage is
  `ConvTranspose2d(3, stride=2, padding=1, output_padding=1)`, IN, ReLU.

  Attributes:
    ngf: width of the first conv (official `--ngf`).
    n_blocks: residual blocks (9 for the official `resnet_9blocks`).
    output_nc: output channels.
    dtype: compute dtype.
    antialias: blur down-sampling (official `not --no_antialias`).
    antialias_up: blur up-sampling (official `not --no_antialias_up`).
    kernel_init: initializer of every conv kernel (biases start at 0).
  """
  ngf: int = 64
  n_blocks: int = 9
  output_nc: int = 3
  dtype: Any = jnp.float32
  antialias: bool = True
  antialias_up: bool = True
  kernel_init: Callable = xavier_normal_gain_002

  def _apply_layer(self, index: int, kind: str, features: int, x: jax.Array) -> jax.Array:
    if kind == "conv7":  # on the reflection-padded input
      return nn.Conv(features, (7, 7), padding="VALID", dtype=self.dtype,
                     kernel_init=self.kernel_init, conv_general_dilated=layers.cpu_tuned_conv,
                     name=f"model_{index}")(x)
    if kind in ("conv3", "conv3s2"):
      return nn.Conv(features, (3, 3), strides=2 if kind == "conv3s2" else 1,
                     padding=((1, 1), (1, 1)), dtype=self.dtype, kernel_init=self.kernel_init,
                     conv_general_dilated=(layers.cpu_tuned_conv if kind == "conv3"
                                           else jax.lax.conv_general_dilated),
                     name=f"model_{index}")(x)
    if kind == "convT":
      # PyTorch's ConvTranspose2d(3, stride 2, padding 1, output_padding 1): the
      # 2x-dilated input padded by (3 - 1 - 1, 3 - 1 - 1 + 1); the kernel is the
      # official weight [in, out, kh, kw] as [kh, kw, out, in] (transpose_kernel).
      return nn.ConvTranspose(features, (3, 3), strides=(2, 2), padding=((1, 2), (1, 2)),
                              transpose_kernel=True, dtype=self.dtype,
                              kernel_init=self.kernel_init, name=f"model_{index}")(x)
    if kind == "res":
      return ResnetBlock(self.dtype, self.kernel_init, name=f"model_{index}")(x)
    simple: dict[str, Callable[[jax.Array], jax.Array]] = {
        "reflect3": lambda v: layers.reflect_pad(v, 3), "norm": layers.instance_norm,
        "relu": nn.relu, "down": blur_downsample, "up": blur_upsample, "tanh": jnp.tanh}
    return simple[kind](x)

  @nn.compact
  def __call__(self, images: jax.Array, feature_layers: Sequence[int] = (),
               encode_only: bool = False):
    """Translation, or the features at official layer indices.

    Args:
      images: [B, H, W, C_in].
      feature_layers: official indices into the layer list (`--nce_layers`);
        the feature of index i is the output of layer i ([B, h_i, w_i, c_i]).
        As in the official in-place `ReLU(True)`, a feature whose next layer is
        a ReLU that runs is the value after that ReLU.
      encode_only: stop after the layer `feature_layers[-1]` and return the
        features alone (the official `encode_only=True`).
    Returns:
      [B, H, W, output_nc] without `feature_layers`; the list of features with
      `encode_only`; else (translation, features).
    """
    x = images.astype(self.dtype)
    entries = generator_layers(self.ngf, self.n_blocks, self.output_nc, self.antialias,
                               self.antialias_up)
    features, stored_at = [], {}
    for index, (kind, width) in enumerate(entries):
      x = self._apply_layer(index, kind, width, x)
      if index in feature_layers:
        stored_at[index] = len(features)
        features.append(x)
      elif kind == "relu" and index - 1 in stored_at:
        features[stored_at[index - 1]] = x
      if encode_only and feature_layers and index == feature_layers[-1]:
        return features
    return (x, features) if feature_layers else x


class PatchSampleF(nn.Module):
  """The official `PatchSampleF` with MLPs (`--netF mlp_sample`): sampled, projected features.

  For feature map i ([B, h, w, c]) it takes the positions `patch_ids[i]` (flat
  indices into h * w, the same for every image of the batch), runs them through
  `Linear(c, nc), ReLU, Linear(nc, nc)` (`mlp_{i}_0`, `mlp_{i}_2`, the
  official `mlp_{i}.0` / `.2`) and divides by the L2 norm + 1e-7.

  Attributes:
    nc: MLP width (official `--netF_nc`).
    dtype: compute dtype.
  """
  nc: int = 256
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array],
               patch_ids: Sequence[jax.Array]) -> list[jax.Array]:
    """features: list of [B, h_i, w_i, c_i]; patch_ids: list of [P_i] int -> list of [B * P_i, nc]."""
    pooled = []
    for i, (feature, ids) in enumerate(zip(features, patch_ids, strict=True)):
      batch, height, width, channels = feature.shape
      x = feature.reshape(batch, height * width, channels)[:, ids, :].reshape(-1, channels)
      x = nn.Dense(self.nc, dtype=self.dtype, kernel_init=xavier_normal_gain_002,
                   name=f"mlp_{i}_0")(x.astype(self.dtype))
      x = nn.Dense(self.nc, dtype=self.dtype, kernel_init=xavier_normal_gain_002,
                   name=f"mlp_{i}_2")(nn.relu(x))
      squared_norm = jnp.sum(jnp.square(x), axis=1, keepdims=True)
      # The norm's own gradient at a zero row is taken as 0 (the official
      # `pow(1/2)` makes it inf, and the row's gradient NaN): same values.
      nonzero = squared_norm > 0
      norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squared_norm, 1.0)), 0.0)
      pooled.append(x / (norm + 1e-7))
    return pooled


def sample_patch_ids(rng: jax.Array, features: Sequence[jax.Array],
                     num_patches: int) -> list[jax.Array]:
  """Distinct random positions per feature map: list of [min(num_patches, h_i * w_i)] int32.

  The official code draws `np.random.permutation(h * w)[:num_patches]` per map;
  this is the same distribution from a JAX key (one per map, `fold_in(rng, i)`):
  the positions of the largest of h * w uniform draws, in their draws' order
  (one partial sort, where a permutation sorts every position several times).
  """
  ids = []
  for i, feature in enumerate(features):
    positions = feature.shape[1] * feature.shape[2]
    draws = jax.random.uniform(jax.random.fold_in(rng, i), (positions,))
    ids.append(jax.lax.top_k(draws, min(num_patches, positions))[1])
  return ids


class NLayerDiscriminator(nn.Module):
  """The official PatchGAN `NLayerDiscriminator`: images [B, H, W, C] -> [B, h, w, 1].

  Antialiased (CUT's default): conv4x4 (`model_0`), LeakyReLU(0.2),
  blur-downsample; for n = 1 .. n_layers-1: conv4x4 (width ndf * min(2^n, 8)),
  IN, LeakyReLU, blur-downsample; conv4x4 (ndf * min(2^n_layers, 8)), IN,
  LeakyReLU; conv4x4 -> 1. Every conv has a bias, stride 1 and zero padding 1.
  A 256 x 256 image gives a 30 x 30 logit map.

  Without `antialias` (official `--no_antialias`, the CycleGAN / pix2pix
  PatchGAN) the first n_layers convs have stride 2 and no blur layer follows
  (`model_0`, `model_2`, `model_5`, ... for the official indices); a 256 x 256
  image gives the same 30 x 30 map.

  Attributes:
    ndf: width of the first conv (official `--ndf`).
    n_layers: 3 for the official `--netD basic`.
    dtype: compute dtype.
    antialias: blur down-sampling (official `not --no_antialias`).
    kernel_init: initializer of every conv kernel (biases start at 0).
  """
  ndf: int = 64
  n_layers: int = 3
  dtype: Any = jnp.float32
  antialias: bool = True
  kernel_init: Callable = xavier_normal_gain_002

  def _conv(self, features: int, index: int, x: jax.Array, stride: int = 1) -> jax.Array:
    return nn.Conv(features, (4, 4), strides=stride, padding=((1, 1), (1, 1)),
                   dtype=self.dtype, kernel_init=self.kernel_init, name=f"model_{index}")(x)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    # A halving stage is the official entries conv, (IN,) LeakyReLU, Downsample
    # when antialiased, else a stride-2 conv, (IN,) LeakyReLU.
    if self.antialias:
      stride, blur, stage_entries = 1, blur_downsample, 4
    else:
      stride, blur, stage_entries = 2, lambda v: v, 3
    x = blur(nn.leaky_relu(self._conv(self.ndf, 0, images.astype(self.dtype), stride), 0.2))
    index = stage_entries - 1
    for n in range(1, self.n_layers):
      x = self._conv(self.ndf * min(2**n, 8), index, x, stride)
      x = blur(nn.leaky_relu(layers.instance_norm(x), 0.2))
      index += stage_entries
    x = nn.leaky_relu(
        layers.instance_norm(self._conv(self.ndf * min(2**self.n_layers, 8), index, x)), 0.2)
    return self._conv(1, index + 3, x)


class CUTModules(NamedTuple):
  """The three networks of CUT, built from `config.model`."""
  generator: ResnetGenerator
  patch_sampler: PatchSampleF
  discriminator: NLayerDiscriminator
  nce_layers: tuple[int, ...]


def build_modules(model_config: ml_collections.ConfigDict, dtype: Any = jnp.float32) -> CUTModules:
  """G, F and D for `config.model` (configs/cut.py) in compute dtype `dtype`."""
  return CUTModules(
      generator=ResnetGenerator(model_config.ngf, model_config.n_blocks,
                                model_config.output_nc, dtype),
      patch_sampler=PatchSampleF(model_config.netF_nc, dtype),
      discriminator=NLayerDiscriminator(model_config.ndf, model_config.n_layers_D, dtype),
      nce_layers=tuple(model_config.nce_layers))


def init_params(modules: CUTModules, rng: jax.Array, image_shape: tuple[int, int, int]
                ) -> dict[str, Any]:
  """{"generator", "patch_sampler", "discriminator"}: each network's "params".

  Args:
    modules: from `build_modules`.
    rng: a JAX key.
    image_shape: (H, W, C_in) of the training crops; the patch sampler's MLP
      input widths follow the generator's features on such an image, as the
      official netF is created from the first batch.
  """
  g_rng, f_rng, d_rng = jax.random.split(rng, 3)
  images = jnp.zeros((1, *image_shape), jnp.float32)
  g_params = modules.generator.init(g_rng, images)["params"]
  features = modules.generator.apply({"params": g_params}, images, modules.nce_layers,
                                     encode_only=True)
  ids = [jnp.zeros((1,), jnp.int32)] * len(features)
  return {"generator": g_params,
          "patch_sampler": modules.patch_sampler.init(f_rng, features, ids)["params"],
          "discriminator": modules.discriminator.init(d_rng, images)["params"]}
