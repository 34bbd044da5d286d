"""CUT trains, checkpoints, resumes, translates and evaluates through the shared code and CLIs.

In process on the 8 fake devices of tests/conftest.py: configs/cut_tiny.py
through `train.train_and_evaluate` (FSDP on), 4 straight steps equal 2 + resume
+ 2 bit for bit (the PatchNCE positions come from the state's key), and
`checkpoint.load_generator` + `Translator` translate as the family does. Then
the three CLIs in subprocesses on one CPU device: train, translate, evaluate.
"""

import json
import logging
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from i2i_jax import checkpoint
from i2i_jax import compile_options
from i2i_jax import families
from i2i_jax import metric_writer
from i2i_jax import train
from i2i_jax import translator as translator_lib
from i2i_jax.configs import cut as cut_config
from i2i_jax.configs import cut_tiny
from i2i_jax.configs import cyclegan as cyclegan_config
from i2i_jax.data import toy_streets
from i2i_jax.families import cut as cut_family
from i2i_jax.models import cut
from i2i_jax.models import layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _config(total_steps):
  """cut_tiny with one image per fake device and every Adam moment splittable."""
  config = cut_tiny.get_config()
  config.total_steps = total_steps
  config.data.batch_size = 8
  config.sharding.fsdp = True
  config.sharding.fsdp_min_size = 1
  return config


def test_cut_trains_resumes_bit_exactly_and_translates_through_the_checkpoint(tmp_path, caplog):
  with caplog.at_level(logging.INFO):
    straight = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "straight"))
  train.train_and_evaluate(_config(total_steps=2), str(tmp_path / "resumed"))
  resumed = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "resumed"))

  assert isinstance(straight, cut_family.TrainState)
  assert int(straight.step) == int(resumed.step) == 4
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path)),
      jax.device_get(resumed), jax.device_get(straight))
  records = metric_writer.read_metrics(tmp_path / "straight" / metric_writer.METRICS_FILE)
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert {"g_gan", "g_nce", "g_nce_y", "g_total", "d_fake", "d_real", "d_total", "g_lr",
          "d_lr"} <= set(records[0])
  assert records[-1]["g_nce"] < records[0]["g_nce"]  # the contrastive loss learns
  progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 4/4")]
  assert len(progress) == 1 and "d_total" in progress[0] and "g_total" in progress[0]
  # FSDP: the Adam moments split over the devices, the parameters replicated.
  first_moment = straight.opt_states["gf"][0].mu["generator"]["model_4"]["kernel"]
  assert first_moment.shape[-1] == 8 and first_moment.sharding.spec == P(None, None, None, "data")
  assert straight.variables["generator"]["params"]["model_4"]["kernel"].sharding.spec == P()

  loaded = checkpoint.load_generator(tmp_path / "resumed")
  assert loaded.step == 4 and isinstance(loaded.module, cut.ResnetGenerator)
  images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)
  translator = translator_lib.Translator(loaded, batch_size=8, bucket_multiple=16)
  assert translator.compiler_options == cut_config.CPU_COMPILER_OPTIONS  # as the train step
  translated = translator.translate(images)
  fns = cut_family.make_step_functions(_config(total_steps=4))
  expected = cut_family.translate(jax.device_get(straight.variables), images / 127.5 - 1.0, fns)
  expected = np.clip(np.round((np.asarray(expected) + 1) * 127.5), 0, 255)
  assert np.abs(translated.astype(int) - expected).max() <= 1


def test_cut_is_registered_and_refuses_settings_it_cannot_run():
  config = cut_tiny.get_config()
  assert families.get(config) is cut_family
  config.grad_accum_steps = 2
  with pytest.raises(ValueError, match=r"^config\.grad_accum_steps=2: "):
    cut_family.make_step_functions(config)
  config = cut_tiny.get_config()
  config.model.nce_layers = (0, 4, 30)
  with pytest.raises(ValueError, match=r"^config\.model\.nce_layers=\(0, 4, 30\): .* 25 layers"):
    cut_family.make_step_functions(config)


def test_cut_configs_compile_with_xla_cpus_own_convolutions():
  """The generator's unpadded convs are fast on CPU only in XLA's own kernels: a
  jaxlib that no longer takes the option would cost ~1.7x a step, so it fails here."""
  for config in (cut_config.get_config(), cut_tiny.get_config(), cyclegan_config.get_config()):
    assert compile_options.cpu_compiler_options(config) == cut_config.CPU_COMPILER_OPTIONS


def _run(module, *args):
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=CLI_ENV)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_train_translate_and_evaluate_clis_run_cut(tmp_path):
  workdir, translated, report = tmp_path / "run", tmp_path / "translated", tmp_path / "report"
  toy_streets.write_folder(str(tmp_path / "val"), 2, split="val", height=32, width=64)
  toy_streets.write_folder(str(tmp_path / "train"), 2, style="real", split="train", height=32,
                           width=64)
  source = tmp_path / "val" / "sim" / "images"

  _run("i2i_jax.train", "--config=configs/cut_tiny.py", f"--workdir={workdir}",
       "--config.total_steps=2")
  assert checkpoint.make_manager(workdir, read_only=True).latest_step() == 2
  _run("i2i_jax.translate", f"--workdir={workdir}", f"--input={source}", f"--output={translated}")
  manifest = json.loads((translated / "manifest.json").read_text())
  assert manifest["status"] == "complete" and manifest["checkpoint"]["step"] == 2
  assert manifest["config"]["model"]["family"] == "cut"
  assert sorted(os.listdir(translated / "images")) == sorted(os.listdir(source))
  _run("i2i_jax.evaluate", f"--source={source}", f"--translated={translated / 'images'}",
       f"--target={tmp_path / 'train' / 'real' / 'images'}",
       f"--target_labels={tmp_path / 'train' / 'real' / 'labels'}", f"--out={report}",
       "--fd_network=none", "--segmenter_steps=1", "--downstream_steps=0", "--worst_k=1")
  assert (report / "report.json").exists()


