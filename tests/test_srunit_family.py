"""SRUNIT trains, checkpoints, resumes and translates through the shared code.

In process on the 8 fake devices of tests/conftest.py: configs/srunit_tiny.py
(robustness loss off in epoch 1, steps 0-1, on from step 2) through
`train.train_and_evaluate`; 4 straight steps equal 2 + resume + 2 bit for bit
(every draw comes from the state's key), G and F stay frozen while the loss is
off (the official step), and `checkpoint.load_generator` + `Translator`
translate with the trained generator.
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from i2i_jax import checkpoint
from i2i_jax import families
from i2i_jax import losses_srunit
from i2i_jax import metric_writer
from i2i_jax import train
from i2i_jax import translator as translator_lib
from i2i_jax.configs import srunit_tiny
from i2i_jax.families import srunit as srunit_family
from i2i_jax.models import cut


def _config(total_steps):
  """srunit_tiny on 8 images, one robustness layer (quicker to compile; several:
  test_a_traced_choice_among_every_layer_is_that_layer_alone)."""
  config = srunit_tiny.get_config()
  config.loss.reg_layers = (1,)
  config.total_steps = total_steps
  config.data.batch_size = 8
  return config


def test_srunit_trains_resumes_bit_exactly_and_translates_through_the_checkpoint(tmp_path):
  straight = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "straight"))
  train.train_and_evaluate(_config(total_steps=2), str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "resumed"))

  assert int(straight.step) == int(resumed.step) == 4
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path)),
      jax.device_get(resumed), jax.device_get(straight))
  records = metric_writer.read_metrics(tmp_path / "straight" / metric_writer.METRICS_FILE)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert [r["g_reg"] > 0 for r in records] == [False, False, True, True]

  loaded = checkpoint.load_generator(tmp_path / "resumed")
  assert loaded.step == 4 and isinstance(loaded.module, cut.ResnetGenerator)
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)
  translated = translator_lib.Translator(loaded, batch_size=8, bucket_multiple=16).translate(
      images)
  fns = srunit_family.make_step_functions(_config(total_steps=4))
  expected = srunit_family.translate(jax.device_get(straight.variables), images / 127.5 - 1.0,
                                     fns)
  expected = np.clip(np.round((np.asarray(expected) + 1) * 127.5), 0, 255)
  assert np.abs(translated.astype(int) - expected).max() <= 1


def _step_twice(config):
  """Two steps of `srunit_family.train_step` from one fresh state: (initial, after 1, after 2)."""
  fns = srunit_family.make_step_functions(config)
  state = jax.jit(srunit_family.init_state, static_argnums=0)(fns, jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {name: rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
           for name in ("source", "target")}
  step = jax.jit(srunit_family.train_step, static_argnums=2)
  first, _ = step(state, batch, fns)
  second, metrics = step(first, batch, fns)
  return state, first, second, metrics


@pytest.mark.parametrize("freeze", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_generator_and_netf_are_frozen_while_inactive_only_when_asked(freeze):
  """Official: while the loss is off, only D steps; `freeze_generator_while_inactive=False`: CUT's step."""
  config = srunit_tiny.get_config()
  config.loss.inact_epochs = 2  # steps_per_epoch 2: steps 0 and 1 are epoch 1 and off, step 2 on
  config.loss.reg_layers = (1,)
  config.loss.freeze_generator_while_inactive = freeze
  initial, first, _, metrics = _step_twice(config)
  assert float(metrics["g_reg"]) == 0.0
  for name in ("generator", "patch_sampler"):
    same = jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)),
                                        initial.variables[name], first.variables[name]))
    assert all(same) == freeze, name
  assert not np.array_equal(initial.variables["discriminator"]["params"]["model_0"]["kernel"],
                            first.variables["discriminator"]["params"]["model_0"]["kernel"])


def test_srunit_is_registered_and_refuses_settings_it_cannot_run():
  config = srunit_tiny.get_config()
  assert families.get(config) is srunit_family
  config.loss.reg_layers = (0, 5)
  with pytest.raises(ValueError, match=r"^config\.loss\.reg_layers=\(0, 5\): .*\(5 layers\)"):
    srunit_family.make_step_functions(config)
  config = srunit_tiny.get_config()
  config.model.n_blocks = 2  # NCE layer 16 is then an instance norm followed by a ReLU
  with pytest.raises(ValueError, match=r"^config\.model\.nce_layers=.*\[16\] are followed"):
    srunit_family.make_step_functions(config)
  config = srunit_tiny.get_config()
  config.loss.reg_type = "v3"
  with pytest.raises(ValueError, match=r"^config\.loss\.reg_type='v3'"):
    srunit_family.make_step_functions(config)
  config = srunit_tiny.get_config()
  config.loss.reg_variant = "papers"
  with pytest.raises(ValueError, match=r"^config\.loss\.reg_variant='papers'"):
    srunit_family.make_step_functions(config)


