"""The FID Inception-v3 in Flax, its weights, and a batched feature extractor.

The network is the "FID Inception" of TTUR / pytorch-fid / torch-fidelity: the
TensorFlow graph `pt_inception-2015-12-05` with its quirks kept ((x - 128) / 128
input scaling, average pools that do not count padding, a max pool in the last
block, batch norm epsilon 1e-3). Module names mirror torch-fidelity's state-dict
names so the weight conversion is mechanical. Images reach 299x299 by one of
clean-fid's resize modes (`RESIZE_MODES`, `resize_for_inception`).
"""

from collections.abc import Sequence
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from i2i_jax.models import pretrained
from i2i_jax.models import torch_layout

FID_WEIGHTS = pretrained.WeightsFile(
    description="the FID Inception weights",
    url=("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
         "weights-inception-2015-12-05-6726825d.pth"),
    filename="pt_inception-2015-12-05-6726825d.pth",
    sha256_prefix="6726825d",
    offline_hint="Or pass its path with --inception_weights. Without it, use "
                 "--fd_network=inception_random_init (a Frechet distance that is not the "
                 "standard FID).")
# The arrays of the weights file that the pool features use (all but the classifier).
_POOL_ARRAYS_TAG = "pool3"

INPUT_SIZE = 299
FEATURE_DIM = 2048

# clean-fid's names for the ways images reach 299x299; FID numbers are only
# comparable between runs that used the same one.
RESIZE_MODES = {
    "legacy_tensorflow": (
        "TensorFlow 1 bilinear resize without half-pixel centres or antialiasing, as in the "
        "original TF FID (TTUR), torch-fidelity and clean-fid's mode='legacy_tensorflow'"),
    "clean": ("PIL bicubic resize (antialiased) of the uint8 image in float32, as in clean-fid's "
              "default mode='clean'"),
}
# torch-fidelity and the TF original (behind most published FIDs) use it, and it
# is what this project has always computed; "clean" is opt-in (see
# `resize_for_inception`).
DEFAULT_RESIZE_MODE = "legacy_tensorflow"


def resize_bilinear_tf1(images: jax.Array, size: int) -> jax.Array:
  """TensorFlow 1.x `resize_bilinear(align_corners=False)`, as the FID graph does.

  Source coordinates are `dst * in / out` (no half-pixel offset), which is what
  makes FID numbers comparable with the TensorFlow original.

  Args:
    images: [B, H, W, C] float32.
    size: output height and width.

  Returns:
    [B, size, size, C] float32.
  """
  def axis_weights(in_size):
    coords = jnp.arange(size, dtype=jnp.float32) * jnp.float32(in_size / size)
    low = coords.astype(jnp.int32)
    high = jnp.minimum(low + 1, in_size - 1)
    return low, high, coords - low.astype(jnp.float32)

  y_low, y_high, dy = axis_weights(images.shape[1])
  x_low, x_high, dx = axis_weights(images.shape[2])
  top = images[:, y_low]
  bottom = images[:, y_high]
  dx = dx[None, None, :, None]
  top = top[:, :, x_low] + (top[:, :, x_high] - top[:, :, x_low]) * dx
  bottom = bottom[:, :, x_low] + (bottom[:, :, x_high] - bottom[:, :, x_low]) * dx
  return top + (bottom - top) * dy[None, :, None, None]


def check_resize_mode(mode: str) -> None:
  """Raises ValueError naming `mode` and the choices unless it is in `RESIZE_MODES`."""
  if mode not in RESIZE_MODES:
    raise ValueError(f"FID resize mode {mode!r}: expected one of {', '.join(RESIZE_MODES)}.")


