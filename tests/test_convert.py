"""Importing official checkpoints: PyTorch names, shapes and layouts, and the CLI."""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from i2i_jax.configs import cut_tiny
from i2i_jax.configs import cyclegan_tiny
from i2i_jax.configs import tiny
from i2i_jax import checkpoint
from i2i_jax import cli
from i2i_jax import convert
from i2i_jax import convert_cut
from i2i_jax import families
from i2i_jax.models import torch_layout
from i2i_jax.models import vsait

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config():
  return tiny.get_config()


@pytest.fixture(scope="module")
def variables(config):
  modules = vsait.build_modules(config.model)
  return jax.tree.map(np.asarray, vsait.init_variables(modules, jax.random.key(3), (32, 32)))


def _official_state_dict(variables, config):
  """What an official Lightning checkpoint's state_dict holds for these weights."""
  names = torch_layout.vsait_names(config.model, with_vgg=True)
  state = torch_layout.export_state_dict(variables, names)
  state = {f"model.{k}": v for k, v in state.items()}
  # Buffers and heads we do not use must be ignored, not rejected.
  state["model.lsh_feat.0._ssq_conv"] = np.ones((1, 1, 16, 16), np.float32)
  return state


def test_round_trip_through_pytorch_layout_is_exact(variables, config):
  state = _official_state_dict(variables, config)
  assert state["model.g_net.encoder.net.0.conv.weight"].shape == (8, 3, 7, 7)  # OIHW
  assert state["model.d_net.net.0.net.2.weight"].shape == (1, 16, 1, 1)
  assert state["model.lsh_feat.0.ssq_weight"].shape == (1, 64, 1, 1)
  back = convert.import_official_checkpoint(state, config)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_missing_parameter_is_named(variables, config):
  state = _official_state_dict(variables, config)
  del state["model.g_net.decoder.net.1.weight"]
  with pytest.raises(torch_layout.ConversionError, match=r"missing parameter 'g_net\.decoder\.net\.1\.weight'"):
    convert.import_official_checkpoint(state, config)


def test_wrong_shape_names_the_parameter_and_both_shapes(variables, config):
  state = _official_state_dict(variables, config)
  state["model.g_net_map.0.0.conv.weight"] = np.zeros((64, 32, 1, 1), np.float32)
  with pytest.raises(torch_layout.ConversionError) as error:
    convert.import_official_checkpoint(state, config)
  message = str(error.value)
  assert "'g_net_map.0.0.conv.weight'" in message
  assert "(64, 32, 1, 1)" in message and "(64, 64, 1, 1)" in message


def test_architecture_mismatch_is_reported_for_every_parameter(variables, config):
  state = _official_state_dict(variables, config)
  wider = config.copy_and_resolve_references()
  wider.model.res_channels = 16
  with pytest.raises(torch_layout.ConversionError) as error:
    convert.import_official_checkpoint(state, wider)
  assert str(error.value).count("has shape") >= 10


def test_vgg_can_come_from_the_config_instead_of_the_checkpoint(tmp_path, variables, config):
  state = {k: v for k, v in _official_state_dict(variables, config).items()
           if not k.startswith("model.feature_extractor.")}
  vgg_npz = tmp_path / "vgg.npz"
  np.savez(vgg_npz, **torch_layout.export_state_dict(variables, list(torch_layout.vgg_names())))
  with_vgg_file = config.copy_and_resolve_references()
  with_vgg_file.model.vgg_weights = str(vgg_npz)
  back = convert.import_official_checkpoint(state, with_vgg_file, vgg_from_checkpoint=False)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_cli_imports_a_lightning_checkpoint_into_an_orbax_workdir(tmp_path, variables, config):
  torch = pytest.importorskip("torch")
  state = {k: torch.from_numpy(v.copy()) for k, v in _official_state_dict(variables, config).items()}
  ckpt = tmp_path / "vsait.ckpt"
  torch.save({"state_dict": state, "global_step": 7}, ckpt)
  workdir = tmp_path / "imported"
  result = subprocess.run(
      [sys.executable, "-m", "i2i_jax.convert", f"--checkpoint={ckpt}",
       f"--workdir={workdir}", "--config=configs/tiny.py"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  loaded = checkpoint.load_generator(workdir)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded.variables),
               variables["generator"])


def _official_generator_file(tmp_path, config, name):
  """Random weights of `config`'s generator saved as `BaseModel.save_networks` does.

  Returns (the file, the params, the family's step functions).
  """
  torch = pytest.importorskip("torch")
  fns = families.get(config).make_step_functions(config)
  shapes = jax.eval_shape(fns.modules.generator.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))["params"]
  # Normal draws (numpy's: no compilation) with the scale of the official init.
  draws = np.random.default_rng(5)
  params = jax.tree.map(lambda s: draws.normal(0, 0.1, s.shape).astype(np.float32), shapes)
  path = tmp_path / name
  torch.save({k: torch.from_numpy(v.copy()) for k, v in convert_cut.export_params(params).items()},
             path)
  return path, params, fns


@pytest.mark.parametrize("config_file, official_file", [
    ("configs/cut_tiny.py", "latest_net_G.pth"),
    ("configs/cyclegan_tiny.py", "latest_net_G_A.pth")])
def test_cli_imports_an_official_generator_that_translates_as_ours(tmp_path, config_file,
                                                                    official_file):
  config = {"configs/cut_tiny.py": cut_tiny, "configs/cyclegan_tiny.py": cyclegan_tiny}[
      config_file].get_config()
  path, params, fns = _official_generator_file(tmp_path, config, official_file)
  workdir = tmp_path / "imported"
  assert convert.main(["convert", f"--checkpoint={path}", f"--workdir={workdir}",
                       f"--config={REPO / config_file}"]) == cli.EXIT_OK
  loaded = checkpoint.load_generator(workdir)
  assert loaded.step == 0 and families.family_name(loaded.config) == config.model.family
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, loaded.variables),
               {"params": params})
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  np.testing.assert_array_equal(loaded.module.apply(loaded.variables, images),
                                fns.modules.generator.apply({"params": params}, images))


def test_cli_refuses_a_generator_of_another_architecture_in_one_line(tmp_path):
  wider = cyclegan_tiny.get_config()
  wider.model.ngf = 4
  path, _, _ = _official_generator_file(tmp_path, wider, "latest_net_G_A.pth")
  workdir = tmp_path / "imported"
  with pytest.raises(cli.UsageError) as error:
    convert.main(["convert", f"--checkpoint={path}", f"--workdir={workdir}",
                  f"--config={REPO / 'configs/cyclegan_tiny.py'}"])
  message = str(error.value)
  assert error.value.exit_code == 2 and "\n" not in message
  assert str(path) in message and "does not match config.model" in message
  assert ("parameter 'model.1.weight' has shape (4, 3, 7, 7), the model expects (3, 3, 7, 7)"
          in message)
  assert not checkpoint.checkpoint_dir(workdir).exists()
