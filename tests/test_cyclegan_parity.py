"""Parity with the official CycleGAN code on every `cyclegan_*.npz` in $I2I_CYCLEGAN_REFERENCE_DIR.

Each fixture (default: tests/fixtures) holds the official code's own results of
one training step (forward, G step, D step on the pooled fakes;
tools/make_cyclegan_reference.py, docs/cyclegan.md) in float64 and float32,
with empty image pools, which return their inputs. Our networks are built from
the fixture's `config_json` and loaded with its weights through the CUT
checkpoint converter (the same official module names and layouts). The
comparison rules are those of ../shared/reference/README.md and
tests/test_cut_parity.py, whose activation-pattern helpers this test uses:
1. float64: every result within 1e-10 * max|ref| + 1e-12, except the conv
   biases before an instance norm, whose true gradient is 0: their gradients
   within 1e-9 absolute, their updated values within lr * 1e-9 / eps;
2. float32: outputs, losses, gradients within 10 * f32_error + 1e-6 * max|ref|,
   gradients on our float32 run's ReLU / LeakyReLU pattern (a kink input
   within float32 noise of 0 may flip sides, see tests/test_cut_parity.py).
   Both official steps start from the initial weights (the D step sees the
   fakes of the generators before their update), so no float32 quantity
   inherits the sign noise of another float32 Adam step;
3. float32 updated parameters where Adam's direction is above the noise.
"""

import contextlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import test_cut_parity as cut_parity
from i2i_jax import convert_cut
from i2i_jax import losses_cut
from i2i_jax import losses_cyclegan
from i2i_jax.configs import cyclegan as cyclegan_config

FIXTURE_DIR = pathlib.Path(os.environ.get(
    "I2I_CYCLEGAN_REFERENCE_DIR", pathlib.Path(__file__).resolve().parent / "fixtures"))
FIXTURES = sorted(FIXTURE_DIR.glob("cyclegan_*.npz"))
# Our network -> the official one's name prefix in the fixture.
NETWORKS = {"generator": "netG_A", "inverse_generator": "netG_B",
            "target_discriminator": "netD_A", "source_discriminator": "netD_B"}
IMAGES = ("fake_B", "rec_A", "fake_A", "rec_B", "idt_A", "idt_B")


def test_cyclegan_fixtures_are_found():
  assert FIXTURES, (f"no cyclegan_*.npz fixture in {FIXTURE_DIR}; set "
                    "I2I_CYCLEGAN_REFERENCE_DIR (tools/make_cyclegan_reference.py writes them)")


