"""Parity with the official SRUNIT code on every `srunit_*.npz` in $I2I_SRUNIT_REFERENCE_DIR.

Each fixture (tools/make_srunit_reference.py, docs/srunit.md; default dir
tests/fixtures) holds one official `optimize_parameters(epoch)` with the
robustness loss on, in float64 and float32, and its draws (NCE positions,
robustness layer, noise, magnitudes, positions), which are fed to ours. The
comparison rules are tests/test_cut_parity.py's (whose fixture loader, activation
pattern replay and tolerances are used): float64 within ~1e-10 relative;
float32 outputs, losses and gradients within 10x the reference's own float32
error (gradients on our float32 activation pattern); float32 updated
parameters where Adam's direction is above the noise.
"""

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import test_cut_parity as cut_parity
from i2i_jax import losses_cut
from i2i_jax import losses_srunit
from i2i_jax.configs import srunit as srunit_config

FIXTURE_DIR = pathlib.Path(os.environ.get(
    "I2I_SRUNIT_REFERENCE_DIR", pathlib.Path(__file__).resolve().parent / "fixtures"))
FIXTURES = sorted(FIXTURE_DIR.glob("srunit_*.npz"))


def test_srunit_fixtures_are_found():
  assert FIXTURES, (f"no srunit_*.npz fixture in {FIXTURE_DIR}; set I2I_SRUNIT_REFERENCE_DIR "
                    "(tools/make_srunit_reference.py writes them)")


class Fixture(cut_parity.Fixture):
  """test_cut_parity's fixture with configs/srunit.py, SRUNIT's modules and draws."""

  def __init__(self, path: pathlib.Path):
    super().__init__(path)
    cfg, cut_config = self.cfg, self.config
    assert cfg["model"] == "srunit" and cfg["D_noise"] == 0, f"{path.name}: not SRUNIT's"
    self.config = config = srunit_config.get_config()
    for block in ("model", "loss", "optimizer"):
      config[block].update({k: v for k, v in cut_config[block].items()
                            if k not in ("family", "name")})
    config.loss.update(reg=cfg["reg"], reg_type=cfg["reg_type"], reg_noise=cfg["reg_noise"],
                       reg_layers=tuple(cfg["reg_layers"]), inact_epochs=cfg["inact_epochs"])

  def modules(self, dtype):
    return losses_srunit.build_modules(self.config.model, dtype)

  def robustness(self, dtype):
    """`losses_srunit.robustness_loss` on the fixture's layer and draws: (g, f, real_a) -> loss."""
    perturbation = {
        "offset": jnp.asarray(self.data["robustness/offset"].transpose(0, 2, 3, 1)),
        "magnitude": jnp.asarray(self.data["robustness/magnitude"].transpose(0, 2, 3, 1)),
        "patch_ids": jnp.asarray(self.data["robustness/patch_ids"], jnp.int32)}
    choice = int(self.data["robustness/choice"])
    return functools.partial(
        losses_srunit.robustness_loss, perturbations={choice: perturbation}, choice=choice,
        modules=self.modules(dtype),
        loss_config=ml_collections.FrozenConfigDict(self.config.loss))

  def objective(self, dtype):
    return functools.partial(losses_srunit.generator_loss, robustness=self.robustness(dtype),
                             robustness_weight=self.config.loss.reg)


def step_gradients(fixture: Fixture, dtype, d_after_step=None, patterns=None):
  """test_cut_parity.step_gradients with SRUNIT's G and F objective."""
  patterns = patterns or {}
  modules = fixture.modules(dtype)
  loss_config = ml_collections.FrozenConfigDict(fixture.config.loss)
  params = fixture.params(dtype)
  real_a, real_b = fixture.inputs(dtype)
  fake_b, _ = jax.jit(losses_cut.translate, static_argnums=(3, 4))(
      params["generator"], real_a, real_b, modules, loss_config)
  (_, d_aux), d_grads, d_pattern = cut_parity.value_and_grad_on_pattern(
      losses_cut.discriminator_loss, 3, patterns.get("d_step"))(
          params["discriminator"], fake_b, real_b, modules)
  if d_after_step is None:
    d_after = fixture.params(dtype, "params_after_step/")["discriminator"]
  else:
    d_after = d_after_step(d_grads)
  gf_params = {k: params[k] for k in ("generator", "patch_sampler")}
  (_, g_aux), gf_grads, g_pattern = cut_parity.value_and_grad_on_pattern(
      fixture.objective(dtype), (5, 6), patterns.get("g_step"))(
          gf_params, d_after, real_a, real_b, fixture.patch_ids(), modules, loss_config)
  return (d_aux, d_grads), (g_aux, gf_grads), {"d_step": d_pattern, "g_step": g_pattern}


