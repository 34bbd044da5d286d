"""FID/KID arithmetic and the FID Inception against torch-fidelity."""

import importlib
import os
import sys
import types

import jax
import numpy as np
import pytest

from i2i_jax.metrics import fid
from i2i_jax.metrics import inception
from i2i_jax.models import torch_layout

torch = pytest.importorskip("torch")


def _import_torch_fidelity_module(name):
  """Imports torch_fidelity.<name> without the package __init__.

  torch-fidelity's __init__ and utils import torchvision (for datasets and
  image loading), which this project does not install; the metric arithmetic and
  the Inception modules do not use it. The placeholder `utils` only carries the
  names that metric_fid/metric_kid import for their end-to-end entry points.
  """
  if "torch_fidelity" not in sys.modules:
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
      pytest.skip("torch-fidelity is not installed (pip install --no-deps torch-fidelity)")
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = package
  if "torch_fidelity.utils" not in sys.modules:
    utils = types.ModuleType("torch_fidelity.utils")
    for attr in ("get_cacheable_input_name", "cache_lookup_one_recompute_on_miss",
                 "extract_featuresdict_from_input_id_cached", "create_feature_extractor",
                 "resolve_feature_extractor", "resolve_feature_layer_for_metric"):
      setattr(utils, attr, None)
    sys.modules["torch_fidelity.utils"] = utils
  return importlib.import_module(f"torch_fidelity.{name}")


def _features(seed, n=120, dim=64, shift=0.0):
  rng = np.random.RandomState(seed)
  mixing = rng.randn(dim, dim) / np.sqrt(dim)
  return (rng.randn(n, dim) @ mixing + shift).astype(np.float32)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_fid_matches_torch_fidelity(shift):
  metric_fid = _import_torch_fidelity_module("metric_fid")
  real, fake = _features(0), _features(1, n=150, shift=shift)
  reference = metric_fid.fid_statistics_to_metric(
      metric_fid.fid_features_to_statistics(torch.from_numpy(real)),
      metric_fid.fid_features_to_statistics(torch.from_numpy(fake)), verbose=False)
  ours = fid.frechet_distance(real, fake)
  np.testing.assert_allclose(ours, reference[metric_fid.KEY_METRIC_FID], rtol=1e-3)
  assert ours > 0.0


def test_fid_is_zero_for_identical_sets_and_grows_with_shift():
  real = _features(0)
  assert abs(fid.frechet_distance(real, real)) < 1e-6
  assert fid.frechet_distance(real, real + 0.5) > fid.frechet_distance(real, real + 0.1)


def test_kid_matches_torch_fidelity():
  metric_kid = _import_torch_fidelity_module("metric_kid")
  real, fake = _features(2, n=100), _features(3, n=90, shift=0.2)
  reference = metric_kid.kid_features_to_metric(
      torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=20, kid_subset_size=50,
      rng_seed=2020, verbose=False)
  mean, std = fid.kernel_distance(real, fake, subsets=20, subset_size=50, seed=2020)
  np.testing.assert_allclose(mean, reference[metric_kid.KEY_METRIC_KID_MEAN], rtol=1e-3)
  np.testing.assert_allclose(std, reference[metric_kid.KEY_METRIC_KID_STD], rtol=1e-3)


@pytest.mark.parametrize("name,kid_name", [("FID", "KID"), ("FD_test", "KD_test")])
def test_evaluator_reports_kid_times_1000_beside_kid(name, kid_name):
  real, fake = _features(2, n=60), _features(3, n=50, shift=0.2)
  evaluator = fid.FidKidEvaluator(np.asarray, real, name, kid_subsets=10, kid_subset_size=40)
  metrics = evaluator.run(fake)
  mean, std = fid.kernel_distance(fake, real, subsets=10, subset_size=40)
  assert metrics[f"{kid_name}_mean"] == mean and metrics[f"{kid_name}_std"] == std > 0.0
  assert metrics[f"{kid_name}_mean_x1e3"] == 1e3 * mean
  assert metrics[f"{kid_name}_std_x1e3"] == 1e3 * std


def test_kid_rejects_subsets_larger_than_the_sets():
  with pytest.raises(ValueError, match="subset size 50"):
    fid.kernel_distance(_features(0, n=40), _features(1, n=60), subset_size=50)