class Fixture:
  """One fixture: its arrays, our config for it, and its values in our layouts."""

  def __init__(self, path: pathlib.Path):
    with np.load(path) as f:
      self.data = {k: f[k] for k in f.files}
    self.cfg = cfg = json.loads(str(self.data["config_json"]))
    fixed = {"model": "cycle_gan", "netD": "basic", "norm": "instance", "no_dropout": True,
             "init_type": "normal", "init_gain": 0.02, "gan_mode": "lsgan",
             "lr_policy": "linear"}
    assert {k: cfg[k] for k in fixed} == fixed, f"{path.name}: not what our CycleGAN implements"
    self.config = config = cyclegan_config.get_config()
    for key in ("input_nc", "output_nc", "ngf", "ndf", "n_blocks", "n_layers_D", "pool_size"):
      config.model[key] = cfg[key]
    for key in ("lambda_A", "lambda_B", "lambda_identity"):
      config.loss[key] = cfg[key]
    config.optimizer.update(learning_rate=cfg["lr"], b1=cfg["beta1"], b2=cfg["beta2"],
                            eps=cfg["adam_eps"], n_epochs=cfg["n_epochs"],
                            n_epochs_decay=cfg["n_epochs_decay"], epoch_count=cfg["epoch_count"])
    self.image_shape = (cfg["image_size"], cfg["image_size"], cfg["input_nc"])
    self.loss_config = ml_collections.FrozenConfigDict(config.loss)  # hashable: static

  def modules(self, dtype) -> losses_cyclegan.CycleGANModules:
    return losses_cyclegan.build_modules(self.config.model, dtype)

  def params(self, dtype) -> dict:
    """Our params of the four networks from the fixture's `params/<official name>`, as dtype."""
    shapes = jax.eval_shape(lambda: losses_cyclegan.init_params(
        self.modules(dtype), jax.random.key(0), self.image_shape))
    params = {}
    for ours, theirs in NETWORKS.items():
      start = f"params/{theirs}."
      state = {k[len(start):]: v for k, v in self.data.items() if k.startswith(start)}
      params[ours] = convert_cut.import_state_dict(state, shapes[ours], f"params/{theirs}")
    return jax.tree.map(lambda x: jnp.asarray(x, dtype), params)

  def inputs(self, dtype) -> tuple[jax.Array, jax.Array]:
    return tuple(jnp.asarray(self.data[f"inputs/{n}"].transpose(0, 2, 3, 1), dtype)
                 for n in ("real_A", "real_B"))

  def empty_pools(self, dtype) -> dict[str, losses_cyclegan.ImagePool]:
    pool = losses_cyclegan.empty_pool(self.cfg["pool_size"], self.image_shape, dtype)
    return {"fake_B": pool, "fake_A": pool}

  def optimizer(self) -> optax.GradientTransformation:
    return losses_cut.make_optimizer(self.config.optimizer, stepped_at_epoch_start=True)


def official_names(tree: dict, group: str) -> dict[str, np.ndarray]:
  """{"generator": params-like, ...} -> {"<group>/netG_A.<official name>": PyTorch-layout array}."""
  return {f"{group}/{NETWORKS[net]}.{name}": value for net in tree
          for name, value in convert_cut.export_params(tree[net]).items()}


def split(params: dict) -> tuple[dict, dict]:
  return ({k: params[k] for k in losses_cyclegan.GENERATORS},
          {k: params[k] for k in losses_cyclegan.DISCRIMINATORS})


def step_gradients(fixture: Fixture, dtype, patterns: dict | None = None):
  """Our G-step and D-step gradients and outputs, on `patterns` or recording theirs.

  Returns:
    ((g_aux, g_grads), (pooled {"fake_B", "fake_A"}, d_aux, d_grads), the
    activation pattern {"g_step": masks, "d_step": masks}).
  """
  patterns = patterns or {}
  modules = fixture.modules(dtype)
  g_params, d_params = split(fixture.params(dtype))
  real_a, real_b = fixture.inputs(dtype)
  (_, g_aux), g_grads, g_pattern = cut_parity.value_and_grad_on_pattern(
      losses_cyclegan.generator_loss, (4, 5), patterns.get("g_step"))(
          g_params, d_params, real_a, real_b, modules, fixture.loss_config)
  pools, pooled = fixture.empty_pools(dtype), {}
  for name, key in zip(("fake_B", "fake_A"), jax.random.split(jax.random.key(0))):
    _, pooled[name] = losses_cyclegan.query_pool(pools[name], g_aux["outputs"][name], key)
  (_, d_aux), d_grads, d_pattern = cut_parity.value_and_grad_on_pattern(
      losses_cyclegan.discriminators_loss, 5, patterns.get("d_step"))(
          d_params, real_a, real_b, pooled["fake_A"], pooled["fake_B"], modules)
  return (g_aux, g_grads), (pooled, d_aux, d_grads), {"g_step": g_pattern, "d_step": d_pattern}


