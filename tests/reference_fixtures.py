"""Runs our VSAIT on a reference fixture (`../shared/reference/*.npz`) and lines
up every stored quantity with ours, in the fixture's own (PyTorch) layout.

Used by `test_reference_parity.py`; `python tests/reference_fixtures.py` prints
the largest error per key (the figures quoted in docs/reference_notes.md).
"""

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from i2i_jax.configs import vsait as vsait_config
from i2i_jax import vsa
from i2i_jax.families import vsait as vsait_family
from i2i_jax.models import torch_layout
from i2i_jax.models import vgg, vsait

REFERENCE_DIR = pathlib.Path(os.environ.get(
    "I2I_REFERENCE_DIR",
    pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "reference"))


def fixture_paths() -> list[pathlib.Path]:
  return sorted(REFERENCE_DIR.glob("*.npz"))


def config_from_fixture(cfg: dict[str, Any]) -> ml_collections.ConfigDict:
  """Our config with every field the fixture's `config_json` sets."""
  config = vsait_config.get_config()
  model = config.model
  model.in_channels = cfg["in_channels"]
  model.out_channels = cfg["out_channels"]
  model.res_blocks = cfg["res_blocks"]
  model.res_channels = cfg["res_channels"]
  model.lsh_out_channels = cfg["lsh_out_channels"]
  model.lsh_kernel_sizes = tuple(cfg["lsh_kernel_size"])
  model.lsh_strides = tuple(cfg["lsh_stride"])
  model.map_net_channels = tuple(cfg["map_net_channels"])
  model.discriminator_channels = tuple(cfg["discriminator_channels"])
  assert cfg["vgg_return_nodes"] == [f"features.{i}" for i in vgg.RETURN_NODES], cfg
  assert cfg["gan_loss"] == "loss_hinge_gan", cfg["gan_loss"]
  config.loss.vsa_coef = cfg["vsa_loss_coef"]
  for name in ("g", "d"):
    ref, ours = cfg["optimizers"][name], config.optimizer[name]
    ours.learning_rate = ref["lr"]
    ours.b1, ours.b2 = ref["betas"]
    ours.eps = ref["eps"]
    ours.weight_decay = ref["weight_decay"]
  return config


def vgg_conv_params(layer: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """The fixture's VGG19 weights ("chirp-v1" formula of the reference README), OIHW."""
  out_ch, in_ch, kh, kw = shape
  k = np.arange(out_ch * in_ch * kh * kw, dtype=np.int64)
  m = (7 * k * k + 3 * k + 5 * layer) % 10007
  w = np.sqrt(2.0 / (in_ch * kh * kw)) * np.sin(2.0 * np.pi * m.astype(np.float64) / 10007.0)
  b = 0.01 * np.cos(np.arange(out_ch, dtype=np.float64) + layer)
  return w.reshape(shape).astype(np.float32), b.astype(np.float32)


def vgg_state_dict() -> dict[str, np.ndarray]:
  state, in_ch = {}, 3
  for layer, (index, out_ch) in enumerate(vgg.CONV_LAYERS):
    w, b = vgg_conv_params(layer, (out_ch, in_ch, 3, 3))
    state[f"features.{index}.weight"], state[f"features.{index}.bias"] = w, b
    in_ch = out_ch
  return state


def nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


class Fixture:
  """One fixture file, converted to our layouts and dtypes on demand."""

  def __init__(self, path: pathlib.Path):
    self.path = path
    with np.load(path) as f:
      self.data = {k: f[k] for k in f.files}
    self.cfg = json.loads(str(self.data["config_json"]))
    self.config = config_from_fixture(self.cfg)
    self.names = torch_layout.vsait_names(self.config.model)

  def state_dict(self, prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in self.data.items() if k.startswith(prefix)}

  def variables(self, dtype, after_step: bool = False) -> dict[str, Any]:
    """All networks' variables from the fixture, cast to `dtype`.

    With `after_step`, the trained parameters are the reference's float64
    `params_after_step/*` (fixed buffers as in `params/*`).
    """
    modules = vsait.build_modules(self.config.model, dtype)
    shapes = jax.eval_shape(
        lambda: vsait.init_variables(modules, jax.random.key(0), tuple(self.cfg["image_hw"])))
    state_dict = self.state_dict("params/")
    if after_step:
      state_dict.update(self.state_dict("params_after_step/"))
    variables = torch_layout.convert_state_dict(state_dict, self.names, shapes)
    variables["vgg"] = torch_layout.convert_state_dict(
        vgg_state_dict(), list(torch_layout.vgg_names()), shapes)["vgg"]
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), variables)

  def inputs(self, dtype) -> dict[str, jax.Array]:
    return {name: jnp.asarray(self.data[f"inputs/{name}"].transpose(0, 2, 3, 1), dtype)
            for name in ("source", "target")}

  def torch_layout(self, tree: dict[str, Any], torch_names: list[str]) -> dict[str, np.ndarray]:
    """Our (nested) variables/gradients -> {torch name: array in PyTorch layout}."""
    return torch_layout.export_state_dict(tree, [e for e in self.names if e[0] in torch_names])