def run_ours(fixture: Fixture, dtype):
  """Our value for every result key of the fixture, and the run's activation pattern."""
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
  nchw = cut_parity.nchw
  results = {"outputs/fake_B": nchw(outputs["fake_B"]), "outputs/idt_B": nchw(outputs["idt_B"]),
             "outputs/d_step/pred_fake": nchw(d_aux["outputs"]["pred_fake"]),
             "outputs/d_step/pred_real": nchw(d_aux["outputs"]["pred_real"]),
             "outputs/g_step/pred_fake": nchw(outputs["pred_fake"]),
             "outputs/reg/feat_k": np.asarray(outputs["reg"]["feat_k"][0]),
             "outputs/reg/feat_q": np.asarray(outputs["reg"]["feat_q"][0])}
  for term in ("nce", "nce_idt"):
    for part in ("feat_k", "feat_q"):
      for i, value in enumerate(outputs[term][part]):
        results[f"outputs/{term}/{part}/{i}"] = np.asarray(value)
  for name, value in {**d_aux["losses"], **g_aux["losses"]}.items():
    results[f"losses/{name}"] = np.asarray(value)
  results.update(cut_parity.official_names({**gf_grads, "discriminator": d_grads}, "grads"))

  if float64:  # the whole official step, end to end, through losses_cut.train_step
    real_a, real_b = fixture.inputs(dtype)
    opt_states = {"gf": optimizer.init(gf_params), "d": optimizer.init(params["discriminator"])}
    after, _, _ = jax.jit(losses_cut.train_step, static_argnums=(5, 6, 7, 8))(
        params, opt_states, real_a, real_b, fixture.patch_ids(), fixture.modules(dtype),
        ml_collections.FrozenConfigDict(config.loss), optimizer, fixture.objective(dtype))
  else:
    gf_updates, _ = optimizer.update(gf_grads, optimizer.init(gf_params), gf_params)
    d_updates, _ = optimizer.update(d_grads, optimizer.init(params["discriminator"]),
                                    params["discriminator"])
    after = {**optax.apply_updates(gf_params, gf_updates),
             "discriminator": optax.apply_updates(params["discriminator"], d_updates)}
  results.update(cut_parity.official_names(after, "params_after_step"))
  return results, patterns


def float32_pattern_correction(fixture: Fixture, pattern32):
  """test_cut_parity.float32_pattern_correction with SRUNIT's step."""
  with jax.enable_x64(True):
    (_, d64), (_, gf64), pattern64 = step_gradients(fixture, jnp.float64)
    (_, d_on32), (_, gf_on32), _ = step_gradients(fixture, jnp.float64, patterns=pattern32)
  flipped = sum(int(np.sum(a != b)) for step in pattern64
                for a, b in zip(pattern64[step], pattern32[step], strict=True))
  plain = cut_parity.official_names({**gf64, "discriminator": d64}, "grads")
  on32 = cut_parity.official_names({**gf_on32, "discriminator": d_on32}, "grads")
  return {k: on32[k] - plain[k] for k in plain}, flipped


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
  return float32_pattern_correction(fixture, ours32_and_pattern[1])


def test_every_result_key_is_computed(fixture, ours64):
  assert "losses/reg" in ours64 and "outputs/reg/feat_q" in ours64
  assert set(cut_parity.result_keys(fixture)) == set(ours64)


def test_float64_matches_reference(fixture, ours64):
  """Outputs, every loss (reg included), gradients and the updated parameters, ~1e-10 relative."""
  failures = cut_parity.comparison_failures(ours64, fixture, cut_parity.result_keys(fixture),
                                            cut_parity.float64_tolerance)
  assert not failures, "\n".join(failures)


def test_float32_matches_reference(fixture, ours32, pattern_correction):
  correction, flipped = pattern_correction
  keys = [k for k in cut_parity.result_keys(fixture) if not k.startswith("params_after_step/")]
  failures = cut_parity.comparison_failures(ours32, fixture, keys, cut_parity.float32_tolerance,
                                            correction)
  assert not failures, "\n".join(
      [f"{flipped} activations on the other side of their kink than in float64", *failures])


def test_float32_optimizer_step_matches_where_the_sign_is_defined(fixture, ours32,
                                                                   pattern_correction):
  failures, _ = cut_parity.optimizer_step_failures(fixture, ours32, pattern_correction[0])
  assert not failures, "\n".join(failures)


def test_robustness_term_reaches_the_generator_and_netf_gradients(fixture):
  """The reference's G and F gradients differ from those of CUT's loss alone (reg is in them)."""
  with jax.enable_x64(True):
    modules = fixture.modules(jnp.float64)
    loss_config = ml_collections.FrozenConfigDict(fixture.config.loss)
    params = fixture.params(jnp.float64)
    d_after = fixture.params(jnp.float64, "params_after_step/")["discriminator"]
    real_a, real_b = fixture.inputs(jnp.float64)
    gf_params = {k: params[k] for k in ("generator", "patch_sampler")}
    cut_grads = jax.grad(lambda p: losses_cut.generator_loss(
        p, d_after, real_a, real_b, fixture.patch_ids(), modules, loss_config)[0])(gf_params)
  differences = cut_parity.official_names(
      jax.tree.map(lambda a: np.asarray(a), cut_grads), "grads")
  gap = {k: float(np.max(np.abs(v - fixture.data[k]))) for k, v in differences.items()}
  assert max(v for k, v in gap.items() if k.startswith("grads/netG.")) > 1e-8
  assert max(v for k, v in gap.items() if k.startswith("grads/netF.")) > 1e-8
