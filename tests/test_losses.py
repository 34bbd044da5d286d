"""The loss functions beyond what the reference fixture exercises (e.g. the hinge clamps)."""

import jax.numpy as jnp
import numpy as np

from i2i_jax import losses


def test_hinge_discriminator_loss_clamps_confident_predictions():
  confident_fake = jnp.full((2, 4, 4, 1), -3.0)  # relu(1 + -3) = 0
  confident_real = jnp.full((2, 4, 4, 1), 5.0)   # relu(1 - 5) = 0
  assert float(losses.hinge_discriminator_loss([confident_fake], [confident_real])) == 0.0
  wrong_fake = jnp.full((2, 4, 4, 1), 2.0)
  # Terms are averaged with equal weights: (3 + 0) / 2.
  assert float(losses.hinge_discriminator_loss([wrong_fake], [confident_real])) == 1.5


def test_hinge_discriminator_loss_weights_three_terms_equally():
  fake_a, fake_b, real = (jnp.full((1, 2, 2, 1), v) for v in (0.5, -0.5, 0.25))
  expected = (1.5 + 0.5 + 0.75) / 3
  np.testing.assert_allclose(
      losses.hinge_discriminator_loss([fake_a, fake_b], [real]), expected, rtol=1e-6)


def test_hinge_generator_loss_is_not_clamped():
  logits = [jnp.full((1, 2, 2, 1), 7.0), jnp.full((1, 2, 2, 1), -1.0)]
  np.testing.assert_allclose(losses.hinge_generator_loss(logits), (-7.0 + 1.0) / 2)


def test_vsa_loss_is_zero_for_aligned_and_two_for_opposite_vectors():
  x = jnp.arange(1.0, 9.0).reshape(1, 1, 2, 4)
  np.testing.assert_allclose(losses.vsa_loss(3.0 * x, x), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.vsa_loss(-x, x), 2.0, atol=1e-6)
