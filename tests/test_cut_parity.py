"""Parity with the official CUT code on every `cut_*.npz` in $I2I_CUT_REFERENCE_DIR (default tests/fixtures).

Each fixture holds the official code's own results of one training step
(forward, D step, G and F step; tools/make_cut_reference.py, docs/cut.md) in
float64 and float32. Our modules are built from the fixture's `config_json`,
loaded with its weights (through the checkpoint converter) and fed its patch
ids. The comparison rules are those of ../shared/reference/README.md:
1. float64: every result within 1e-10 * max|ref| + 1e-12, except the conv
   biases before an instance norm, whose true gradient is 0 (the stored value
   is float noise): their gradients within 1e-9 absolute, and their updated
   values within lr * 1e-9 / eps, what Adam's first step (`lr * g / (|g| + eps)`)
   makes of such a gradient difference;
2. float32: outputs, losses, gradients within 10 * f32_error + 1e-6 * max|ref|;
   the G step runs against the reference's float64 updated D cast to float32,
   as the reference's own float32 run did. Gradients are compared on our
   float32 run's activation pattern (`float32_pattern_correction`): a ReLU /
   LeakyReLU input within float32 noise of 0 may land on the other side of the
   kink in float32, which changes a gradient by up to ~1% (not rounding noise,
   and not the same elements in the reference's float32 run), so the float32
   gradient is held against `ref + (ours64 on our float32 pattern - ours64)`;
3. float32 updated parameters where Adam's direction is above the noise.
"""

import contextlib
import json
import os
import pathlib
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from i2i_jax import convert_cut
from i2i_jax import losses_cut
from i2i_jax.configs import cut as cut_config
from i2i_jax.models import cut
from i2i_jax.models import torch_layout

FIXTURE_DIR = pathlib.Path(os.environ.get(
    "I2I_CUT_REFERENCE_DIR", pathlib.Path(__file__).resolve().parent / "fixtures"))
FIXTURES = sorted(FIXTURE_DIR.glob("cut_*.npz"))
# Our network -> the official one's name prefix in the fixture.
NETWORKS = {"generator": "netG", "patch_sampler": "netF", "discriminator": "netD"}


def test_cut_fixtures_are_found():
  assert FIXTURES, (f"no cut_*.npz fixture in {FIXTURE_DIR}; set I2I_CUT_REFERENCE_DIR "
                    "(tools/make_cut_reference.py writes them)")


class Fixture:
  """One fixture: its arrays, our config for it, and its values in our layouts."""

  def __init__(self, path: pathlib.Path):
    with np.load(path) as f:
      self.data = {k: f[k] for k in f.files}
    self.cfg = cfg = json.loads(str(self.data["config_json"]))
    fixed = {"CUT_mode": "CUT", "netD": "basic", "normG": "instance", "normD": "instance",
             "no_antialias": False, "no_antialias_up": False, "no_dropout": True,
             "netF": "mlp_sample", "gan_mode": "lsgan", "flip_equivariance": False}
    assert {k: cfg[k] for k in fixed} == fixed, f"{path.name}: not what our CUT implements"
    self.config = config = cut_config.get_config()
    for key in ("input_nc", "output_nc", "ngf", "ndf", "n_blocks", "n_layers_D", "netF_nc",
                "num_patches", "nce_layers"):
      config.model[key] = cfg[key]
    for key in ("lambda_GAN", "lambda_NCE", "nce_idt", "nce_T",
                "nce_includes_all_negatives_from_minibatch"):
      config.loss[key] = cfg[key]
    config.optimizer.update(learning_rate=cfg["lr"], b1=cfg["beta1"], b2=cfg["beta2"],
                            eps=cfg["adam_eps"])
    self.image_shape = (cfg["image_size"], cfg["image_size"], cfg["input_nc"])

  def modules(self, dtype) -> cut.CUTModules:
    return cut.build_modules(self.config.model, dtype)

  def params(self, dtype, prefix: str = "params/") -> dict:
    """Our params of all three networks from `prefix` + official names, cast to dtype."""
    shapes = jax.eval_shape(
        lambda: cut.init_params(self.modules(dtype), jax.random.key(0), self.image_shape))
    params = {}
    for ours, theirs in NETWORKS.items():
      start = f"{prefix}{theirs}."
      state = {k[len(start):]: v for k, v in self.data.items() if k.startswith(start)}
      params[ours] = convert_cut.import_state_dict(state, shapes[ours], f"{prefix}{theirs}")
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)

  def inputs(self, dtype) -> tuple[jax.Array, jax.Array]:
    return tuple(jnp.asarray(self.data[f"inputs/{n}"].transpose(0, 2, 3, 1), dtype)
                 for n in ("real_A", "real_B"))

  def patch_ids(self) -> dict[str, list[jax.Array]]:
    return {term: [jnp.asarray(self.data[f"patch_ids/{term}/{i}"], jnp.int32)
                   for i in range(len(self.cfg["nce_layers"]))]
            for term in ("nce", "nce_idt")}