@pytest.mark.parametrize("reg_type", [pytest.param("v1", marks=pytest.mark.slow), "v2"])
def test_netf_gets_the_robustness_gradient_with_v2_only(reg_type):
  """`--reg_type v1`: the robustness term trains G only; v2 (default): G and F."""
  config = srunit_tiny.get_config()
  config.loss.reg_type = reg_type
  fns = srunit_family.make_step_functions(config)
  params = cut.init_params(fns.modules, jax.random.key(0), (32, 32, 3))
  real_a = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
  shape = losses_srunit.robustness_feature_shape(fns.modules, real_a.shape, 1)
  perturbation = losses_srunit.draw_perturbation(jax.random.key(1), shape, fns.num_patches,
                                                 config.loss.reg_noise)
  g_grads, f_grads = jax.grad(
      lambda g, f: losses_srunit.robustness_loss(g, f, real_a, {1: perturbation}, 1, fns.modules,
                                                 fns.loss_config)[0], argnums=(0, 1))(
          params["generator"], params["patch_sampler"])
  assert any(np.any(g != 0) for g in jax.tree.leaves(g_grads))
  assert any(np.any(f != 0) for f in jax.tree.leaves(f_grads)) == (reg_type == "v2")


@pytest.mark.parametrize("variant", ["official", pytest.param("paper", marks=pytest.mark.slow)])
def test_a_traced_choice_among_every_layer_is_that_layer_alone(variant):
  """The step's one pass over all candidate layers, the drawn one traced, gives
  the loss and gradients of the drawn layer perturbed alone (float64)."""
  config = srunit_tiny.get_config()
  config.loss.reg_variant = variant
  loss_config = ml_collections.FrozenConfigDict(config.loss)
  real_a = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3))
  with jax.enable_x64(True):
    modules = losses_srunit.build_modules(config.model, jnp.float64)
    params = jax.tree.map(lambda p: p.astype(jnp.float64),
                          cut.init_params(modules, jax.random.key(0), (32, 32, 3)))
    perturbations = {
        i: losses_srunit.draw_perturbation(
            jax.random.key(1), losses_srunit.robustness_feature_shape(modules, real_a.shape, i),
            16, config.loss.reg_noise, variant)
        for i in range(len(config.model.nce_layers))}

    @jax.jit
    def loss_and_grads(perturbations, choice):
      return jax.value_and_grad(
          lambda g, f: losses_srunit.robustness_loss(g, f, real_a, perturbations, choice,
                                                     modules, loss_config)[0],
          argnums=(0, 1))(params["generator"], params["patch_sampler"])

    for choice in (0, 3):
      every = loss_and_grads(perturbations, jnp.int32(choice))
      alone = loss_and_grads({choice: perturbations[choice]}, jnp.int32(choice))
      # Gradients on one scale: biases before an instance norm get rounding noise
      # alone. The paper's numerator is a difference of two round trips as
      # close as the perturbation (down to 1e-7), which lifts rounding to ~1e-8.
      every_flat, alone_flat = (np.asarray(jax.flatten_util.ravel_pytree(x)[0])
                                for x in (every, alone))
      np.testing.assert_allclose(every_flat, alone_flat,
                                 rtol=1e-9 if variant == "official" else 1e-6,
                                 atol=1e-12 * np.abs(alone_flat).max())
      assert np.any(np.asarray(every[1][1][f"mlp_{choice}_0"]["kernel"]) != 0)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_perturbation_norm_is_reg_noise_officially_and_the_drawn_magnitude_in_the_paper(variant):
  """`loss.reg_variant="paper"`: each position's offset has its loss divisor as norm."""
  reg_noise = 0.001
  perturbation = losses_srunit.draw_perturbation(jax.random.key(0), (2, 8, 8, 16), 16, reg_noise,
                                                 variant)
  norms = np.linalg.norm(np.asarray(perturbation["offset"]), axis=-1)
  magnitude = np.asarray(perturbation["magnitude"])[..., 0]
  assert np.all((magnitude >= 1e-7) & (magnitude <= reg_noise)) and np.std(magnitude) > 1e-4
  np.testing.assert_allclose(norms, magnitude if variant == "paper" else reg_noise, rtol=1e-5)


def test_paper_robustness_loss_measures_the_perturbation_not_the_round_trip():
  """Officially the numerator is ~the gap between f and its round trip T(f); the paper's is not.

  Same draws, float64: without the perturbation the paper's numerator is 0
  (two identical round trips: the loss is its 1e-6 distance floor), the
  official one hardly changes, and it is far larger than the paper's.
  """
  config = srunit_tiny.get_config()
  real_a = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3))
  losses = {}
  with jax.enable_x64(True):
    modules = losses_srunit.build_modules(config.model, jnp.float64)
    params = cut.init_params(modules, jax.random.key(0), (32, 32, 3))
    shape = losses_srunit.robustness_feature_shape(modules, real_a.shape, 1)
    for variant in ("official", "paper"):
      config.loss.reg_variant = variant
      perturbation = losses_srunit.draw_perturbation(jax.random.key(1), shape, 16,
                                                     config.loss.reg_noise, variant)
      for scale in (1.0, 0.0):
        scaled = {**perturbation, "offset": perturbation["offset"] * scale}
        losses[variant, scale] = float(losses_srunit.robustness_loss(
            params["generator"], params["patch_sampler"], real_a, {1: scaled}, 1, modules,
            ml_collections.FrozenConfigDict(config.loss))[0])
  magnitude = np.asarray(perturbation["magnitude"]).reshape(-1)[np.asarray(
      perturbation["patch_ids"])].astype(np.float64)
  floor = np.mean(1e-6 / magnitude) / len(config.model.nce_layers)
  np.testing.assert_allclose(losses["paper", 0.0], floor, rtol=1e-6)
  assert losses["paper", 1.0] > 1.5 * floor
  assert abs(losses["official", 0.0] / losses["official", 1.0] - 1) < 0.1
  assert losses["official", 1.0] > 10 * losses["paper", 1.0]
