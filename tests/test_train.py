"""The training loop and entry point: accumulation, resume, guards, preemption, CLI.

Loop tests run `train.train_and_evaluate` in-process on the 8 fake devices of
tests/conftest.py; entry-point tests run `python -m i2i_jax.train` in a
subprocess, as a user or a cluster would.
"""

import functools
import logging
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from i2i_jax.configs import tiny
from i2i_jax import checkpoint
from i2i_jax import compile_options
from i2i_jax import metric_writer
from i2i_jax import train
from i2i_jax.families import vsait as vsait_family
from i2i_jax.data import pipeline
from i2i_jax.models import vsait

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(total_steps=4):
  """tiny on 8 devices: one 16x16 image per device, a checkpoint every 2 steps."""
  config = tiny.get_config()
  config.total_steps = total_steps
  config.data.batch_size = 8
  config.data.preprocess = "resize(16,32)|random_crop(16,16)|flip_lr|value_range(-1,1)"
  config.log_images_every = 1000
  return config


def _parameter_count(network_variables):
  return sum(x.size for x in jax.tree.leaves(network_variables["params"]))


def _params(state):
  return jax.device_get(vsait_family.generator_params(state.variables)), jax.device_get(
      vsait_family.discriminator_params(state.variables))


def test_grad_accumulation_equals_one_large_batch():
  """2 micro-batches of 2 == one batch of 4 (float64: only summation order differs)."""
  with jax.enable_x64(True):
    config = _config()
    config.data.batch_size = 4
    config.compute_dtype = "float64"
    batch = next(pipeline.make_train_iterator(config.data, seed=0))
    batch = {k: jnp.asarray(batch[k], jnp.float64) for k in ("source", "target")}
    results = {}
    for accum in (1, 2):
      config.grad_accum_steps = accum
      fns = vsait_family.make_step_functions(config)
      variables = vsait.init_variables(fns.modules, jax.random.key(0), (16, 16))
      state = vsait_family.create_train_state(
          fns, jax.tree.map(lambda x: x.astype(jnp.float64), variables))
      step = jax.jit(functools.partial(vsait_family.train_step, fns=fns))
      state, _ = step(state, batch)
      state, metrics = step(state, batch)
      results[accum] = jax.device_get((state, metrics))
  (state_1, metrics_1), (state_2, metrics_2) = results[1], results[2]
  for name in metrics_1:
    np.testing.assert_allclose(metrics_2[name], metrics_1[name], rtol=1e-10, err_msg=name)
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_allclose(
          a, b, rtol=0, atol=1e-9, err_msg=jax.tree_util.keystr(path)),
      state_2, state_1)


def test_grad_accumulation_rejects_an_uneven_split():
  config = _config()
  config.grad_accum_steps = 3
  fns = vsait_family.make_step_functions(config)
  state = jax.eval_shape(lambda: vsait_family.create_train_state(
      fns, vsait.init_variables(fns.modules, jax.random.key(0), (16, 16))))
  batch = {k: jax.ShapeDtypeStruct((8, 16, 16, 3), jnp.float32) for k in ("source", "target")}
  with pytest.raises(ValueError, match="config.grad_accum_steps=3"):
    jax.eval_shape(functools.partial(vsait_family.train_step, fns=fns), state, batch)