def nchw(x) -> np.ndarray:
  return np.asarray(x).transpose(0, 3, 1, 2)


def official_names(tree: dict, group: str) -> dict[str, np.ndarray]:
  """{"generator": params-like, ...} -> {"<group>/netG.<official name>": array (PyTorch layout)}."""
  return {f"{group}/{NETWORKS[net]}.{name}": value for net in tree
          for name, value in convert_cut.export_params(tree[net]).items()}


# {"d_step": masks, "g_step": masks}: for every ReLU / LeakyReLU call of the
# step's gradient computation, in call order, where its input is on the
# identity side (bool, the input's shape).
ActivationPattern = dict[str, list[np.ndarray]]


@contextlib.contextmanager
def activations_on_pattern(masks: list, replay: bool):
  """Within it, `nn.relu` and `nn.leaky_relu` (G, F, D) record or replay their masks.

  Recording appends `x > 0` (ReLU) or `x >= 0` (LeakyReLU), the sides that
  `jax.nn.relu` / `jax.nn.leaky_relu` and their derivatives take, and computes
  the same values; replaying takes the next mask of `masks` instead, so the
  function and its derivative are those of that activation pattern.
  """

  def select(x, mask, negative):
    if replay:
      mask = masks.pop(0)
      assert mask.shape == x.shape, ("activation pattern of another computation", mask.shape)
    else:
      masks.append(mask)
    return jnp.where(mask, x, negative)

  with (mock.patch.object(nn, "relu", lambda x: select(x, x > 0, 0.0)),
        mock.patch.object(nn, "leaky_relu",
                          lambda x, negative_slope: select(x, x >= 0, negative_slope * x))):
    yield


def value_and_grad_on_pattern(loss_fn, static_argnums, pattern: list[np.ndarray] | None = None):
  """`jit(value_and_grad(loss_fn, has_aux=True))` that also returns its activation pattern.

  Without `pattern` the run records its own; with it, it runs on that pattern
  (and returns it).
  """

  def run(*args):
    masks = [] if pattern is None else list(pattern)
    with activations_on_pattern(masks, replay=pattern is not None):
      value, grads = jax.value_and_grad(loss_fn, has_aux=True)(*args)
    if pattern is not None:
      assert not masks, "activation pattern of another computation: masks left over"
    return value, grads, masks

  def run_and_pattern(*args):
    value, grads, masks = jax.jit(run, static_argnums=static_argnums)(*args)
    return value, grads, [np.asarray(m) for m in (masks if pattern is None else pattern)]

  return run_and_pattern



def step_gradients(fixture: Fixture, dtype, d_after_step=None,
                   patterns: ActivationPattern | None = None):
  """Our D-step and G-step gradients, on `patterns` or recording theirs.

  Args:
    d_after_step: D's gradients -> the D that the G step runs against; default:
      the reference's float64 updated D cast to `dtype` (rule 2).
  Returns:
    ((d_aux, d_grads), (g_aux, gf_grads), the activation pattern).
  """
  patterns = patterns or {}
  modules, config = fixture.modules(dtype), fixture.config
  loss_config = ml_collections.FrozenConfigDict(config.loss)  # hashable: a static argument
  params = fixture.params(dtype)
  real_a, real_b = fixture.inputs(dtype)
  fake_b, _ = jax.jit(losses_cut.translate, static_argnums=(3, 4))(
      params["generator"], real_a, real_b, modules, loss_config)
  (_, d_aux), d_grads, d_pattern = value_and_grad_on_pattern(
      losses_cut.discriminator_loss, 3, patterns.get("d_step"))(
          params["discriminator"], fake_b, real_b, modules)
  if d_after_step is None:
    d_after = fixture.params(dtype, "params_after_step/")["discriminator"]
  else:
    d_after = d_after_step(d_grads)
  gf_params = {k: params[k] for k in ("generator", "patch_sampler")}
  (_, g_aux), gf_grads, g_pattern = value_and_grad_on_pattern(
      losses_cut.generator_loss, (5, 6), patterns.get("g_step"))(
          gf_params, d_after, real_a, real_b, fixture.patch_ids(), modules, loss_config)
  return (d_aux, d_grads), (g_aux, gf_grads), {"d_step": d_pattern, "g_step": g_pattern}


