"""Properties of the hypervector operations (i2i_jax.vsa)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import vsa


def _random(key, shape):
  return jax.random.normal(key, shape) / np.sqrt(shape[-1])


def test_unbinding_a_bipolar_key_recovers_the_input_exactly():
  x = _random(jax.random.key(0), (4, 1024))
  key = jnp.sign(jax.random.normal(jax.random.key(1), (4, 1024)))
  np.testing.assert_allclose(vsa.unbind(vsa.bind(x, key), key), x, rtol=0, atol=1e-7)


def test_unbinding_a_map_network_key_recovers_the_input_within_tolerance():
  # The map network ends in tanh; near its saturated regime |key| ~ 1 and the
  # unbound vector points the same way as the input.
  x = _random(jax.random.key(0), (16, 4096))
  key = jnp.tanh(3.0 * jax.random.normal(jax.random.key(1), (16, 4096)))
  recovered = vsa.unbind(vsa.bind(x, key), key)
  assert jnp.min(vsa.similarity(recovered, x)) > 0.9
  # ... and binding alone hides it: the bound vector is dissimilar to the input.
  assert jnp.max(jnp.abs(vsa.similarity(vsa.bind(x, jnp.sign(key)), x))) < 0.1


@pytest.mark.parametrize("dim", [64, 1024, 16384])
def test_similarity_of_random_hypervectors_concentrates_near_zero(dim):
  a = _random(jax.random.key(0), (256, dim))
  b = _random(jax.random.key(1), (256, dim))
  sims = vsa.similarity(a, b)
  # Standard deviation of the cosine of independent Gaussian vectors is 1/sqrt(dim).
  assert abs(float(jnp.mean(sims))) < 4 / np.sqrt(256 * dim)
  assert float(jnp.std(sims)) == pytest.approx(1 / np.sqrt(dim), rel=0.2)


def test_bundling_preserves_similarity_to_each_member():
  members = _random(jax.random.key(0), (5, 4096))
  bundled = vsa.bundle(members, axis=0)
  to_members = vsa.similarity(bundled[None], members)
  outsider = _random(jax.random.key(1), (4096,))
  # Each of 5 near-orthogonal members keeps cosine ~1/sqrt(5) with the bundle.
  np.testing.assert_allclose(to_members, 1 / np.sqrt(5), atol=0.05)
  assert abs(float(vsa.similarity(bundled, outsider))) < 0.06


def test_similarity_matches_torch_cosine_similarity_eps_semantics():
  zeros = jnp.zeros((3, 8))
  assert jnp.all(vsa.similarity(zeros, jnp.ones((3, 8))) == 0.0)  # no NaN for a null vector
  a = jnp.array([[3.0, 4.0]])
  b = jnp.array([[4.0, 3.0]])
  np.testing.assert_allclose(vsa.similarity(a, b), [24 / 25], rtol=1e-6)


def test_ops_are_jittable_and_broadcast_over_leading_axes():
  x = _random(jax.random.key(0), (2, 3, 4, 64))
  key = jnp.tanh(_random(jax.random.key(1), (2, 3, 4, 64)))
  sims = jax.jit(lambda x, k: vsa.similarity(vsa.unbind(vsa.bind(x, k), k), x))(x, key)
  assert sims.shape == (2, 3, 4)
