"""The mesh and partition rules, and the sharded step against the one-device step.

Runs on the 8 fake CPU devices of tests/conftest.py.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from i2i_jax.configs import tiny
from i2i_jax import sharding
from i2i_jax.families import vsait as vsait_family
from i2i_jax.data import pipeline
from i2i_jax.models import vsait


def _config(fsdp: bool, batch_size: int = 8):
  config = tiny.get_config()
  config.data.batch_size = batch_size
  config.data.preprocess = "resize(16,32)|random_crop(16,16)|flip_lr|value_range(-1,1)"
  config.sharding.fsdp = fsdp
  config.sharding.fsdp_min_size = 1024
  return config


def _initial_state(fns, dtype=jnp.float32):
  variables = vsait.init_variables(fns.modules, jax.random.key(0), (16, 16))
  return vsait_family.create_train_state(fns, jax.tree.map(lambda x: x.astype(dtype), variables))


def _batches(config, count):
  iterator = pipeline.make_train_iterator(config.data, seed=0)
  return [next(iterator) for _ in range(count)]


def test_there_are_eight_devices():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"


def test_fsdp_spec_splits_the_largest_divisible_axis():
  assert sharding.fsdp_spec((16, 16, 64, 4096), 8, 1024) == P(None, None, None, "data")
  assert sharding.fsdp_spec((12, 40, 6), 8, 1024) == P(None, "data", None)
  assert sharding.fsdp_spec((3, 5, 7, 9), 8, 1) == P()  # nothing divisible
  assert sharding.fsdp_spec((8, 8), 8, 1024) == P()  # too small
  assert sharding.fsdp_spec((4096,), 1, 1) == P()  # one device


@pytest.mark.parametrize("fsdp", [False, True])
def test_state_shardings(fsdp):
  config = _config(fsdp)
  fns = vsait_family.make_step_functions(config)
  mesh = sharding.make_mesh()
  abstract = jax.eval_shape(_initial_state, fns)
  shardings = sharding.state_shardings(abstract, mesh, config.sharding,
                                       vsait_family.is_fsdp_leaf)
  lsh_weight = shardings.variables["lsh"]["constants"]["weight_0"]
  adam_mu = shardings.g_opt_state[1].mu["map_net"]["conv_0"]["kernel"]
  generator_kernel = jax.tree.leaves(shardings.variables["generator"]["params"])[0]
  expected_split = P(None, None, None, "data") if fsdp else P()
  assert lsh_weight.spec == expected_split
  assert adam_mu.spec == (P(None, "data") if fsdp else P())
  assert generator_kernel.spec == P()  # trained parameters stay replicated
  assert shardings.step.spec == P()


def test_global_batch_puts_each_host_row_on_its_device():
  mesh = sharding.make_mesh()
  host = {"source": np.arange(8 * 2, dtype=np.float32).reshape(8, 2)}
  global_ = sharding.global_batch(host, mesh)["source"]
  assert global_.shape == (8, 2)
  for shard in global_.addressable_shards:
    row = shard.index[0].start
    np.testing.assert_array_equal(shard.data, host["source"][row:row + 1])
    assert shard.device == mesh.devices[row]


def test_prefetched_global_batches_are_the_batches_in_order_and_checkpoint_where_consumed():
  """The thread runs ahead, but the state is the consumed batch's: a restore resumes there."""
  config = _config(fsdp=False)
  mesh = sharding.make_mesh()
  expected = _batches(config, 5)
  prefetched = sharding.prefetch_global_batches(
      pipeline.make_train_iterator(config.data, seed=0), ("source",), mesh, buffer_size=3)
  for batch in expected[:2]:
    got = next(prefetched)
    assert set(got) == {"source"} and got["source"].sharding == sharding.batch_sharding(mesh)
    np.testing.assert_array_equal(jax.device_get(got["source"]), batch["source"])
  time.sleep(0.5)  # lets the thread read ahead (up to 3 more batches)
  restored = pipeline.make_train_iterator(config.data, seed=0)
  restored.set_state(prefetched.get_state())
  prefetched.close()
  for batch in expected[2:]:
    np.testing.assert_array_equal(next(restored)["source"], batch["source"])


def test_check_batch_split_names_the_config_keys():
  mesh = sharding.make_mesh()
  sharding.check_batch_split(16, 2, mesh)
  with pytest.raises(ValueError, match=r"config.data.batch_size=4 .*config.grad_accum_steps=1"):
    sharding.check_batch_split(4, 1, mesh)
  with pytest.raises(ValueError, match=r"--config.data.batch_size=16"):
    sharding.check_batch_split(8, 2, mesh)


def test_sharded_steps_equal_one_device_steps():
  """Two steps on 8 devices (batch split, FSDP) == two on one device, same batches.

  Both start from the same initial state (initialising under another layout
  rounds the float32 LSH norms differently). In float64 the only differences
  are then the order of reductions over the batch (per-device partial sums):
  losses agree to 1e-10 relative (1e-12 absolute for the near-zero adversarial
  term) and parameters to 1e-9 absolute (parameters are O(0.1), Adam steps
  O(1e-4)). Without FSDP the same split runs in tests/test_train.py's resume test.
  """
  fsdp = True
  with jax.enable_x64(True):
    config = _config(fsdp)
    config.compute_dtype = "float64"
    fns = vsait_family.make_step_functions(config)
    batches = [{k: jnp.asarray(b[k], jnp.float64) for k in ("source", "target")}
               for b in _batches(config, 2)]
    step = functools.partial(vsait_family.train_step, fns=fns)

    init = functools.partial(_initial_state, fns, jnp.float64)
    initial = init()
    one_device = jax.device_put(initial, jax.devices()[0])
    one_step = jax.jit(step)
    one_metrics = []
    for batch in batches:
      one_device, metrics = one_step(one_device, jax.device_put(batch, jax.devices()[0]))
      one_metrics.append(metrics)

    mesh = sharding.make_mesh()
    shardings = sharding.state_shardings(jax.eval_shape(init), mesh, config.sharding,
                                         vsait_family.is_fsdp_leaf)
    sharded = jax.device_put(initial, shardings)
    sharded_step = jax.jit(step, in_shardings=(shardings, sharding.batch_sharding(mesh)),
                           out_shardings=(shardings, None))
    sharded_metrics = []
    for batch in batches:
      sharded, metrics = sharded_step(sharded, sharding.global_batch(batch, mesh))
      sharded_metrics.append(metrics)

    lsh_weight = sharded.variables["lsh"]["constants"]["weight_0"]
    assert len(lsh_weight.sharding.device_set) == 8
    assert lsh_weight.addressable_shards[0].data.shape[-1] == 8  # 64 / 8 devices
    for ours, theirs in zip(sharded_metrics, one_metrics):
      for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    jax.tree.map_with_path(
        lambda path, a, b: np.testing.assert_allclose(
            a, b, rtol=0, atol=1e-9, err_msg=jax.tree_util.keystr(path)),
        jax.device_get(sharded), jax.device_get(one_device))