def run_ours(fixture: Fixture, dtype) -> tuple[dict[str, np.ndarray], dict]:
  """Our value for every result key of the fixture, and the run's activation pattern.

  float64 (needs jax.enable_x64) runs `losses_cyclegan.train_step` end to end
  for the updated parameters; float32 applies Adam to its own gradients.
  """
  params = fixture.params(dtype)
  optimizer = fixture.optimizer()
  (g_aux, g_grads), (pooled, d_aux, d_grads), patterns = step_gradients(fixture, dtype)
  outputs, d_outputs = g_aux["outputs"], d_aux["outputs"]
  results = {f"outputs/{name}": cut_parity.nchw(outputs[name]) for name in IMAGES}
  results.update({
      "outputs/g_step/pred_fake_B": cut_parity.nchw(outputs["pred_fake_B"]),
      "outputs/g_step/pred_fake_A": cut_parity.nchw(outputs["pred_fake_A"]),
      **{f"outputs/pool/{name}": cut_parity.nchw(pooled[name]) for name in pooled},
      **{f"outputs/d_step/{d}/{p}": cut_parity.nchw(d_outputs[d][p])
         for d in ("D_A", "D_B") for p in ("pred_real", "pred_fake")}})
  for name, value in {**g_aux["losses"], **d_aux["losses"]}.items():
    if name != "D":  # D_A + D_B: the official code has no such loss
      results[f"losses/{name}"] = np.asarray(value)
  results.update(official_names({**g_grads, **d_grads}, "grads"))

  if jnp.dtype(dtype) == jnp.float64:  # the whole official step, end to end
    real_a, real_b = fixture.inputs(dtype)
    g_params, d_params = split(params)
    opt_states = {"g": optimizer.init(g_params), "d": optimizer.init(d_params)}
    after, _, _, losses = jax.jit(losses_cyclegan.train_step, static_argnums=(6, 7, 8))(
        params, opt_states, fixture.empty_pools(dtype), real_a, real_b, jax.random.key(0),
        fixture.modules(dtype), fixture.loss_config, optimizer)
    for name, value in losses.items():  # the step's own losses are those above
      np.testing.assert_allclose(value, results.get(f"losses/{name}", value), rtol=1e-12,
                                 err_msg=name)
  else:
    after = {}
    for group, grads in (("g", g_grads), ("d", d_grads)):
      group_params = {k: params[k] for k in grads}
      updates, _ = optimizer.update(grads, optimizer.init(group_params), group_params)
      after.update(optax.apply_updates(group_params, updates))
  results.update(official_names(after, "params_after_step"))
  return results, patterns


@contextlib.contextmanager
def float64_run():
  """float64 (`jax.enable_x64`), compiled without most XLA optimisations.

  The float64 runs check the mathematics, not float32 rounding, and compile in
  about half the time so (this machine: 2 shared cores).
  """
  optimised = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    with jax.enable_x64(True):
      yield
  finally:
    jax.config.update("jax_disable_most_optimizations", optimised)


def float32_pattern_correction(fixture: Fixture, ours64: dict[str, np.ndarray], pattern64: dict,
                               pattern32: dict) -> tuple[dict, int]:
  """({"grads/<net>.<name>": ours64 on our float32 pattern - ours64}, activations flipped).

  `ours64`, `pattern64`: `run_ours` in float64. Exactly 0 where no activation
  is on another side of its kink than in float64.
  """
  flipped = sum(int(np.sum(a != b)) for step in pattern64
                for a, b in zip(pattern64[step], pattern32[step], strict=True))
  if not flipped:
    return {k: np.zeros_like(v) for k, v in ours64.items() if k.startswith("grads/")}, 0
  with float64_run():
    (_, g_on32), (_, _, d_on32), _ = step_gradients(fixture, jnp.float64, pattern32)
  on32 = official_names({**g_on32, **d_on32}, "grads")
  return {k: on32[k] - ours64[k] for k in on32}, flipped


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def fixture(request):
  return Fixture(request.param)


@pytest.fixture(scope="module")
def ours64_and_pattern(fixture):
  with float64_run():
    return run_ours(fixture, jnp.float64)