def test_resume_is_bit_exact(tmp_path, caplog):
  """4 steps straight == 2 steps, a new process-like restart, 2 more (identical bits).

  Both runs log their parameter counts at the start, and the resumed run continues
  metrics.jsonl with the same losses as the straight one.
  """
  with caplog.at_level(logging.INFO):
    straight = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "straight"))
    train.train_and_evaluate(_config(total_steps=2), str(tmp_path / "resumed"))
    resumed = train.train_and_evaluate(_config(total_steps=4), str(tmp_path / "resumed"))
  overviews = [record.getMessage() for record in caplog.records
               if record.getMessage().startswith("trainable parameters:")]
  assert len(overviews) == 3 and overviews[0] == overviews[1] == overviews[2]
  counts = {line.split("|")[1].strip(): int(line.split("|")[2].replace(",", ""))
            for line in overviews[0].splitlines()[4:-1]}
  assert counts == {
      "generator": _parameter_count(straight.variables["generator"]),
      "map_net": _parameter_count(straight.variables["map_net"]),
      "discriminator": _parameter_count(straight.variables["discriminator"]),
      "total": sum(_parameter_count(straight.variables[name])
                   for name in ("generator", "map_net", "discriminator"))}
  straight_metrics, resumed_metrics = (
      metric_writer.read_metrics(tmp_path / run / metric_writer.METRICS_FILE)
      for run in ("straight", "resumed"))
  assert [r["step"] for r in straight_metrics] == [r["step"] for r in resumed_metrics] == [
      1, 2, 3, 4]

  def losses(record):
    return {k: v for k, v in record.items() if k != "wall_time" and not k.endswith("per_sec")}

  assert [losses(r) for r in resumed_metrics] == [losses(r) for r in straight_metrics]
  assert int(straight.step) == int(resumed.step) == 4
  jax.tree.map_with_path(
      lambda path, a, b: np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path)),
      jax.device_get(resumed), jax.device_get(straight))
  manager = checkpoint.make_manager(tmp_path / "resumed", read_only=True)
  assert manager.all_steps() == [1, 2, 4]
  assert (tmp_path / "straight" / "samples" / "step_00000004.png").exists()
  events = list((tmp_path / "straight" / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 0


def _detail_evaluator(every_steps):
  """A "detail" evaluator small enough for tests: 2 held-out toy scenes at 128x256."""
  return dict(type="detail", every_steps=every_steps, source="toy_streets:sim_detail:val",
              ideal="toy_streets:real_mismatch:val", num_images=2, height=128, width=256)


def test_evaluators_from_the_config_log_to_the_metrics_file(tmp_path):
  config = _config(total_steps=3)
  config.evals.detail = _detail_evaluator(every_steps=2)
  train.train_and_evaluate(config, str(tmp_path))
  records = metric_writer.read_metrics(tmp_path / metric_writer.METRICS_FILE)
  evaluations = [r for r in records if "eval/detail/retention" in r]
  # Every 2 steps and at the last one.
  assert [r["step"] for r in evaluations] == [2, 3]
  for record in evaluations:
    assert record["eval/detail/checked"] > 0
    assert 0 <= record["eval/detail/contrast"] <= 1
    assert record["eval/detail/ideal/checked"] == record["eval/detail/checked"]
  assert not any(k.startswith("eval/") for r in records if r not in evaluations for k in r)
  # The evaluation's picture at the evaluation size: two 128x256 scenes, X | F(X) | ideal, wide.
  pictures = sorted(p.name for p in (tmp_path / "samples").glob("eval_detail_step_*.png"))
  assert pictures == ["eval_detail_step_00000002.png", "eval_detail_step_00000003.png"]
  with Image.open(tmp_path / "samples" / pictures[-1]) as picture:
    assert picture.width >= 3 * 256 and picture.height >= 2 * 128


def test_a_profile_window_before_step_one_is_a_config_error(tmp_path):
  config = _config()
  config.profile_steps, config.profile_start_step = 2, 0
  with pytest.raises(train.ConfigError, match=r"config\.profile_start_step=0"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_an_unknown_evaluator_is_a_config_error_before_anything_is_written(tmp_path):
  config = _config()
  config.evals.sharp = dict(_detail_evaluator(every_steps=2), type="sharpness")
  with pytest.raises(train.ConfigError, match=r"config\.evals\.sharp\.type='sharpness'"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_and_saves_nothing_new(tmp_path):
  config = _config(total_steps=4)
  config.checkpoint.every_steps = 1
  # The learning rate is lr * factor ** (step // 1): finite at step 1 (nan ** 0
  # is 1), NaN from step 2 on, so step 2's G update poisons its D loss.
  config.optimizer.lr_decay_steps = 1
  config.optimizer.lr_decay_factor = float("nan")
  with pytest.raises(FloatingPointError,
                     match=r"non-finite loss at step 2: d_total=nan.*last checkpoint: step 1"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpoint.make_manager(tmp_path, read_only=True).all_steps() == [1]


def _truncate_largest_file(step_dir):
  """Cuts the largest array file of a saved state to 1000 bytes, as a full disk would."""
  largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  with open(largest, "r+b") as f:
    f.truncate(1000)


def _files(directory):
  return {str(p.relative_to(directory)): p.stat().st_size
          for p in directory.rglob("*") if p.is_file()}


def test_cpu_compiler_options_keep_what_xla_takes_and_name_what_it_refuses(caplog):
  """A refused option (another jaxlib's name or value) is left out with a warning naming it."""
  config = _config()
  assert compile_options.cpu_compiler_options(config) is None  # none by default
  config.cpu_compiler_options = dict(
      xla_cpu_experimental_ynn_fusion_type="LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
      xla_cpu_option_of_another_version=True, xla_cpu_use_xnnpack="sometimes")
  with caplog.at_level(logging.WARNING):
    assert compile_options.cpu_compiler_options(config) == dict(
        xla_cpu_experimental_ynn_fusion_type="LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 2
  assert warnings[0].startswith("config.cpu_compiler_options.xla_cpu_option_of_another_version")
  assert warnings[1].startswith("config.cpu_compiler_options.xla_cpu_use_xnnpack='sometimes'")
  del config.cpu_compiler_options  # a config file older than the key
  assert compile_options.cpu_compiler_options(config) is None


def test_format_duration_counts_days():
  assert train.format_duration(55 * 3600) == "2 days, 7:00:00"
  assert train.format_duration(21.4) == "0:00:21"


def test_finished_run_writes_nothing_and_a_damaged_checkpoint_is_skipped(tmp_path, caplog):
  """Image grids under a legal tag; a rerun of a finished run adds nothing; damage is set aside."""
  config = _config(total_steps=4)
  config.log_images_every = 2
  with caplog.at_level(logging.INFO):
    train.train_and_evaluate(config, str(tmp_path))
  assert "is illegal" not in caplog.text  # tensorboardX renaming the image tag
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert train.IMAGE_GRID_TAG.encode() in events[0].read_bytes()

  before = _files(tmp_path)
  caplog.clear()
  with caplog.at_level(logging.INFO):
    assert int(train.train_and_evaluate(config, str(tmp_path)).step) == 4
  assert ("already finished at step 4 (config.total_steps=4); raise --config.total_steps"
          in caplog.text)
  assert "training steps" not in caplog.text
  assert _files(tmp_path) == before

  _truncate_largest_file(tmp_path / "checkpoints" / "4")
  caplog.clear()
  with caplog.at_level(logging.INFO):
    assert int(train.train_and_evaluate(_config(total_steps=5), str(tmp_path)).step) == 5
  assert f"{tmp_path / 'checkpoints' / '4'} cannot be read" in caplog.text
  assert "resuming from" in caplog.text and "step 2" in caplog.text.split("resuming from")[1]
  assert (tmp_path / "damaged_checkpoints" / "4" / "state").is_dir()
  assert checkpoint.make_manager(tmp_path, read_only=True).all_steps() == [1, 2, 4, 5]


def _train_command(workdir, *overrides):
  return [sys.executable, "-m", "i2i_jax.train", "--config=configs/tiny.py",
          f"--workdir={workdir}", *overrides]


def _env(devices=8):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


@pytest.mark.parametrize("arguments,expected", [
    (["--config.model.res_chanels=3"], ["model.res_chanels", "did you mean model.res_channels"]),
    (["--config.model.nope=1"], ["model.nope", "model.res_blocks"]),
    (["--config.total_steps=many"], ["--config.total_steps=many"]),
    (["--config.sharding.fsdp=maybe"], ["--config.sharding.fsdp=maybe"]),
    (["--config=configs/nofile.py"], ["configs/nofile.py", "No such file"]),
    (["--config=configs/nofile.py", "--config.total_steps=3"], ["configs/nofile.py"]),
])
def test_bad_config_fails_in_one_line_naming_the_key_and_creates_nothing(
    tmp_path, arguments, expected):
  workdir = tmp_path / "run"
  result = subprocess.run(_train_command(workdir, *arguments), cwd=REPO, env=_env(devices=1),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  for text in expected:
    assert text in result.stderr
  assert not workdir.exists()


def test_a_workdir_that_cannot_be_created_fails_in_one_line_with_exit_3(tmp_path):
  workdir = tmp_path / "a_file"
  workdir.write_text("not a directory")
  result = subprocess.run(_train_command(workdir), cwd=REPO, env=_env(devices=1),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 3, result.stderr[-3000:]
  assert f"cannot create the workdir {workdir}" in result.stderr
  assert "Traceback" not in result.stderr


def test_help_exits_zero_with_the_help_on_stdout():
  result = subprocess.run([sys.executable, "-m", "i2i_jax.train", "--help"], cwd=REPO,
                          env=_env(devices=1), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "--config.KEY=VALUE" in result.stdout and "--workdir" in result.stdout


def test_workdir_of_another_model_or_without_an_intact_checkpoint_fails_in_one_line(tmp_path):
  """Another model config: exit 2 naming the keys; every checkpoint damaged: exit 3."""
  config = tiny.get_config()
  fns = vsait_family.make_step_functions(config)
  state = vsait_family.create_train_state(
      fns, vsait.init_variables(fns.modules, jax.random.key(0), (16, 16)))
  manager = checkpoint.make_manager(tmp_path, config.checkpoint)
  checkpoint.save(manager, 2, state.replace(step=jnp.asarray(2, jnp.int32)), None, config,
                  force=True)
  manager.wait_until_finished()
  manager.close()
  other = subprocess.run(_train_command(tmp_path, "--config.model.res_channels=16"), cwd=REPO,
                         env=_env(devices=1), capture_output=True, text=True, timeout=300)
  assert other.returncode == 2, other.stderr[-3000:]
  assert "model.res_channels=8 there, 16 now" in other.stderr
  assert "another --workdir" in other.stderr and "Traceback" not in other.stderr

  _truncate_largest_file(tmp_path / "checkpoints" / "2")
  damaged = subprocess.run(_train_command(tmp_path, "--config.total_steps=3"), cwd=REPO,
                           env=_env(devices=1), capture_output=True, text=True, timeout=300)
  assert damaged.returncode == 3, damaged.stderr[-3000:]
  assert f"no checkpoint in {tmp_path / 'checkpoints'} can be read" in damaged.stderr
  assert "Traceback" not in damaged.stderr
  assert (tmp_path / "checkpoints" / "2").is_dir()  # nothing moved or deleted


def _wait_for(predicate, process, timeout, what):
  deadline = time.monotonic() + timeout
  while not predicate():
    if process.poll() is not None:
      raise AssertionError(f"training exited ({process.returncode}) before {what}")
    if time.monotonic() > deadline:
      process.kill()
      raise AssertionError(f"timed out waiting for {what}")
    time.sleep(0.02)


# SIGTERM is the preemption contract of TPU/SLURM schedulers (exit 0, rerun resumes);
# Ctrl-C is a person stopping the run (exit 130).
@pytest.mark.parametrize("sig, exit_code, said", [
    (signal.SIGTERM, 0, "preempted: saved checkpoint"),
    (signal.SIGINT, 130, "interrupted: saved checkpoint")])
def test_a_stop_signal_finishes_the_step_and_saves(tmp_path, sig, exit_code, said):
  log = tmp_path / "log.txt"
  with open(log, "w") as out:
    process = subprocess.Popen(
        _train_command(tmp_path, "--config.total_steps=1000",
                       "--config.checkpoint.every_steps=1000"),
        cwd=REPO, env=_env(devices=1), stdout=out, stderr=subprocess.STDOUT)
    _wait_for(lambda: "step 2/1000" in log.read_text(), process, 180, "step 2")
    process.send_signal(sig)
    assert process.wait(timeout=120) == exit_code
  text = log.read_text()
  assert said in text and "Traceback" not in text
  # Each start-up stage says what it is doing before the first step's line.
  stages = ["building the input pipeline", "initialising the networks",
            "compiling the train step", "compiled the train step in", "first step done in",
            "step 1/1000"]
  assert sorted(stages, key=text.index) == stages
  steps = checkpoint.make_manager(tmp_path, read_only=True).all_steps()
  assert len(steps) == 2 and steps[0] == 1 and 2 <= steps[1] < 1000, steps


def test_kill_during_save_leaves_the_previous_checkpoint_usable(tmp_path):
  log = tmp_path / "log.txt"
  directory = checkpoint.checkpoint_dir(tmp_path)

  def saving_after_a_finished_checkpoint():
    names = [p.name for p in directory.iterdir()] if directory.exists() else []
    return (any(n.isdigit() for n in names)
            and any("orbax-checkpoint-tmp" in n for n in names))

  with open(log, "w") as out:
    process = subprocess.Popen(
        _train_command(tmp_path, "--config.total_steps=1000", "--config.checkpoint.every_steps=1",
                       "--config.log_images_every=1000"),
        cwd=REPO, env=_env(devices=1), stdout=out, stderr=subprocess.STDOUT)
    _wait_for(saving_after_a_finished_checkpoint, process, 180, "a save in progress")
    process.kill()
    process.wait(timeout=60)
  manager = checkpoint.make_manager(tmp_path, read_only=True)
  latest = manager.latest_step()
  assert latest is not None
  config = tiny.get_config()
  fns = vsait_family.make_step_functions(config)
  template = vsait_family.create_train_state(
      fns, vsait.init_variables(fns.modules, jax.random.key(0), (16, 16)))
  iterator = pipeline.make_train_iterator(config.data, seed=config.seed)
  restored = checkpoint.restore(manager, template, iterator)
  assert int(restored.step) == latest
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(restored)))
  # and a new run resumes from it
  result = subprocess.run(_train_command(tmp_path, f"--config.total_steps={latest + 1}"),
                          cwd=REPO, env=_env(devices=1), capture_output=True, text=True,
                          timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"resuming from {directory}, step {latest}" in result.stderr


def test_demo_trains_logs_checkpoints_and_resumes(tmp_path):
  """The README's first command, shortened: 2 steps, then 1 more from the checkpoint.

  Run from another directory with a relative --workdir, as the README does.
  """
  command = [sys.executable, "-m", "i2i_jax.train", f"--config={REPO}/configs/demo.py",
             "--workdir=runs/demo", "--config.log_every_steps=1",
             "--config.log_images_every=2", "--config.style_distance_images=4"]
  first = subprocess.run([*command, "--config.total_steps=2"], cwd=tmp_path,
                         env=_env(devices=1), capture_output=True, text=True, timeout=300)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "style_distance/translated=" in first.stderr
  # The demo's CPU kernel choice is one this jaxlib takes (else it trains ~1.7x slower).
  assert "compiling the train step with {'xla_cpu_experimental_ynn_fusion_type'" in first.stderr
  assert "left out" not in first.stderr
  assert "atomicity.py" not in first.stderr  # Orbax's per-save INFO lines stay quiet
  workdir = tmp_path / "runs" / "demo"
  assert (workdir / "samples" / "step_00000002.png").exists()
  events = list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert events and events[0].stat().st_size > 1000  # holds an image grid
  second = subprocess.run([*command, "--config.total_steps=3"], cwd=tmp_path,
                          env=_env(devices=1), capture_output=True, text=True, timeout=300)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "step 2" in second.stderr.split("resuming from")[1][:200]
  assert "step 3/3" in second.stderr
  assert checkpoint.make_manager(workdir, read_only=True).latest_step() == 3