def run_ours(fixture: Fixture, dtype) -> dict[str, np.ndarray]:
  """Our value for every result key of the fixture (float64 needs jax.enable_x64)."""
  config = fixture.config
  config.compute_dtype = jnp.dtype(dtype).name
  fns = vsait_family.make_step_functions(config)
  modules = fns.modules
  variables = fixture.variables(dtype)
  batch = fixture.inputs(dtype)
  results = {}

  features = jax.jit(modules.vgg.apply)(variables["vgg"], batch["source"])
  for node, value in zip(vgg.RETURN_NODES, features):
    results[f"outputs/vgg_source/features.{node}"] = nchw(value)

  g_params = vsait_family.generator_params(variables)
  (_, aux), g_grads = jax.jit(jax.value_and_grad(vsait_family.generator_loss, has_aux=True),
                              static_argnums=3)(g_params, variables, batch["source"], fns)
  outputs = aux["outputs"]
  hv_target = jax.jit(modules.hypervectors)(variables, batch["target"])
  discriminate = jax.jit(modules.discriminator.apply)
  results.update({
      "outputs/fake": nchw(outputs["translated"]),
      "outputs/hv_source": nchw(outputs["hv_source"]),
      "outputs/hv_target": nchw(hv_target),
      "outputs/hv_fake": nchw(outputs["hv_translated"]),
      "outputs/map_source": nchw(outputs["key"]),
      "outputs/hv_source_bound": nchw(outputs["hv_source_bound"]),
      "outputs/vsa_output": nchw(vsa.unbind(outputs["hv_translated"], outputs["key"])),
      "outputs/d_fake": nchw(outputs["d_translated"]),
      "outputs/d_source_bound": nchw(outputs["d_source_bound"]),
      "outputs/d_target": nchw(discriminate(variables["discriminator"], hv_target)),
      "outputs/g_step/d_fake": nchw(outputs["d_translated"]),
      "outputs/g_step/d_source_bound": nchw(outputs["d_source_bound"]),
      "losses/vsa": np.asarray(aux["losses"]["vsa"]),
      "losses/adv": np.asarray(aux["losses"]["adv"]),
      "losses/total_g": np.asarray(aux["losses"]["total"]),
  })
  g_names = [n for n in fixture.data if n.startswith("grads_g/")]
  g_grads = {net: {"params": grads} for net, grads in g_grads.items()}
  for name, value in fixture.torch_layout(g_grads, [n[len("grads_g/"):] for n in g_names]).items():
    results[f"grads_g/{name}"] = value

  # The D step sees the generator and map network after the G update. In float32
  # that update's Adam signs are random where a gradient is below its float32
  # noise (fixture README, rule 2's exception), so the float32 D step starts from
  # the reference's float64 updated generator and map network instead of ours.
  state = vsait_family.create_train_state(fns, variables)
  new_state, _ = jax.jit(vsait_family.train_step, static_argnums=2)(state, batch, fns)
  updated = (new_state.variables if jnp.dtype(dtype) == jnp.float64
             else fixture.variables(dtype, after_step=True))
  after_g = {**updated, "discriminator": variables["discriminator"]}
  d_inputs = jax.jit(vsait_family.discriminator_inputs, static_argnums=4)(
      after_g, batch["source"], batch["target"], outputs["hv_source"], fns)
  (d_total, d_outputs), d_grads = jax.jit(
      jax.value_and_grad(vsait_family.discriminator_loss, has_aux=True), static_argnums=2)(
          vsait_family.discriminator_params(variables), d_inputs, fns)
  results.update({
      "outputs/d_step/fake": nchw(d_inputs["translated"]),
      "outputs/d_step/d_fake": nchw(d_outputs["d_translated"]),
      "outputs/d_step/d_source_bound": nchw(d_outputs["d_source_bound"]),
      "outputs/d_step/d_target": nchw(d_outputs["d_target"]),
      "losses/discr": np.asarray(d_total),
      "losses/total_d": np.asarray(d_total),
  })
  d_names = [n[len("grads_d/"):] for n in fixture.data if n.startswith("grads_d/")]
  for name, value in fixture.torch_layout(
      {"discriminator": {"params": d_grads}}, d_names).items():
    results[f"grads_d/{name}"] = value
  p_names = [n[len("params_after_step/"):] for n in fixture.data
             if n.startswith("params_after_step/")]
  for name, value in fixture.torch_layout(new_state.variables, p_names).items():
    results[f"params_after_step/{name}"] = value
  return results


