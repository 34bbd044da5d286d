"""CycleGAN trains, resumes and translates through the shared code and CLIs; its image pool.

In process on the 8 fake devices of tests/conftest.py: configs/cyclegan_tiny.py
(pools of 3 images, so that the pools fill in the first step and swap after)
through `train.train_and_evaluate` (FSDP on): 4 straight steps equal a run
resumed from the straight run's step-2 checkpoint bit for bit, image pools and
their draws included, and `checkpoint.load_generator` + `Translator`
translate with G_A. Then (slow) the train and translate CLIs in subprocesses
on one CPU device. The image pool against
the official `ImagePool.query`: what it returns while filling, that a full
pool loses and duplicates nothing, and the probabilities of a swap and of each
slot (fixed keys; bounds of 4 standard deviations).
"""

import collections
import json
import logging
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from i2i_jax import checkpoint
from i2i_jax import families
from i2i_jax import losses_cyclegan
from i2i_jax import metric_writer
from i2i_jax import train
from i2i_jax import translator as translator_lib
from i2i_jax.configs import cyclegan_tiny
from i2i_jax.families import cyclegan as cyclegan_family
from i2i_jax.models import cut

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _config(total_steps):
  """cyclegan_tiny with one image per fake device and every Adam moment splittable."""
  config = cyclegan_tiny.get_config()
  config.total_steps = total_steps
  config.data.batch_size = 8
  config.sharding.fsdp = True
  config.sharding.fsdp_min_size = 1
  return config


def test_cyclegan_trains_resumes_bit_exactly_and_translates_through_the_checkpoint(
    tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    straight = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "straight"))
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 4/4")]
    # What a run stopped after step 2 leaves: its step-2 checkpoint (state,
    # pools, data iterator), here the straight run's.
    shutil.copytree(checkpoint.checkpoint_dir(tmp_path / "straight") / "2",
                    checkpoint.checkpoint_dir(tmp_path / "resumed") / "2")
    resumed = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "resumed"))
  assert any(r.getMessage().startswith("resuming from") and r.getMessage().endswith("step 2")
             for r in caplog.records)

  assert isinstance(straight, cyclegan_family.TrainState)
  assert int(straight.step) == int(resumed.step) == 4
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path)),
      jax.device_get(resumed), jax.device_get(straight))
  # 32 fakes of each domain went through pools of 3: full, and holding fakes.
  for pool in straight.pools.values():
    assert int(pool.count) == 3
    assert np.all(np.abs(np.asarray(pool.images)) <= 1) and np.all(np.std(pool.images, (1, 2, 3)))
  records = metric_writer.read_metrics(tmp_path / "straight" / metric_writer.METRICS_FILE)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert {"g_a", "g_b", "cycle_a", "cycle_b", "idt_a", "idt_b", "g_total", "d_a", "d_b",
          "d_total", "g_lr", "d_lr"} <= set(records[0])
  assert records[-1]["g_total"] < records[0]["g_total"]  # the generators learn
  assert len(progress) == 1 and "d_total" in progress[0] and "g_total" in progress[0]
  # FSDP: the Adam moments split over the devices, parameters and pools replicated.
  first_moment = straight.opt_states["d"][0].mu["target_discriminator"]["model_8"]["kernel"]
  assert first_moment.shape[-1] == 24 and first_moment.sharding.spec == P(None, None, None, "data")
  kernel = straight.variables["target_discriminator"]["params"]["model_8"]["kernel"]
  assert kernel.sharding.spec == P()
  assert straight.pools["fake_B"].images.sharding.spec == P()

  loaded = checkpoint.load_generator(tmp_path / "resumed")
  assert loaded.step == 4 and isinstance(loaded.module, cut.ResnetGenerator)
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)
  translated = translator_lib.Translator(loaded, batch_size=8, bucket_multiple=16).translate(
      images)
  fns = cyclegan_family.make_step_functions(_config(total_steps=4))
  variables = jax.device_get(straight.variables)
  by_generator = {name: np.asarray(fns.modules.generator.apply(variables[name], images / 127.5 - 1))
                  for name in ("generator", "inverse_generator")}
  np.testing.assert_array_equal(
      cyclegan_family.translate(variables, images / 127.5 - 1, fns), by_generator["generator"])
  for name, output in by_generator.items():  # G_A (source -> target) translates, not G_B
    error = np.abs(translated - np.clip(np.round((output + 1) * 127.5), 0, 255)).max()
    assert error <= 1 if name == "generator" else error > 1, (name, error)