def test_patch_ids_are_distinct_and_uniform_over_positions():
  """As the official `np.random.permutation(h * w)[:num_patches]`: every position,
  and every position as the first id, equally likely."""
  features = [jax.ShapeDtypeStruct((1, 4, 4, 8), np.float32),
              jax.ShapeDtypeStruct((1, 2, 1, 8), np.float32)]
  draw = jax.jit(jax.vmap(lambda key: cut.sample_patch_ids(key, features, 5)))
  small_map, tiny_map = draw(jax.random.split(jax.random.key(0), 4000))
  assert small_map.shape == (4000, 5) and tiny_map.shape == (4000, 2)  # min(5, h * w)
  for ids, positions in ((small_map, 16), (tiny_map, 2)):
    ids = np.asarray(ids)
    assert all(len(set(row)) == ids.shape[1] for row in ids)
    assert ids.min() == 0 and ids.max() == positions - 1
  counts = np.bincount(np.asarray(small_map).ravel(), minlength=16)
  first = np.bincount(np.asarray(small_map)[:, 0], minlength=16)
  # 4000 * 5 / 16 = 1250 per position (sd ~30), 250 as the first (sd ~15).
  assert np.all(np.abs(counts - 1250) < 150), counts
  assert np.all(np.abs(first - 250) < 75), first


def test_patch_sampler_gradient_is_finite_at_a_zero_feature():
  """A sampled position whose projection is exactly zero (a zero feature with the
  MLPs' zero initial biases) keeps every gradient finite; the official norm's
  `pow(1/2)` gives NaN there, which stopped a toy-world run at step 2."""
  sampler = cut.PatchSampleF(nc=8)
  features = [np.random.default_rng(0).standard_normal((1, 3, 3, 4)).astype(np.float32)]
  features[0][0, 1, 2] = 0.0  # position 5
  ids = [np.array([5, 0, 7], np.int32)]
  params = sampler.init(jax.random.key(0), features, ids)

  def loss(params, features):
    pooled = sampler.apply(params, features, ids)[0]
    return jnp.sum(pooled * np.arange(pooled.size).reshape(pooled.shape))

  pooled = sampler.apply(params, features, ids)[0]
  np.testing.assert_array_equal(pooled[0], 0.0)
  np.testing.assert_allclose(np.linalg.norm(pooled[1:], axis=1), 1.0, rtol=1e-3)  # + 1e-7
  grads = jax.grad(loss, argnums=(0, 1))(params, features)
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(grads))


@pytest.mark.parametrize("in_channels,out_channels,kernel,padding,batch", [
    (3, 8, 7, "VALID", 2),                  # the first 7x7 conv: shift-sum input gradient
    (8, 3, 7, "VALID", 2),                  # the last 7x7 conv: shift-sum forward
    (5, 6, 3, "VALID", 3),                  # batch-stacked kernel gradient, unpadded
    (5, 6, 3, ((1, 1), (1, 1)), 2),         # the same, zero-padded
    (3, 8, 4, ((2, 1), (0, 3)), 2),         # uneven padding, even kernel, few inputs
    (8, 3, 3, ((1, 1), (1, 1)), 1),         # one image: XLA's kernel gradient
])
def test_cpu_tuned_conv_is_the_plain_conv(in_channels, out_channels, kernel, padding, batch):
  """The CPU conv's forward and both gradients (shift-sums for the few-channel side, the
  batch stacked along H for the kernel gradient) are those of `lax.conv_general_dilated`,
  in float64."""
  plain = nn.Conv(out_channels, (kernel, kernel), padding=padding, param_dtype=jnp.float64,
                  dtype=jnp.float64)
  tuned = plain.clone(conv_general_dilated=layers.cpu_tuned_conv)
  rng = np.random.default_rng(0)
  with jax.enable_x64(True):
    images = jnp.asarray(rng.standard_normal((batch, 11, 10, in_channels)))
    params = plain.init(jax.random.key(0), images)
    cotangent = jnp.asarray(rng.standard_normal(plain.apply(params, images).shape))
    results = [jax.value_and_grad(lambda p, x: jnp.sum(conv.apply(p, x) * cotangent),
                                  argnums=(0, 1))(params, images) for conv in (plain, tuned)]
    for ours, expected in zip(jax.tree.leaves(results[1]), jax.tree.leaves(results[0])):
      np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)


def test_cpu_tuned_conv_refuses_what_it_does_not_compute():
  images = jnp.zeros((2, 11, 10, 3))
  for conv in (nn.Conv(4, (3, 3), padding="SAME"), nn.Conv(4, (3, 3), strides=2, padding="VALID")):
    with pytest.raises(ValueError, match="stride-1, ungrouped NHWC/HWIO"):
      conv.clone(conv_general_dilated=layers.cpu_tuned_conv).init(jax.random.key(0), images)