def result_keys(fixture: Fixture) -> list[str]:
  return [k for k in fixture.data if k.split("/")[0] in (
      "outputs", "losses", "grads_g", "grads_d", "params_after_step")]


def float64_tolerance(fixture: Fixture, key: str) -> float:
  """Rule 1 of the fixture README."""
  name = key.split("/", 1)[1]
  if key.split("/")[0] in ("grads_g", "params_after_step") and name in fixture.cfg[
      "zero_gradient_params"]:
    return 1e-9
  return 1e-9 * float(np.max(np.abs(fixture.data[key]))) + 1e-12


def float32_tolerance(fixture: Fixture, key: str) -> float:
  """Rule 2 of the fixture README."""
  return (10 * float(fixture.data[f"f32_error/{key}"])
          + 1e-6 * float(np.max(np.abs(fixture.data[key]))))


def float32_step_mask(fixture: Fixture, name: str) -> np.ndarray:
  """Rule 3: elements whose Adam step direction is above the gradient's float32 noise."""
  group = "grads_g" if name.startswith("g_net") else "grads_d"
  grad = fixture.data[f"{group}/{name}"]
  decay = fixture.cfg["optimizers"]["g" if group == "grads_g" else "d"]["weight_decay"]
  effective = grad + decay * fixture.data[f"params/{name}"].astype(np.float64)
  return np.abs(effective) > 100 * float(fixture.data[f"f32_error/{group}/{name}"])


def main():
  for path in fixture_paths():
    fixture = Fixture(path)
    with jax.enable_x64(True):
      ours64 = run_ours(fixture, jnp.float64)
    ours32 = run_ours(fixture, jnp.float32)
    print(f"{path.name}: max |ours - reference float64| per key "
          "(float64 run | float32 run; tolerance ratio in brackets)")
    for key in result_keys(fixture):
      ref = fixture.data[key]
      err64 = float(np.max(np.abs(ours64[key] - ref)))
      err32 = float(np.max(np.abs(ours32[key] - ref)))
      tol32 = float32_tolerance(fixture, key)
      ratio32 = err32 / tol32 if tol32 else float("inf") if err32 else 0.0
      print(f"  {key:70s} {err64:9.2e} [{err64 / float64_tolerance(fixture, key):5.2f}]"
            f" | {err32:9.2e} [{ratio32:7.2f}]")


if __name__ == "__main__":
  main()