def test_cyclegan_is_registered_and_refuses_settings_it_cannot_run():
  config = cyclegan_tiny.get_config()
  assert families.get(config) is cyclegan_family
  assert cyclegan_family.make_step_functions(config).pool_image_shape == (32, 32, 3)
  config.grad_accum_steps = 2
  with pytest.raises(ValueError, match=r"^config\.grad_accum_steps=2: "):
    cyclegan_family.make_step_functions(config)
  config = cyclegan_tiny.get_config()
  config.data.preprocess = "flip_lr|value_range(-1,1)"
  with pytest.raises(ValueError, match=r"^config\.data\.preprocess='flip_lr\|value_range\(-1,1\)'"
                     r" fixes no image size"):
    cyclegan_family.make_step_functions(config)
  config = cyclegan_tiny.get_config()
  config.model.pool_size = -1
  with pytest.raises(ValueError, match=r"^config\.model\.pool_size=-1: "):
    cyclegan_family.make_step_functions(config)


# torch warns that the official loop steps the scheduler before the optimizer: it does.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_learning_rate_follows_the_official_scheduler_stepped_at_each_epoch_start():
  """junyanz's train.py: `model.update_learning_rate()` (LambdaLR.step) *before* each epoch."""
  torch = pytest.importorskip("torch")
  config = cyclegan_tiny.get_config()
  c = config.optimizer
  c.update(n_epochs=3, n_epochs_decay=4, epoch_count=1, steps_per_epoch=2)
  optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=c.learning_rate)
  official_rule = lambda epoch: 1.0 - max(0, epoch + c.epoch_count - c.n_epochs) / float(
      c.n_epochs_decay + 1)
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=official_rule)
  official = []
  for _ in range(c.epoch_count, c.n_epochs + c.n_epochs_decay + 1):
    scheduler.step()
    official += [optimizer.param_groups[0]["lr"]] * c.steps_per_epoch
  schedule = cyclegan_family.make_step_functions(config).schedule
  ours = [float(schedule(step)) for step in range(len(official))]
  np.testing.assert_allclose(ours, official, rtol=1e-6)
  assert official[0] == c.learning_rate and official[-1] == 0


def _distinct_images(count, start=0):
  """[count, 2, 2, 3] images, image i filled with the value start + i."""
  values = jnp.arange(start, start + count, dtype=jnp.float32)
  return jnp.broadcast_to(values[:, None, None, None], (count, 2, 2, 3))


def _ids(images) -> list[int]:
  return [int(v) for v in np.asarray(images)[:, 0, 0, 0]]


def test_image_pool_returns_its_inputs_while_filling_then_swaps_without_losing_any():
  query = jax.jit(losses_cyclegan.query_pool)
  pool = losses_cyclegan.empty_pool(4, (2, 2, 3))
  pool, returned = query(pool, _distinct_images(3), jax.random.key(0))
  assert _ids(returned) == [0, 1, 2] and int(pool.count) == 3
  assert _ids(pool.images[:3]) == [0, 1, 2]
  # The 4th image fills the pool and comes back; from the 5th on it is full.
  pool, returned = query(pool, _distinct_images(1, start=3), jax.random.key(1))
  assert _ids(returned) == [3] and int(pool.count) == 4 and _ids(pool.images) == [0, 1, 2, 3]
  seen_from_pool = 0
  for step in range(20):
    before = _ids(pool.images)
    inputs = _distinct_images(3, start=10 + 3 * step)
    pool, returned = query(pool, inputs, jax.random.key(100 + step))
    # A full pool hands back one image for each it takes: none lost, none duplicated.
    assert sorted(_ids(pool.images) + _ids(returned)) == sorted(before + _ids(inputs))
    assert int(pool.count) == 4
    seen_from_pool += len(set(_ids(returned)) - set(_ids(inputs)))
  assert seen_from_pool > 0