def run_ours(fixture: Fixture, dtype) -> tuple[dict[str, np.ndarray], ActivationPattern]:
  """Our value for every result key of the fixture, and the run's activation pattern.

  float64 (needs jax.enable_x64) is the official step end to end; float32
  follows rule 2 (the G step against the reference's float64 updated D).
  """
  config = fixture.config
  params = fixture.params(dtype)
  optimizer = losses_cut.make_optimizer(config.optimizer)

  def adam_step_of_d(d_grads):
    d_updates, _ = optimizer.update(d_grads, optimizer.init(params["discriminator"]),
                                    params["discriminator"])
    return optax.apply_updates(params["discriminator"], d_updates)

  float64 = jnp.dtype(dtype) == jnp.float64
  (d_aux, d_grads), (g_aux, gf_grads), patterns = step_gradients(
      fixture, dtype, adam_step_of_d if float64 else None)
  gf_params = {k: params[k] for k in ("generator", "patch_sampler")}
  outputs = g_aux["outputs"]
  results = {"outputs/fake_B": nchw(outputs["fake_B"]), "outputs/idt_B": nchw(outputs["idt_B"]),
             "outputs/d_step/pred_fake": nchw(d_aux["outputs"]["pred_fake"]),
             "outputs/d_step/pred_real": nchw(d_aux["outputs"]["pred_real"]),
             "outputs/g_step/pred_fake": nchw(outputs["pred_fake"])}
  for term in ("nce", "nce_idt"):
    for part in ("feat_k", "feat_q"):
      for i, value in enumerate(outputs[term][part]):
        results[f"outputs/{term}/{part}/{i}"] = np.asarray(value)
  for name, value in {**d_aux["losses"], **g_aux["losses"]}.items():
    results[f"losses/{name}"] = np.asarray(value)
  results.update(official_names({**gf_grads, "discriminator": d_grads}, "grads"))

  if float64:  # the whole official step, end to end
    real_a, real_b = fixture.inputs(dtype)
    modules = fixture.modules(dtype)
    loss_config = ml_collections.FrozenConfigDict(config.loss)
    opt_states = {"gf": optimizer.init(gf_params), "d": optimizer.init(params["discriminator"])}
    after, _, _ = jax.jit(losses_cut.train_step, static_argnums=(5, 6, 7))(
        params, opt_states, real_a, real_b, fixture.patch_ids(), modules, loss_config,
        optimizer)
  else:
    gf_updates, _ = optimizer.update(gf_grads, optimizer.init(gf_params), gf_params)
    d_updates, _ = optimizer.update(d_grads, optimizer.init(params["discriminator"]),
                                    params["discriminator"])
    after = {**optax.apply_updates(gf_params, gf_updates),
             "discriminator": optax.apply_updates(params["discriminator"], d_updates)}
  results.update(official_names(after, "params_after_step"))
  return results, patterns


def float32_pattern_correction(fixture: Fixture, pattern32: ActivationPattern
                               ) -> tuple[dict[str, np.ndarray], int]:
  """What our float32 run's activation pattern changes in the float64 gradients.

  Returns ({"grads/<net>.<name>": ours64 on `pattern32` - ours64}, the number of
  activations on the other side of their kink than in float64). Both float64
  runs follow rule 2, so the correction is exactly 0 where no activation flipped.
  """
  with jax.enable_x64(True):
    (_, d64), (_, gf64), pattern64 = step_gradients(fixture, jnp.float64)
    (_, d_on32), (_, gf_on32), _ = step_gradients(fixture, jnp.float64, patterns=pattern32)
  flipped = sum(int(np.sum(a != b)) for step in pattern64
                for a, b in zip(pattern64[step], pattern32[step], strict=True))
  plain = official_names({**gf64, "discriminator": d64}, "grads")
  on32 = official_names({**gf_on32, "discriminator": d_on32}, "grads")
  return {k: on32[k] - plain[k] for k in plain}, flipped


