"""The FID Inception's resize modes against clean-fid, TensorFlow 1's formula and PyTorch."""

import jax
import numpy as np
import pytest

from i2i_jax.metrics import inception

torch = pytest.importorskip("torch")
# clean-fid's resize module needs torch, numpy and PIL only (its package also
# wants torchvision, which `pip install --no-deps clean-fid` leaves out).
clean_fid_resize = pytest.importorskip(
    "cleanfid.resize", reason="clean-fid is not installed (pip install --no-deps clean-fid)")

SIZES = [(64, 128), (256, 512), (300, 300), (299, 299), (1052, 1914)]


def _random_image(height, width, seed=0):
  return np.random.RandomState(seed).randint(0, 256, size=(height, width, 3), dtype=np.uint8)


def _ours(image, mode):
  return np.asarray(inception.resize_for_inception(image[None], mode))[0]


@pytest.mark.parametrize("height,width", SIZES)
def test_clean_mode_matches_clean_fid(height, width):
  image = _random_image(height, width)
  expected = clean_fid_resize.build_resizer("clean")(image)  # Pillow, float64 sums.
  ours = _ours(image, "clean")
  assert ours.shape == expected.shape == (299, 299, 3) and ours.dtype == np.float32
  # Float32 weights and sums: measured at most 6.2e-5 (4 ulp at 255).
  np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-4)
  if (height, width) == (299, 299):
    np.testing.assert_array_equal(ours, image)


def _tf1_resize_bilinear(image, size):
  """TensorFlow 1's `resize_bilinear(align_corners=False, half_pixel_centers=False)`.

  Written from TF's kernel (image_resizer_state.h, resize_bilinear_op.cc):
  float32 scale in / out, source `dst * scale`, neighbours floor and
  min(ceil, in - 1), and the lerps `top_left + (top_right - top_left) * dx` etc.
  """
  def axis(in_size):
    scale = np.float32(in_size) / np.float32(size)
    source = np.arange(size, dtype=np.float32) * scale
    low = np.floor(source).astype(np.int64)
    high = np.minimum(np.ceil(source).astype(np.int64), in_size - 1)
    return low, high, source - low.astype(np.float32)

  y_low, y_high, dy = axis(image.shape[0])
  x_low, x_high, dx = axis(image.shape[1])
  dx, dy = dx[None, :, None], dy[:, None, None]
  top_left, top_right = image[y_low][:, x_low], image[y_low][:, x_high]
  bottom_left, bottom_right = image[y_high][:, x_low], image[y_high][:, x_high]
  top = top_left + (top_right - top_left) * dx
  bottom = bottom_left + (bottom_right - bottom_left) * dx
  return top + (bottom - top) * dy


@pytest.mark.parametrize("height,width", SIZES)
def test_legacy_tensorflow_mode_is_tf1_bilinear_bit_for_bit(height, width):
  image = _random_image(height, width)
  np.testing.assert_array_equal(_ours(image, "legacy_tensorflow"),
                                _tf1_resize_bilinear(image.astype(np.float32), 299))


def _clean_fid_legacy_tensorflow_resize(image):
  """The resize inside NVIDIA's TorchScript `inception-2015-12-05.pt`.

  clean-fid's "legacy_tensorflow" mode hands the image unresized to that
  network (`build_resizer` returns the identity), whose forward shifts an
  identity affine grid by 1/in - 1/299 and bilinearly samples it with border
  padding: TF1's `dst * in / out` in normalised float32 coordinates.
  """
  height, width = image.shape[:2]
  theta = torch.eye(2, 3)
  theta[0, 2] += 1.0 / width - 1.0 / 299
  theta[1, 2] += 1.0 / height - 1.0 / 299
  grid = torch.nn.functional.affine_grid(theta[None], [1, 3, 299, 299], align_corners=False)
  pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
  resized = torch.nn.functional.grid_sample(pixels, grid, "bilinear", "border",
                                            align_corners=False)
  return resized[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("height,width", SIZES)
def test_legacy_tensorflow_mode_matches_clean_fid_torchscript_resize(height, width):
  image = _random_image(height, width)
  # The grid's float32 normalised coordinates are off TF1's source pixels by up
  # to ~1e-4 pixel: measured at most 0.046 grey levels (1052x1914). A half-pixel
  # offset would be tens of grey levels off on random images.
  np.testing.assert_allclose(_ours(image, "legacy_tensorflow"),
                             _clean_fid_legacy_tensorflow_resize(image), rtol=0, atol=0.1)


def test_legacy_tensorflow_mode_is_not_pytorch_fid_bilinear_except_at_299():
  """pytorch-fid resizes with `F.interpolate(bilinear, align_corners=False)`:
  half-pixel centres, `(dst + 0.5) * in / out - 0.5`. It agrees with TF1's
  `dst * in / out` only when in == out (both the identity)."""
  def pytorch_fid_resize(image):
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    resized = torch.nn.functional.interpolate(pixels, size=(299, 299), mode="bilinear",
                                              align_corners=False)
    return resized[0].permute(1, 2, 0).numpy()

  same_size = _random_image(299, 299)
  np.testing.assert_array_equal(_ours(same_size, "legacy_tensorflow"),
                                pytorch_fid_resize(same_size))
  smaller = _random_image(64, 128)
  assert np.abs(_ours(smaller, "legacy_tensorflow") - pytorch_fid_resize(smaller)).max() > 10


def _he_normal_variables():
  """Seeded FID Inception variables built on the host (no compiled init)."""
  rng = np.random.RandomState(0)

  def init(path, leaf):
    name = path[-1].key
    if name == "kernel":  # HWIO
      return rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

  return jax.tree_util.tree_map_with_path(init, inception.fid_variable_shapes())


def test_resize_mode_reaches_the_features():
  images = np.stack([_random_image(48, 64, seed) for seed in range(2)])
  variables = _he_normal_variables()
  clean = inception.InceptionFeatures(variables, "FD_test", batch_size=2, resize_mode="clean")
  legacy = inception.InceptionFeatures(variables, "FD_test", batch_size=2)
  assert (clean.resize_mode, legacy.resize_mode) == ("clean", inception.DEFAULT_RESIZE_MODE)
  # At 299x299 the legacy resize is the identity, so clean-fid's resized images
  # through it give the features "clean" should give (and the legacy resize of
  # the 48x64 images, 39 grey levels away on average, would not: 0.19 of the
  # largest feature, against 3e-7 measured here).
  resized = np.stack([clean_fid_resize.build_resizer("clean")(image) for image in images])
  clean_features = clean(images)
  np.testing.assert_allclose(clean_features, legacy(resized), rtol=1e-4,
                             atol=1e-4 * np.abs(clean_features).max())


def test_unknown_resize_mode_is_rejected_naming_the_choices():
  # Before the weights are looked for (or downloaded).
  with pytest.raises(ValueError, match=r"'bilinear'.*legacy_tensorflow, clean"):
    inception.InceptionFeatures.pretrained("/nonexistent/weights.pth", resize_mode="bilinear")
  with pytest.raises(ValueError, match=r"'legacy_pytorch'"):
    inception.resize_for_inception(np.zeros((1, 8, 8, 3), np.uint8), "legacy_pytorch")
