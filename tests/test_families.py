"""Any model family trains through the shared code: a tiny one registered only here.

The "l1" family below (a 3x3 conv pair added to its input, trained with an L1
loss towards the target) names nothing of VSAIT's, and yet trains through
`train.train_and_evaluate` on the 8 fake devices of tests/conftest.py with its
own FSDP rule, checkpoints, resumes bit-exactly and translates through
`checkpoint.load_generator`: what a new family needs is its module and a config.
"""

import dataclasses
import re
import types

import flax
from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from i2i_jax import checkpoint
from i2i_jax import families
from i2i_jax import metric_writer
from i2i_jax import train
from i2i_jax import translator as translator_lib
from i2i_jax.configs import tiny
from i2i_jax.configs import toy_flipping


class _Generator(nn.Module):
  """images + conv(conv(images)): [B, H, W, 3] -> [B, H, W, 3]."""

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    hidden = nn.relu(nn.Conv(8, (3, 3))(images))
    return images + nn.Conv(3, (3, 3))(hidden)


@flax.struct.dataclass
class _State:
  step: jax.Array
  variables: dict
  opt_state: optax.OptState


@dataclasses.dataclass(frozen=True)
class _StepFunctions:
  optimizer: optax.GradientTransformation


def _make_step_functions(config):
  return _StepFunctions(optax.adam(config.optimizer.learning_rate))


def _init_state(fns, rng):
  variables = {"generator": _Generator().init(rng, jnp.zeros((1, 16, 16, 3)))}
  return _State(step=jnp.zeros((), jnp.int32), variables=variables,
                opt_state=fns.optimizer.init(variables["generator"]["params"]))


def _translate(variables, images, fns, source_label=None):
  del fns, source_label
  return _Generator().apply(variables["generator"], images)


def _train_step(state, batch, fns):
  def loss_fn(params):
    translated = _translate({"generator": {"params": params}}, batch["source"], fns)
    return jnp.abs(translated - batch["target"]).mean()

  params = state.variables["generator"]["params"]
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = fns.optimizer.update(grads, state.opt_state, params)
  new_state = state.replace(step=state.step + 1,
                            variables={"generator": {"params": optax.apply_updates(params, updates)}},
                            opt_state=opt_state)
  return new_state, {"g_total": loss}


L1_FAMILY = types.SimpleNamespace(
    make_step_functions=_make_step_functions,
    init_state=_init_state,
    pretrained_variables=lambda config, fns: {},
    train_step=_train_step,
    batch_keys=lambda fns: ("source", "target"),
    translate=_translate,
    trained_generator=lambda config, variables, dtype: (_Generator(), variables["generator"]),
    is_fsdp_leaf=lambda path: path.startswith("opt_state/"),
    parameter_groups=lambda variables: {"generator": variables["generator"]["params"]},
)


@pytest.fixture
def l1_family(monkeypatch):
  monkeypatch.setitem(families.FAMILIES, "l1", L1_FAMILY)


def _config(total_steps):
  """tiny's loop settings with the l1 family: one 16x16 image per device, FSDP on."""
  config = tiny.get_config()
  config.model = ml_collections.ConfigDict({"family": "l1"})
  config.loss = ml_collections.ConfigDict()
  config.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-2})
  config.total_steps = total_steps
  config.data.batch_size = 8
  config.data.preprocess = "resize(16,32)|random_crop(16,16)|flip_lr|value_range(-1,1)"
  config.sharding.fsdp = True
  config.sharding.fsdp_min_size = 1
  return config


def test_a_family_registered_here_trains_resumes_and_translates(tmp_path, l1_family):
  straight = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "straight"))
  train.train_and_evaluate(_config(total_steps=2), str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "resumed"))

  assert int(straight.step) == int(resumed.step) == 4
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path)),
      jax.device_get(resumed), jax.device_get(straight))
  losses = [r["g_total"] for r in metric_writer.read_metrics(
      tmp_path / "straight" / metric_writer.METRICS_FILE) if "g_total" in r]
  assert len(losses) == 4 and losses[-1] < losses[0]
  # The family's FSDP rule: its Adam moments split over the devices, its parameters not.
  first_moment = straight.opt_state[0].mu["Conv_0"]["kernel"]
  assert first_moment.sharding.spec == P(None, None, None, "data")
  assert straight.variables["generator"]["params"]["Conv_0"]["kernel"].sharding.spec == P()

  loaded = checkpoint.load_generator(tmp_path / "resumed")
  assert loaded.step == 4 and isinstance(loaded.module, _Generator)
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)
  translated = translator_lib.Translator(loaded, batch_size=8, bucket_multiple=16).translate(
      images)
  expected = _translate(jax.device_get(straight.variables), images / 127.5 - 1.0, None)
  expected = np.clip(np.round((np.asarray(expected) + 1) * 127.5), 0, 255)
  assert np.abs(translated.astype(int) - expected).max() <= 1


def test_an_unknown_family_is_a_config_error_naming_the_key_and_the_families(tmp_path):
  config = _config(total_steps=1)
  config.model.family = "drit"
  known = re.escape(str(sorted(families.FAMILIES)))
  assert "'vsait'" in known
  with pytest.raises(train.ConfigError,
                     match=rf"^config\.model\.family='drit' is not one of {known}$"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_a_config_without_a_family_is_vsait():
  """Runs saved before config.model.family existed load and resume as VSAIT."""
  without_key = ml_collections.ConfigDict({"model": {"res_blocks": 9}})
  assert families.get(without_key) is families.FAMILIES["vsait"]
  assert families.family_name(tiny.get_config()) == "vsait"


@pytest.mark.parametrize("family", ["cut", "cyclegan", "srunit"])
def test_toy_world_comparison_gives_every_family_the_same_data_evaluators_and_budget(family):
  vanilla = toy_flipping.get_config("overgrown")
  other = toy_flipping.get_config(f"overgrown,{family}")
  assert families.family_name(other) == family
  for shared in ("data", "evals", "total_steps", "seed", "checkpoint"):
    assert other[shared] == vanilla[shared], shared
  # The official schedule ends exactly at the budget's last step.
  schedule = other.optimizer
  assert (schedule.n_epochs + schedule.n_epochs_decay) * schedule.steps_per_epoch == (
      other.total_steps)
  families.get(other).make_step_functions(other)  # a valid config of that family
  with pytest.raises(ValueError, match="unknown family 'drit'"):
    toy_flipping.get_config("overgrown,drit")