def result_keys(fixture: Fixture) -> list[str]:
  return [k for k in fixture.data
          if k.split("/")[0] in ("outputs", "losses", "grads", "params_after_step")]


def float64_tolerance(fixture: Fixture, key: str) -> float:
  group, name = key.split("/", 1)
  if name in fixture.cfg["zero_gradient_params"]:
    if group == "grads":
      return 1e-9
    if group == "params_after_step":
      return fixture.cfg["lr"] * 1e-9 / fixture.cfg["adam_eps"]
  return 1e-10 * float(np.max(np.abs(fixture.data[key]))) + 1e-12


def float32_tolerance(fixture: Fixture, key: str) -> float:
  return (10 * float(fixture.data[f"f32_error/{key}"])
          + 1e-6 * float(np.max(np.abs(fixture.data[key]))))


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def fixture(request):
  return Fixture(request.param)


@pytest.fixture(scope="module")
def ours64(fixture):
  with jax.enable_x64(True):
    return run_ours(fixture, jnp.float64)[0]


@pytest.fixture(scope="module")
def ours32_and_pattern(fixture):
  with jax.default_matmul_precision("highest"):
    return run_ours(fixture, jnp.float32)


@pytest.fixture(scope="module")
def ours32(ours32_and_pattern):
  return ours32_and_pattern[0]


@pytest.fixture(scope="module")
def pattern_correction(fixture, ours32_and_pattern):
  """`float32_pattern_correction` of our float32 run (rule 2 of the module docstring)."""
  return float32_pattern_correction(fixture, ours32_and_pattern[1])


def comparison_failures(ours, fixture, keys, tolerance, correction=None) -> list[str]:
  """One line per key of `keys` where `ours` is further from the fixture than its tolerance.

  correction: {key: array} added to the reference first (our float32 run's
  activation pattern, rule 2), or None.
  """
  failures = []
  for key in keys:
    ref = fixture.data[key]
    assert ours[key].shape == ref.shape, (key, ours[key].shape, ref.shape)
    if correction and key in correction:
      ref = ref + correction[key]
    err = float(np.max(np.abs(ours[key].astype(np.float64) - ref)))
    if not err <= tolerance(fixture, key):
      failures.append(f"{key}: max error {err:.3g} > tolerance {tolerance(fixture, key):.3g}")
  return failures


def optimizer_step_failures(fixture, ours32, correction) -> tuple[list[str], int]:
  """Rule 3's check of our float32 parameters after the step: (failures, elements checked).

  At t = 1 Adam moves by `lr * g / (|g| + eps)`; checked where |g| is above
  float32 noise. In float32, beta2 = 0.999 rounds so that `1 - beta2` in the
  bias correction is 1.3e-5 (relative) off the `1 - beta2` of the second
  moment: every float32 step (PyTorch's as ours) is ~6e-6 relative off the
  float64 one. A gradient element that our float32 activation pattern shifts
  (rule 2, `correction`) is allowed that shift.
  """
  lr, eps, beta2 = fixture.cfg["lr"], fixture.cfg["adam_eps"], fixture.cfg["beta2"]
  beta2_rounding = abs((1 - float(np.float32(beta2))) / (1 - beta2) - 1)
  failures, checked = [], 0
  for key in result_keys(fixture):
    if not key.startswith("params_after_step/"):
      continue
    grad_key = "grads/" + key.split("/", 1)[1]
    grad = fixture.data[grad_key]
    grad_tol = float32_tolerance(fixture, grad_key) + np.abs(correction[grad_key])
    mask = np.abs(grad) > 100 * float(fixture.data[f"f32_error/{grad_key}"])
    tol = (lr * grad_tol / (np.abs(grad) + eps) + lr * beta2_rounding
           + 1e-6 * float(np.max(np.abs(fixture.data[key]))))
    err = np.abs(ours32[key].astype(np.float64) - fixture.data[key])
    checked += int(mask.sum())
    bad = mask & (err > tol)
    if bad.any():
      failures.append(f"{key}: {bad.sum()} of {mask.sum()} checked elements off, "
                      f"max error {err[bad].max():.3g}")
  return failures, checked