@pytest.fixture(scope="module")
def ours64(ours64_and_pattern):
  return ours64_and_pattern[0]


@pytest.fixture(scope="module")
def ours32_and_pattern(fixture):
  with jax.default_matmul_precision("highest"):
    return run_ours(fixture, jnp.float32)


@pytest.fixture(scope="module")
def pattern_correction(fixture, ours64_and_pattern, ours32_and_pattern):
  return float32_pattern_correction(fixture, *ours64_and_pattern, ours32_and_pattern[1])


def test_every_result_key_is_computed(fixture, ours64):
  assert set(cut_parity.result_keys(fixture)) == set(ours64)


def test_float64_matches_reference(fixture, ours64):
  """Rule 1: outputs, losses, gradients and parameters after the official step, ~1e-10 relative."""
  failures = cut_parity.comparison_failures(ours64, fixture, cut_parity.result_keys(fixture),
                                            cut_parity.float64_tolerance)
  assert not failures, "\n".join(failures)


def test_float32_matches_reference(fixture, ours32_and_pattern, pattern_correction):
  """Rule 2: float32 outputs, losses and gradients within 10x the reference's own float32 noise."""
  correction, flipped = pattern_correction
  keys = [k for k in cut_parity.result_keys(fixture) if not k.startswith("params_after_step/")]
  failures = cut_parity.comparison_failures(ours32_and_pattern[0], fixture, keys,
                                            cut_parity.float32_tolerance, correction)
  assert not failures, "\n".join(
      [f"{flipped} activations on the other side of their kink than in float64", *failures])


def test_float32_optimizer_step_matches_where_the_sign_is_defined(fixture, ours32_and_pattern,
                                                                   pattern_correction):
  """Rule 3 (test_cut_parity.optimizer_step_failures), on nearly every updated parameter."""
  failures, checked = cut_parity.optimizer_step_failures(fixture, ours32_and_pattern[0],
                                                         pattern_correction[0])
  assert not failures, "\n".join(failures)
  assert checked > 0.9 * sum(fixture.data[k].size for k in cut_parity.result_keys(fixture)
                             if k.startswith("params_after_step/"))


def test_adam_from_stored_gradients(fixture):
  """Our Adam (with the junyanz schedule) on the stored float64 gradients makes the stored step."""
  names = [k.split("/", 1)[1] for k in cut_parity.result_keys(fixture)
           if k.startswith("params_after_step/")]
  optimizer = fixture.optimizer()

  @jax.jit
  def adam_step(params, grads):
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return optax.apply_updates(params, updates)

  with jax.enable_x64(True):
    after = adam_step(*({name: jnp.asarray(fixture.data[f"{group}/{name}"], jnp.float64)
                         for name in names} for group in ("params", "grads")))
  for name in names:
    np.testing.assert_allclose(np.asarray(after[name]), fixture.data[f"params_after_step/{name}"],
                               rtol=0, atol=1e-12, err_msg=name)


def test_initialisation_is_the_official_distribution(fixture):
  """init_weights(normal, 0.02): every kernel N(0, 0.02), every bias 0, as the fixture's weights."""
  # An "rbg" key: its generator compiles in a fraction of threefry's time; the
  # distribution is the same.
  ours = jax.jit(losses_cyclegan.init_params, static_argnums=(0, 2))(
      fixture.modules(jnp.float32), jax.random.key(1, impl="rbg"), fixture.image_shape)
  theirs = fixture.params(jnp.float32)
  for tree in (ours, theirs):
    kernels = np.concatenate([np.ravel(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
                              if path[-1].key == "kernel"])
    biases = [x for path, x in jax.tree_util.tree_leaves_with_path(tree) if path[-1].key == "bias"]
    assert abs(np.std(kernels) - 0.02) < 0.001 and abs(np.mean(kernels)) < 0.001
    assert all(not np.any(b) for b in biases)