def resize_for_inception(images: jax.Array, mode: str = DEFAULT_RESIZE_MODE) -> jax.Array:
  """RGB images resized to the Inception's 299x299 input as clean-fid's `mode` does.

  "legacy_tensorflow" (the default): TF1 `resize_bilinear(align_corners=False,
    half_pixel_centers=False)`, source pixel `dst * in / out`, no antialiasing;
    the FID graph of TTUR does it, and so do torch-fidelity (bit for bit on
    CPU, as this is) and clean-fid's "legacy_tensorflow" mode (inside NVIDIA's
    TorchScript Inception, as a grid sample in float32 normalised coordinates:
    within 0.05 grey levels). Published FIDs mostly come from these, and the
    default keeps this project's numbers unchanged and equal to torch-fidelity's.
  "clean": clean-fid's default, `make_resizer("PIL", False, "bicubic", (299, 299))`:
    each channel as a float32 PIL image, bicubic (a = -0.5) with the kernel
    widened by the downscale factor (antialiasing), width pass then height
    pass, clipped to [0, 255]. clean-fid recommends it because the legacy
    resize aliases when it downsamples. (`jax.image.resize(method="bicubic")`
    has the same kernel but computes its weights in float32, which is up to
    0.01 grey levels off PIL; `_pil_bicubic_weights` computes them in float64
    as PIL does.)

  (pytorch-fid is neither: it uses PyTorch's half-pixel bilinear,
  `F.interpolate(align_corners=False)`, clean-fid's "legacy_pytorch".)

  Args:
    images: [B, H, W, 3] uint8, or float32 in [0, 255].
    mode: a key of `RESIZE_MODES`.

  Returns:
    [B, 299, 299, 3] float32 in [0, 255].
  """
  check_resize_mode(mode)
  images = images.astype(jnp.float32)
  if mode == "legacy_tensorflow":
    return resize_bilinear_tf1(images, INPUT_SIZE)
  # One matmul per axis with dense [299, in] weights, width first as in Pillow.
  width_weights = jnp.asarray(_pil_bicubic_weights(images.shape[2], INPUT_SIZE), jnp.float32)
  height_weights = jnp.asarray(_pil_bicubic_weights(images.shape[1], INPUT_SIZE), jnp.float32)
  highest = jax.lax.Precision.HIGHEST  # Not TF32/bf16 passes on accelerators.
  resized = jnp.einsum("bhwc,ow->bhoc", images, width_weights, precision=highest)
  resized = jnp.einsum("bhwc,oh->bowc", resized, height_weights, precision=highest)
  return jnp.clip(resized, 0.0, 255.0)


def _pil_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] float64 weights of Pillow's bicubic `Image.resize` along one axis.

  Pillow's `precompute_coeffs`: output pixel o is centred on source coordinate
  (o + 0.5) * in / out; the Keys cubic (a = -0.5) is stretched by the downscale
  factor (antialiasing) and each row is normalised over the source pixels that
  exist, which is also how the borders are handled.
  """
  scale = in_size / out_size
  filter_scale = max(scale, 1.0)
  centres = (np.arange(out_size) + 0.5) * scale
  x = np.abs((np.arange(in_size)[None, :] - centres[:, None] + 0.5) * (1.0 / filter_scale))
  a = -0.5
  weights = np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                     np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))
  return weights / weights.sum(axis=1, keepdims=True)


class BasicConv2d(nn.Module):
  """Conv (no bias) -> batch norm (eps 1e-3, inference) -> ReLU."""
  features: int
  kernel_size: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    pad_h, pad_w = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((pad_h, pad_h), (pad_w, pad_w)), use_bias=False,
                precision=jax.lax.Precision.HIGHEST,
                # He init keeps activations O(1) through the 94 ReLU layers when the
                # weights are random (offline runs); trained weights replace it.
                kernel_init=nn.initializers.he_normal(), name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x):
  # TensorFlow's average pool does not count the zero padding.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv2d(64, name="branch1x1")(x)
    branch5x5 = BasicConv2d(48, name="branch5x5_1")(x)
    branch5x5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
    branch3x3dbl = BasicConv2d(64, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
    branch3x3dbl = BasicConv2d(64, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    branch1x1 = BasicConv2d(192, name="branch1x1")(x)
    branch7x7 = BasicConv2d(c7, name="branch7x7_1")(x)
    branch7x7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = BasicConv2d(c7, name="branch7x7dbl_1")(x)
    branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = BasicConv2d(192, name="branch_pool")(_avg_pool_3x3_same(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv2d(192, name="branch3x3_1")(x)
    branch3x3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = BasicConv2d(192, name="branch7x7x3_1")(x)
    branch7x7x3 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (average branch pool) and Mixed_7c (max branch pool, a TF quirk)."""
  max_pool_branch: bool

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv2d(320, name="branch1x1")(x)
    branch3x3 = BasicConv2d(384, name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3),
    ], axis=-1)
    branch3x3dbl = BasicConv2d(448, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl),
    ], axis=-1)
    if self.max_pool_branch:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_3x3_same(x)
    branch_pool = BasicConv2d(192, name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """Inception-v3 as used for FID, up to the 2048-d average-pooled features.

  Attributes:
    resize_mode: how images reach 299x299, a key of `RESIZE_MODES`.
  """
  resize_mode: str = DEFAULT_RESIZE_MODE

  @nn.compact
  def __call__(self, images):
    """Pool features of RGB images.

    Args:
      images: [B, H, W, 3] uint8 or float32 in [0, 255], any H and W.

    Returns:
      [B, 2048] float32.
    """
    x = resize_for_inception(images, self.resize_mode)
    x = (x - 128.0) / 128.0
    x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool_branch=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool_branch=True, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))


