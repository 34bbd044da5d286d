"""Orbax checkpoints of a run: round trip, keep policies, loading the generator.

Damage is real: a file of a saved checkpoint cut short, as a full disk or an
interrupted copy leaves it.
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax.configs import tiny
from i2i_jax import checkpoint
from i2i_jax.families import vsait as vsait_family
from i2i_jax.data import pipeline
from i2i_jax.models import vsait


@pytest.fixture(scope="module")
def config():
  return tiny.get_config()


@pytest.fixture(scope="module")
def state(config):
  fns = vsait_family.make_step_functions(config)
  return vsait_family.create_train_state(
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
  expected = vsait_family.make_step_functions(config).modules.generator.apply(
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


def _save_steps(workdir, config, state, steps):
  manager = checkpoint.make_manager(workdir, config.checkpoint)
  for step in steps:
    checkpoint.save(manager, step, state.replace(step=jnp.asarray(step, jnp.int32)), None,
                    config, force=True)
  manager.wait_until_finished()
  return manager


def _truncate_largest_file(step_dir):
  """Cuts the largest array file of a saved state to 1000 bytes."""
  largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(1000)


def test_load_generator_falls_back_past_a_damaged_checkpoint(tmp_path, config, state, caplog):
  _save_steps(tmp_path, config, state, [2, 4]).close()
  _truncate_largest_file(tmp_path / "checkpoints" / "4")
  with caplog.at_level(logging.WARNING):
    loaded = checkpoint.load_generator(tmp_path)
  assert loaded.step == 2
  assert f"{tmp_path / 'checkpoints' / '4'} cannot be read" in caplog.text
  assert "move" in caplog.text and "damaged_checkpoints" in caplog.text
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]  # read only
  # A damaged step asked for by name is an error naming it, not a fallback.
  with pytest.raises(checkpoint.DamagedCheckpointError, match=r"checkpoints/4 cannot be read"):
    checkpoint.load_generator(tmp_path, step=4)
  _truncate_largest_file(tmp_path / "checkpoints" / "2")
  with pytest.raises(checkpoint.DamagedCheckpointError, match=r"no checkpoint in .* can be read"):
    checkpoint.load_generator(tmp_path)


def test_resume_sets_a_damaged_checkpoint_aside_and_keeps_the_intact_one(tmp_path, config, state):
  """The keep policy must not delete the fallback because a damaged step counts as newer."""
  config = config.copy_and_resolve_references()
  config.checkpoint.keep = 2
  _save_steps(tmp_path, config, state, [2, 4]).close()
  _truncate_largest_file(tmp_path / "checkpoints" / "4")
  manager = checkpoint.make_manager(tmp_path, config.checkpoint)
  restored = checkpoint.restore(manager, state, None, config=config, set_aside_damaged=True)
  assert int(restored.step) == 2
  assert (tmp_path / "damaged_checkpoints" / "4" / "state").is_dir()  # kept, not deleted
  checkpoint.save(manager, 3, restored, None, config, force=True)
  manager.wait_until_finished()
  assert manager.all_steps() == [2, 3]
  checkpoint.save(manager, 4, restored, None, config, force=True)  # no clash with the damaged 4
  manager.wait_until_finished()
  assert manager.all_steps() == [3, 4]


def test_restore_refuses_another_model_config_but_not_other_settings(tmp_path, config, state):
  _save_steps(tmp_path, config, state, [2]).close()
  manager = checkpoint.make_manager(tmp_path, read_only=True)
  other_model = config.copy_and_resolve_references()
  other_model.model.res_channels = 16
  other_model.model.lsh_kernel_sizes = (8, 8, 4, 2, 1)
  with pytest.raises(checkpoint.ConfigMismatchError,
                     match=r"model.lsh_kernel_sizes=\[16, 8, 4, 2, 1\] there, \[8, 8, 4, 2, 1\] now; "
                           r"model.res_channels=8 there, 16 now.*another --workdir"):
    checkpoint.restore(manager, state, None, config=other_model)
  extended = config.copy_and_resolve_references()
  extended.total_steps = 10 * config.total_steps
  extended.log_every_steps = 7
  extended.data.source = "folder:elsewhere"
  extended.optimizer.g.learning_rate = 1e-5
  assert int(checkpoint.restore(manager, state, None, config=extended).step) == 2
