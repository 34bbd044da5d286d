"""The Flax modules: shapes, init schemes and fixed buffers (the fixture checks the maths)."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax.configs import tiny
from i2i_jax.models import generator, lsh, vgg, vsait


@pytest.fixture(scope="module")
def modules():
  return vsait.build_modules(tiny.get_config().model)


@pytest.fixture(scope="module")
def variables(modules):
  return vsait.init_variables(modules, jax.random.key(0), (32, 64))


def test_shapes_through_the_model(modules, variables):
  images = jax.random.uniform(jax.random.key(1), (2, 32, 64, 3), minval=-1, maxval=1)
  translated = modules.generator.apply(variables["generator"], images)
  assert translated.shape == images.shape and float(jnp.max(jnp.abs(translated))) < 1
  features = modules.vgg.apply(variables["vgg"], images)
  assert [f.shape for f in features] == [
      (2, 32, 64, 64), (2, 16, 32, 128), (2, 8, 16, 256), (2, 4, 8, 512), (2, 2, 4, 512)]
  hypervectors = modules.hypervectors(variables, images)
  assert hypervectors.shape == (2, 2, 4, 64)
  # Cosines between a concatenated patch and random rows of the same length n:
  # bounded by 1 and ~1/sqrt(n) in size.
  n = 16 * 16 * 64 + 8 * 8 * 128 + 4 * 4 * 256 + 2 * 2 * 512 + 512
  assert float(jnp.max(jnp.abs(hypervectors))) <= 1.0
  np.testing.assert_allclose(float(jnp.std(hypervectors)), 1 / np.sqrt(n), rtol=0.3)
  assert modules.discriminator.apply(variables["discriminator"], hypervectors).shape == (2, 2, 4, 1)


def test_vgg_nodes_are_post_relu_except_the_last(modules, variables):
  images = jax.random.uniform(jax.random.key(1), (1, 32, 32, 3), minval=-1, maxval=1)
  features = modules.vgg.apply(variables["vgg"], images)
  assert all(float(f.min()) >= 0 for f in features[:-1])
  assert float(features[-1].min()) < 0


@pytest.mark.parametrize("bias_std", [0.0, 0.05])
def test_random_vgg_biases_let_hypervectors_see_contrast(bias_std):
  # Zero biases (torchvision's init): VGG(a x) = a VGG(x), so the cosine
  # hypervectors of a contrast-stretched image are the same; random biases
  # break the symmetry (the demo relies on it).
  config = tiny.get_config().model
  config.vgg_random_bias_std = bias_std
  modules = vsait.build_modules(config)
  variables = vsait.init_variables(modules, jax.random.key(0), (32, 32))
  biases = [layer["bias"] for layer in variables["vgg"]["params"].values()]
  np.testing.assert_allclose(np.std(np.concatenate(biases)), bias_std, rtol=0.1)
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-0.6, maxval=0.6)
  plain = modules.hypervectors(variables, images)
  stretched = modules.hypervectors(variables, 1.5 * images)
  cosine = jnp.sum(plain * stretched, -1) / (
      jnp.linalg.norm(plain, axis=-1) * jnp.linalg.norm(stretched, axis=-1))
  if bias_std:
    assert float(jnp.min(cosine)) < 0.999
  else:
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)


def test_init_matches_the_reference_schemes(variables):
  g = variables["generator"]["params"]
  kernel = g["encoder_res_0"]["conv_1"]["kernel"]  # 3x3, 32 -> 32
  fan = 9 * 32
  np.testing.assert_allclose(np.std(kernel), 0.2 * np.sqrt(2 / (fan + fan)), rtol=0.1)
  assert all(np.all(leaf == 0) for path, leaf in jax.tree_util.tree_leaves_with_path(g)
             if path[-1].key == "bias")
  map_out = variables["map_net"]["params"]["conv_1"]
  assert np.all(map_out["kernel"] == 0) and np.all(map_out["bias"] == 1)
  map_in = variables["map_net"]["params"]["conv_0"]["kernel"]  # U(-1/8, 1/8), fan_in 64
  assert 0.1 < float(np.max(np.abs(map_in))) <= 1 / 8
  d = variables["discriminator"]["params"]["conv_0"]["kernel"]  # 64 -> 32
  np.testing.assert_allclose(np.std(d), 0.2 * np.sqrt(2 / (64 + 32)), rtol=0.15)


def test_map_network_starts_as_tanh_one(modules, variables):
  hv = jax.random.normal(jax.random.key(2), (1, 2, 2, 64))
  np.testing.assert_allclose(modules.map_net.apply(variables["map_net"], hv), np.tanh(1.0),
                             rtol=1e-6)


def test_fixed_buffers(variables):
  blur = variables["generator"]["constants"]["encoder_blur_0"]["kernel"]
  assert blur.shape == (3, 3, 1, 16)
  np.testing.assert_allclose(np.sum(blur[:, :, 0, 0]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(np.sum(generator.gaussian_kernel(4, 4.0)), 4.0, rtol=1e-6)
  lsh_constants = variables["lsh"]["constants"]
  for i, k in enumerate((16, 8, 4, 2, 1)):
    weight = lsh_constants[f"weight_{i}"]
    assert weight.shape[:2] == (k, k) and weight.shape[3] == 64
    np.testing.assert_allclose(lsh_constants[f"ssq_weight_{i}"],
                               np.sum(np.square(weight), axis=(0, 1, 2)), rtol=1e-5)


def test_projection_as_matmul_equals_the_strided_conv():
  features = jax.random.normal(jax.random.key(0), (2, 36, 20, 5))
  weight = jax.random.normal(jax.random.key(1), (4, 4, 5, 7))
  # kernel == stride takes the reshaped-matmul path, kernel != stride the conv.
  matmul = lsh._project_patches(features, weight, 4, 4, jnp.float32)  # pylint: disable=protected-access
  conv = jax.lax.conv_general_dilated(features, weight, (4, 4), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(matmul, conv, rtol=1e-5, atol=1e-5)
  overlapping = lsh._project_patches(features, weight, 4, 2, jnp.float32)  # pylint: disable=protected-access
  assert overlapping.shape == (2, 17, 9, 7)


def test_generator_rejects_sizes_it_cannot_reproduce(modules, variables):
  with pytest.raises(ValueError, match=r"multiples of 4.*\(1, 30, 32, 3\)"):
    modules.generator.apply(variables["generator"], jnp.zeros((1, 30, 32, 3)))


def test_bfloat16_compute_keeps_float32_parameters():
  config = tiny.get_config()
  modules = vsait.build_modules(config.model, jnp.bfloat16)
  variables = vsait.init_variables(modules, jax.random.key(0), (32, 32))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  images = jnp.zeros((1, 32, 32, 3))
  assert modules.generator.apply(variables["generator"], images).dtype == jnp.bfloat16
  assert modules.hypervectors(variables, images).dtype == jnp.float32