def fid_variable_shapes() -> dict:
  """{"params": ..., "batch_stats": ...} of `FIDInceptionV3` as `jax.ShapeDtypeStruct`s."""
  images = jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32)
  return jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), images)


def load_fid_variables(weights_path: str | pathlib.Path) -> dict:
  """Flax variables from torch-fidelity's FID Inception weights.

  Args:
    weights_path: its `.pth` (needs torch the first time: the arrays used are
      cached beside it as `<stem>-pool3.npz`) or a `.npz` of its arrays in
      torch-fidelity's names (`Mixed_5b.branch1x1.conv.weight`, ...).

  Returns:
    {"params": ..., "batch_stats": ...} nested dicts of float32 numpy arrays.

  Raises:
    torch_layout.ConversionError: naming each missing array or wrong shape.
  """
  shapes = fid_variable_shapes()
  names = torch_layout.fid_inception_names(shapes)
  state_dict = pretrained.cached_state_dict(
      pathlib.Path(weights_path), [torch_name for torch_name, _, _ in names], _POOL_ARRAYS_TAG)
  return torch_layout.convert_state_dict(state_dict, names, shapes)


def random_fid_variables(seed: int = 0) -> dict:
  """Seeded random weights of the FID Inception (for offline runs and tests)."""
  init = jax.jit(FIDInceptionV3().init)
  return jax.device_get(init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 3), jnp.float32)))


class InceptionFeatures:
  """Batched, jitted 2048-d FID Inception features of uint8 images.

  `name` labels the distance computed from these features: "FID" only for the
  standard weights, "FD_inception_random_init" for seeded random weights, so
  nobody mistakes one for the other. `resize_mode` (a key of `RESIZE_MODES`)
  says how the images reached 299x299; reports should carry it, since FIDs of
  different modes are not comparable.
  """

  def __init__(self, variables: dict, name: str, batch_size: int = 32,
               resize_mode: str = DEFAULT_RESIZE_MODE):
    """Raises ValueError naming `resize_mode` when it is not a key of `RESIZE_MODES`."""
    check_resize_mode(resize_mode)
    self.variables = jax.device_put(variables)
    self.name = name
    self.batch_size = batch_size
    self.resize_mode = resize_mode
    self._apply = jax.jit(FIDInceptionV3(resize_mode=resize_mode).apply)

  @classmethod
  def pretrained(cls, weights_path: str | None = None, batch_size: int = 32,
                 resize_mode: str = DEFAULT_RESIZE_MODE):
    """Standard FID weights (downloaded and cached when `weights_path` is None)."""
    check_resize_mode(resize_mode)  # Before a download.
    variables = load_fid_variables(weights_path or pretrained.fetch(FID_WEIGHTS))
    return cls(variables, "FID", batch_size, resize_mode)

  @classmethod
  def random_init(cls, seed: int = 0, batch_size: int = 32,
                  resize_mode: str = DEFAULT_RESIZE_MODE):
    return cls(random_fid_variables(seed), "FD_inception_random_init", batch_size, resize_mode)

  def __call__(self, images: Sequence[np.ndarray], progress: str = "") -> np.ndarray:
    """Features of a sequence of images.

    Args:
      images: a sequence (list, array, random-access source) of [H, W, 3] uint8
        images; images in one batch must share H and W.
      progress: the title of a tqdm bar over the images (ETA); "" shows none.

    Returns:
      [N, 2048] float32 numpy array.
    """
    features = []
    batch_size = min(self.batch_size, len(images))
    with tqdm.tqdm(total=len(images), desc=progress, unit="img", disable=not progress,
                   dynamic_ncols=True, leave=False) as bar:
      for start in range(0, len(images), batch_size):
        batch = [np.asarray(images[i]) for i in range(start, min(start + batch_size, len(images)))]
        shapes = {image.shape for image in batch}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[-1] != 3:
          raise ValueError(
              f"Images {start}..{start + len(batch) - 1} must all be [H, W, 3] of one size; "
              f"found shapes {sorted(shapes)}.")
        # Pad the last batch to a full one so the jitted function compiles once.
        stacked = np.stack(batch + [batch[-1]] * (batch_size - len(batch)))
        features.append(np.asarray(self._apply(self.variables, stacked))[:len(batch)])
        bar.update(len(batch))
    return np.concatenate(features) if features else np.zeros((0, FEATURE_DIM), np.float32)