def test_image_pool_of_size_zero_returns_the_images():
  pool = losses_cyclegan.empty_pool(0, (2, 2, 3))
  images = _distinct_images(2)
  new_pool, returned = losses_cyclegan.query_pool(pool, images, jax.random.key(0))
  np.testing.assert_array_equal(returned, images)
  assert new_pool.images.shape == (0, 2, 2, 3)


def test_image_pool_queries_a_batch_image_by_image():
  """A batch is the official loop over its images: image i sees the swaps of images < i.

  A full pool of one image (0) queried with [10, 11]: each image independently
  swaps or not, and when both swap the second gets the first back (not 0 twice).
  """
  query = jax.jit(losses_cyclegan.query_pool)
  full = losses_cyclegan.ImagePool(images=_distinct_images(1), count=jnp.array(1, jnp.int32))
  sequential_outcomes = {  # (returned, pool after) for (swap 10?, swap 11?)
      (False, False): ([10, 11], [0]), (True, False): ([0, 11], [10]),
      (False, True): ([10, 0], [11]), (True, True): ([0, 10], [11])}
  seen = set()
  for seed in range(32):
    pool, returned = query(full, _distinct_images(2, start=10), jax.random.key(seed))
    outcome = (_ids(returned), _ids(pool.images))
    assert outcome in sequential_outcomes.values(), outcome
    seen.add(next(k for k, v in sequential_outcomes.items() if v == outcome))
  assert seen == set(sequential_outcomes)


def test_image_pool_swaps_with_probability_one_half_and_a_uniform_slot():
  """Official: `random.uniform(0, 1) > 0.5` swaps, `random.randint(0, size - 1)` picks the slot."""
  size, queries = 5, 4000
  full = losses_cyclegan.ImagePool(images=_distinct_images(size), count=jnp.array(size, jnp.int32))
  new = _distinct_images(1, start=100)

  def one_query(key):
    pool, returned = losses_cyclegan.query_pool(full, new, key)
    return pool.images[:, 0, 0, 0], returned[0, 0, 0, 0]

  pools, returned = jax.jit(jax.vmap(one_query))(
      jax.random.split(jax.random.key(2026), queries))
  pools, returned = np.asarray(pools), np.asarray(returned)
  swapped = returned != 100
  # Binomial(4000, 1/2): standard deviation 0.0079 of the fraction.
  assert abs(swapped.mean() - 0.5) < 4 * np.sqrt(0.25 / queries)
  # A swap returns a stored image and puts the new one in its slot; no swap leaves the pool.
  np.testing.assert_array_equal(pools[~swapped],
                                np.broadcast_to(np.arange(size), (np.sum(~swapped), size)))
  slots = np.argmax(pools[swapped] == 100, axis=1)
  np.testing.assert_array_equal(returned[swapped], slots)
  # Each slot ~ Binomial(swaps, 1/5).
  counts = collections.Counter(slots.tolist())
  expected, sd = swapped.sum() / size, np.sqrt(swapped.sum() * (1 / size) * (1 - 1 / size))
  assert sorted(counts) == list(range(size))
  assert all(abs(counts[s] - expected) < 4 * sd for s in range(size)), counts


def _run(module, *args):
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=CLI_ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_train_and_translate_clis_run_cyclegan(tmp_path):
  workdir, translated = tmp_path / "run", tmp_path / "translated"
  source = tmp_path / "images"
  source.mkdir()
  rng = np.random.default_rng(0)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  for i in range(2):
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), np.uint8)).save(source / f"{i}.png")

  _run("i2i_jax.train", "--config=configs/cyclegan_tiny.py", f"--workdir={workdir}",
       "--config.total_steps=2")
  assert checkpoint.make_manager(workdir, read_only=True).latest_step() == 2
  _run("i2i_jax.translate", f"--workdir={workdir}", f"--input={source}", f"--output={translated}")
  manifest = json.loads((translated / "manifest.json").read_text())
  assert manifest["status"] == "complete" and manifest["checkpoint"]["step"] == 2
  assert manifest["config"]["model"]["family"] == "cyclegan"
  assert sorted(os.listdir(translated / "images")) == ["0.png", "1.png"]