def _random_torch_inception(module, tmp_path, monkeypatch):
  """torch-fidelity's FID Inception with seeded random weights, without a download.

  The constructor insists on loading a state dict; it gets an empty one and a
  no-op loader, so torch's own seeded initialisation stays. Batch-norm
  statistics and affine parameters are then randomised too, so the conversion
  of every field is exercised.
  """
  empty_path = tmp_path / "empty.pth"
  torch.save({}, empty_path)
  cls = module.FeatureExtractorInceptionV3
  torch.manual_seed(0)
  with monkeypatch.context() as patch:
    patch.setattr(cls, "load_state_dict", lambda self, state_dict: None)
    net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty_path))
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for submodule in net.modules():
      if isinstance(submodule, torch.nn.BatchNorm2d):
        shape = submodule.running_mean.shape
        submodule.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
        submodule.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
        submodule.weight.copy_(0.5 + torch.rand(shape, generator=generator))
        submodule.bias.copy_(0.1 * torch.randn(shape, generator=generator))
  return net


def test_flax_inception_matches_torch_fidelity(tmp_path, monkeypatch):
  module = _import_torch_fidelity_module("feature_extractor_inceptionv3")
  net = _random_torch_inception(module, tmp_path, monkeypatch)
  weights_path = tmp_path / "random_inception.pth"
  torch.save(net.state_dict(), weights_path)

  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, size=(2, 96, 128, 3), dtype=np.uint8)
  with torch.no_grad():
    (expected,) = net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
  expected = expected.numpy()
  extractor = inception.InceptionFeatures(
      inception.load_fid_variables(str(weights_path)), "FD_test", batch_size=2)
  ours = extractor(images)
  assert ours.shape == expected.shape == (2, inception.FEATURE_DIM)
  assert np.max(np.abs(ours - expected)) <= 1e-4 * np.max(np.abs(expected))
  # The arrays used were cached as .npz; loading it needs no torch and gives the same features.
  assert os.path.exists(tmp_path / "random_inception-pool3.npz")
  cached = inception.InceptionFeatures(
      inception.load_fid_variables(str(tmp_path / "random_inception-pool3.npz")), "FD_test",
      batch_size=2)
  np.testing.assert_array_equal(cached(images), ours)


def test_resize_matches_torch_fidelity_tf1_bilinear():
  compat = _import_torch_fidelity_module("interpolate_compat_tensorflow")
  images = np.random.RandomState(0).rand(2, 37, 53, 3).astype(np.float32) * 255
  expected = compat.interpolate_bilinear_2d_like_tensorflow1x(
      torch.from_numpy(images).permute(0, 3, 1, 2), size=(29, 29), align_corners=False)
  ours = np.asarray(inception.resize_bilinear_tf1(images, 29))
  np.testing.assert_allclose(ours, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("height,width", [(64, 128), (300, 300), (1052, 1914)])
def test_legacy_tensorflow_resize_to_299_is_torch_fidelitys_bit_for_bit(height, width):
  compat = _import_torch_fidelity_module("interpolate_compat_tensorflow")
  images = np.random.RandomState(0).randint(0, 256, size=(1, height, width, 3), dtype=np.uint8)
  expected = compat.interpolate_bilinear_2d_like_tensorflow1x(
      torch.from_numpy(images).permute(0, 3, 1, 2).float(), size=(299, 299), align_corners=False)
  ours = np.asarray(inception.resize_for_inception(images, "legacy_tensorflow"))
  np.testing.assert_array_equal(ours, expected.permute(0, 2, 3, 1).numpy())


def test_fid_weights_missing_an_array_are_rejected_naming_it(tmp_path):
  shapes = inception.fid_variable_shapes()
  names = torch_layout.fid_inception_names(shapes)
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
  state_dict = torch_layout.export_state_dict(zeros, names)
  assert state_dict["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)  # OIHW
  del state_dict["Mixed_7c.branch_pool.bn.running_var"]
  np.savez(tmp_path / "incomplete.npz", **state_dict)
  with pytest.raises(torch_layout.ConversionError,
                     match=r"missing parameter 'Mixed_7c\.branch_pool\.bn\.running_var'"):
    inception.load_fid_variables(tmp_path / "incomplete.npz")
