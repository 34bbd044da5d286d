"""Parity with the official PyTorch VSAIT on every fixture in $I2I_REFERENCE_DIR.

Each fixture holds the reference's own results for one forward pass and one
training batch (G step, then D step), in float64 and float32; the comparison
rules are those of `../shared/reference/README.md`. The model is built from the
fixture's `config_json` and its stored parameters, so any fixture of the format
(other sizes, block counts, widths) is checked the same way.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_fixtures as rf
from i2i_jax.families import vsait as vsait_family

FIXTURES = rf.fixture_paths()


def test_reference_fixtures_are_found():
  assert FIXTURES, (f"no *.npz fixture in {rf.REFERENCE_DIR}; set I2I_REFERENCE_DIR to the "
                    "directory holding the reference fixtures")


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def fixture(request):
  return rf.Fixture(request.param)


@pytest.fixture(scope="module")
def ours64(fixture):
  with jax.enable_x64(True):
    return rf.run_ours(fixture, jnp.float64)


@pytest.fixture(scope="module")
def ours32(fixture):
  with jax.default_matmul_precision("highest"):
    return rf.run_ours(fixture, jnp.float32)


def _errors(ours, fixture, keys, tolerance):
  failures = []
  for key in keys:
    ref = fixture.data[key]
    assert ours[key].shape == ref.shape, (key, ours[key].shape, ref.shape)
    err = float(np.max(np.abs(ours[key].astype(np.float64) - ref)))
    if not err <= tolerance(fixture, key):
      failures.append(f"{key}: max error {err:.3g} > tolerance {tolerance(fixture, key):.3g}")
  return failures


def test_every_result_key_is_computed(fixture, ours64):
  assert set(rf.result_keys(fixture)) <= set(ours64)


def test_float64_matches_reference(fixture, ours64):
  """Rule 1: every output, loss, gradient and updated parameter within ~1e-9 relative."""
  failures = _errors(ours64, fixture, rf.result_keys(fixture), rf.float64_tolerance)
  assert not failures, "\n".join(failures)


def test_float32_matches_reference(fixture, ours32):
  """Rule 2: float32 outputs, losses and gradients within 10x the reference's own float32 noise.

  The D-step quantities come from a D step that starts at the reference's float64
  updated generator and map network (rule 2's exception, see `rf.run_ours`).
  """
  keys = [k for k in rf.result_keys(fixture) if not k.startswith("params_after_step/")]
  failures = _errors(ours32, fixture, keys, rf.float32_tolerance)
  assert not failures, "\n".join(failures)


def test_float32_optimizer_step_matches_where_the_sign_is_defined(fixture, ours32):
  """Rule 3: after one float32 step, parameters match where the Adam direction is above noise.

  At t = 1 Adam moves each element by `lr * g' / (|g'| + eps)` (g' = grad + wd *
  param); a gradient error `dg` (rule 2's bound) moves that by at most
  `lr * dg / (|g'| + eps)`, on top of float32 rounding of the parameter.
  """
  failures = []
  for key in rf.result_keys(fixture):
    if not key.startswith("params_after_step/"):
      continue
    name = key.split("/", 1)[1]
    group = "g" if name.startswith("g_net") else "d"
    opt = fixture.cfg["optimizers"][group]
    effective = (fixture.data[f"grads_{group}/{name}"]
                 + opt["weight_decay"] * fixture.data[f"params/{name}"].astype(np.float64))
    grad_tol = rf.float32_tolerance(fixture, f"grads_{group}/{name}")
    tol = (opt["lr"] * grad_tol / (np.abs(effective) + opt["eps"])
           + 1e-6 * float(np.max(np.abs(fixture.data[key]))))
    mask = rf.float32_step_mask(fixture, name)
    err = np.abs(ours32[key].astype(np.float64) - fixture.data[key])
    bad = mask & (err > tol)
    if bad.any():
      failures.append(f"{key}: {bad.sum()} of {mask.sum()} checked elements off, "
                      f"max error {err[bad].max():.3g}")
  assert not failures, "\n".join(failures)


def test_adam_from_stored_gradients(fixture):
  """Our optax Adam on the stored float64 gradients gives the stored updated parameters."""
  with jax.enable_x64(True):
    fns = vsait_family.make_step_functions(fixture.config)
    for key in rf.result_keys(fixture):
      if not key.startswith("params_after_step/"):
        continue
      name = key.split("/", 1)[1]
      is_g = name.startswith("g_net")
      optimizer = fns.g_optimizer if is_g else fns.d_optimizer
      params = jnp.asarray(fixture.data[f"params/{name}"], jnp.float64)
      grads = jnp.asarray(fixture.data[f"grads_{'g' if is_g else 'd'}/{name}"], jnp.float64)
      updates, _ = optimizer.update(grads, optimizer.init(params), params)
      np.testing.assert_allclose(np.asarray(params + updates), fixture.data[key],
                                 rtol=0, atol=1e-12, err_msg=name)
