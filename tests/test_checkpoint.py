"""Orbax checkpoints of a run: round trip, keep policies, loading the generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from i2i_jax import checkpoint
from i2i_jax import training
from i2i_jax.data import pipeline
from i2i_jax.models import vsait


@pytest.fixture(scope="module")
def config():
  return tiny.get_config()


@pytest.fixture(scope="module")
def state(config):
  fns = training.make_step_functions(config)
  return training.create_train_state(
      fns, vsait.init_variables(fns.modules, jax.random.key(0), (32, 32)))


def test_save_and_restore_state_and_data_position(tmp_path, config, state):
  iterator = pipeline.make_train_iterator(config.data, seed=config.seed)
  next(iterator)
  manager = checkpoint.make_manager(tmp_path, config.checkpoint)
  saved = state.replace(step=jnp.asarray(7, jnp.int32))
  assert checkpoint.save(manager, 7, saved, iterator, config, force=True)
  manager.wait_until_finished()
  expected_next = next(iterator)

  fresh_iterator = pipeline.make_train_iterator(config.data, seed=config.seed)
  template = jax.tree.map(jnp.zeros_like, state)
  restored = checkpoint.restore(checkpoint.make_manager(tmp_path, read_only=True), template,
                                fresh_iterator)
  assert int(restored.step) == 7
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(saved))
  np.testing.assert_array_equal(next(fresh_iterator)["source"], expected_next["source"])


def test_keep_policies(tmp_path, config, state):
  config = config.copy_and_resolve_references()
  config.checkpoint.update(every_steps=1, keep=2, keep_every_steps=4, async_save=True)
  manager = checkpoint.make_manager(tmp_path, config.checkpoint)
  for step in range(1, 10):
    checkpoint.save(manager, step, state, None, config)
  manager.wait_until_finished()
  assert manager.all_steps() == [4, 8, 9]  # the last two, and every 4th


def test_load_generator_translates_like_the_trained_state(tmp_path, config, state):
  manager = checkpoint.make_manager(tmp_path, config.checkpoint)
  checkpoint.save(manager, 3, state, None, config, force=True)
  manager.wait_until_finished()
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  expected = training.make_step_functions(config).modules.generator.apply(
      state.variables["generator"], images)
  for path in (tmp_path, tmp_path / "checkpoints"):
    loaded = checkpoint.load_generator(path)
    assert loaded.step == 3
    assert loaded.config.model.res_channels == config.model.res_channels
    np.testing.assert_array_equal(loaded.module.apply(loaded.variables, images), expected)
  as_bf16 = checkpoint.load_generator(tmp_path, compute_dtype="bfloat16")
  assert as_bf16.module.dtype == jnp.bfloat16
  np.testing.assert_allclose(as_bf16.module.apply(as_bf16.variables, images), expected, atol=0.1)


def test_load_generator_names_the_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "checkpoints")):
    checkpoint.load_generator(tmp_path)
  (tmp_path / "checkpoints").mkdir()
  with pytest.raises(FileNotFoundError, match="no checkpoint in"):
    checkpoint.load_generator(tmp_path)