def test_every_result_key_is_computed(fixture, ours64):
  assert set(result_keys(fixture)) == set(ours64)


def test_float64_matches_reference(fixture, ours64):
  """Rule 1: outputs, losses, gradients and parameters after the official step, ~1e-10 relative."""
  failures = comparison_failures(ours64, fixture, result_keys(fixture), float64_tolerance)
  assert not failures, "\n".join(failures)


def test_float32_matches_reference(fixture, ours32, pattern_correction):
  """Rule 2: float32 outputs, losses and gradients within 10x the reference's own float32 noise.

  Gradients on our float32 run's activation pattern (rule 2 of the module docstring).
  """
  correction, flipped = pattern_correction
  keys = [k for k in result_keys(fixture) if not k.startswith("params_after_step/")]
  failures = comparison_failures(ours32, fixture, keys, float32_tolerance, correction)
  assert not failures, "\n".join(
      [f"{flipped} activations on the other side of their kink than in float64", *failures])


def test_float32_optimizer_step_matches_where_the_sign_is_defined(fixture, ours32,
                                                                   pattern_correction):
  """Rule 3 (`optimizer_step_failures`)."""
  failures, _ = optimizer_step_failures(fixture, ours32, pattern_correction[0])
  assert not failures, "\n".join(failures)


def test_adam_from_stored_gradients(fixture):
  """Our optax Adam on the stored float64 gradients gives the stored updated parameters."""
  with jax.enable_x64(True):
    optimizer = losses_cut.make_optimizer(fixture.config.optimizer)
    for key in result_keys(fixture):
      if not key.startswith("params_after_step/"):
        continue
      name = key.split("/", 1)[1]
      params = jnp.asarray(fixture.data[f"params/{name}"], jnp.float64)
      grads = jnp.asarray(fixture.data[f"grads/{name}"], jnp.float64)
      updates, _ = optimizer.update(grads, optimizer.init(params), params)
      np.testing.assert_allclose(np.asarray(params + updates), fixture.data[key],
                                 rtol=0, atol=1e-12, err_msg=name)


def test_official_generator_checkpoint_round_trip(fixture, tmp_path):
  """A latest_net_G.pth (netG.state_dict() via torch.save) converts to our generator and back."""
  torch = pytest.importorskip("torch")
  state = {k.split(".", 1)[1]: fixture.data[k] for k in fixture.data
           if k.startswith(("params/netG.", "buffers/netG."))}
  path = tmp_path / "latest_net_G.pth"
  torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
  params = convert_cut.load_generator_checkpoint(path, fixture.config.model)
  exported = convert_cut.export_params(params)
  assert set(exported) == {k for k in state if not k.endswith(".filt")}
  for name, value in exported.items():
    np.testing.assert_array_equal(value, state[name], err_msg=name)
  with jax.enable_x64(True):
    real_a, _ = fixture.inputs(jnp.float64)
    fake_b = fixture.modules(jnp.float64).generator.apply(
        {"params": jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)}, real_a)
  np.testing.assert_allclose(nchw(fake_b), fixture.data["outputs/fake_B"], rtol=0,
                             atol=float64_tolerance(fixture, "outputs/fake_B"))


def test_checkpoint_of_another_architecture_is_refused(fixture, tmp_path):
  torch = pytest.importorskip("torch")
  state = {k.split(".", 1)[1]: torch.from_numpy(fixture.data[k]) for k in fixture.data
           if k.startswith(("params/netG.", "buffers/netG."))}
  path = tmp_path / "latest_net_G.pth"
  torch.save(state, path)
  config = fixture.config.model
  config.n_blocks += 1
  extra_block = f"model.{12 + config.n_blocks - 1}.conv_block.1.weight"
  with pytest.raises(torch_layout.ConversionError, match=f"missing parameter '{extra_block}'"):
    convert_cut.load_generator_checkpoint(path, config)
