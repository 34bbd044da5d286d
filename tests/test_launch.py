"""launch/: sweep expansion and collection, and the dry runs of the TPU and SLURM launchers."""

import csv
import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from i2i_jax import metric_writer
from i2i_jax.metrics import report

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"


def _load_sweep_module():
  spec = importlib.util.spec_from_file_location("launch_sweep", LAUNCH / "sweep.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep = _load_sweep_module()


def _run(command, env=None, check=True):
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)
  if check and result.returncode:
    raise AssertionError(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
  return result


def _write_sweep_file(path, body):
  path.write_text(f"def get_sweep():\n  return {body!r}\n")
  return str(path)


# ---------------------------------------------------------------------------
# sweep.py: expansion


def test_grid_is_the_product_and_fixed_applies_to_every_run():
  runs = sweep.expand({"base_config": "c.py", "fixed": {"total_steps": 3},
                       "grid": {"a.x": [1, 2], "b.y": [0.5, 5.0, 50.0]}}, "s.py")
  assert len(runs) == 6
  assert {(r["a.x"], r["b.y"]) for r in runs} == {(x, y) for x in (1, 2) for y in (0.5, 5.0, 50.0)}
  assert all(r["total_steps"] == 3 for r in runs)


def test_random_points_are_seeded_in_range_and_crossed_with_the_grid():
  spec = {"base_config": "c.py", "grid": {"g": [1, 2]},
          "random": {"params": {"lr": ("log_uniform", 1e-5, 1e-3), "n": ("int", 2, 4),
                                "act": ("choice", ["relu", "gelu"]), "w": ("uniform", 0, 1)},
                     "num_samples": 5, "seed": 7}}
  runs = sweep.expand(spec, "s.py")
  assert len(runs) == 10
  assert runs == sweep.expand(spec, "s.py")
  assert all(1e-5 <= r["lr"] <= 1e-3 and 2 <= r["n"] <= 4 and r["act"] in ("relu", "gelu")
             and 0 <= r["w"] <= 1 for r in runs)
  # The same 5 random points for each grid value.
  assert [{k: v for k, v in r.items() if k != "g"} for r in runs[:5]] == [
      {k: v for k, v in r.items() if k != "g"} for r in runs[5:]]
  other_seed = dict(spec, random=dict(spec["random"], seed=8))
  assert sweep.expand(other_seed, "s.py") != runs


def test_bad_random_spec_names_the_file_and_key():
  with pytest.raises(ValueError, match=r"s\.py: random\.params\['lr'\]"):
    sweep.expand({"base_config": "c.py",
                  "random": {"params": {"lr": ("gaussian", 0, 1)}, "num_samples": 1}}, "s.py")


def test_unknown_config_key_is_an_error_naming_it(tmp_path):
  sweep_file = _write_sweep_file(tmp_path / "s.py", {"base_config": "configs/tiny.py",
                                                     "grid": {"loss.vsa_coeff": [1.0]}})
  result = _run([sys.executable, str(LAUNCH / "sweep.py"), "run", sweep_file,
                 f"--root={tmp_path}/root", "--dry-run"], check=False)
  assert result.returncode != 0
  assert "'loss.vsa_coeff' does not exist" in result.stderr


def test_format_value_round_trips_through_the_config_flags():
  assert sweep.format_value((32, 16, 1)) == "(32,16,1)"
  assert sweep.format_value((4,)) == "(4,)"
  assert sweep.format_value(10.0) == "10.0"
  assert sweep.format_value(True) == "True"


def test_dry_run_prints_one_train_command_per_run_and_writes_nothing(tmp_path):
  root = tmp_path / "root"
  result = _run([sys.executable, str(LAUNCH / "sweep.py"), "run",
                 str(LAUNCH / "sweeps" / "example.py"), f"--root={root}", "--dry-run"])
  commands = [shlex.split(line) for line in result.stdout.splitlines()]
  assert len(commands) == 4
  workdirs = {arg for command in commands for arg in command if arg.startswith("--workdir=")}
  assert len(workdirs) == 4
  assert all(command[1:3] == ["-m", "i2i_jax.train"] for command in commands)
  assert {("--config.model.lsh_out_channels=32" in c, "--config.loss.vsa_coef=10.0" in c)
          for c in commands} == {(a, b) for a in (True, False) for b in (True, False)}
  assert not root.exists()


def test_slurm_launcher_emits_one_array_job_over_the_runs_file(tmp_path):
  root = tmp_path / "root"
  plan = sweep.plan(str(LAUNCH / "sweeps" / "example.py"), str(root))
  sweep.write_plan(plan, root)
  [command] = sweep.launch_commands(plan, root, "slurm", "")
  assert command[:2] == ["sbatch", "--array=0-3"]
  assert f"--export=ALL,RUNS_FILE={root / 'runs.txt'}" in command
  # Array task 2 of the SLURM script runs the third run of the plan.
  printed = _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), *command[command.index(
      str(LAUNCH / "slurm_gpu.sbatch")) + 1:]], env={
          "DRY_RUN": "1", "RUNS_FILE": str(root / "runs.txt"), "SLURM_ARRAY_TASK_ID": "2"}).stdout
  srun = shlex.split(printed.splitlines()[-1])
  assert f"--workdir={plan['runs'][2]['workdir']}" in srun
  assert srun[srun.index("i2i_jax.train") + 1:] == sweep.train_args(plan, plan["runs"][2])


# ---------------------------------------------------------------------------
# sweep.py collect: metrics files written by the trainer's writer, and evaluation reports


def _fake_run(workdir, steps, g_total, fid=None):
  writer = metric_writer.MetricWriter(workdir)
  for step in range(1, steps + 1):
    writer.write_scalars(step, {"g_total": g_total + (steps - step), "d_total": 1.0})
  writer.close()
  if fid is not None:
    report.write_report(str(workdir / "eval"), {"fid": {"fid": fid, "kid": 0.01}}, {}, [], {})


def _resume(workdir, step, scalars):
  """A resumed run logging `step` again, and a line torn by a kill after it."""
  writer = metric_writer.MetricWriter(workdir)
  writer.write_scalars(step, scalars)
  writer.close()
  with open(workdir / metric_writer.METRICS_FILE, "a") as f:
    f.write('{"step": 9, "g_total": 0.0')


def test_collect_reads_final_scalars_and_eval_reports_and_sorts(tmp_path):
  sweep_file = _write_sweep_file(tmp_path / "s.py", {
      "base_config": "configs/tiny.py", "fixed": {"total_steps": 3},
      "grid": {"model.lsh_out_channels": [32, 64], "loss.vsa_coef": [1.0, 10.0]}})
  root = tmp_path / "root"
  plan = sweep.plan(sweep_file, str(root))
  sweep.write_plan(plan, root)
  runs = {(r["overrides"]["model.lsh_out_channels"], r["overrides"]["loss.vsa_coef"]):
          pathlib.Path(r["workdir"]) for r in plan["runs"]}
  _fake_run(runs[32, 1.0], 3, g_total=4.0, fid=30.0)
  _fake_run(runs[32, 10.0], 3, g_total=2.0, fid=10.0)
  _resume(runs[32, 10.0], 3, {"g_total": 5.0, "d_total": float("nan")})
  _fake_run(runs[64, 1.0], 2, g_total=3.0)  # stopped early, not evaluated

  result = _run([sys.executable, str(LAUNCH / "sweep.py"), "collect", f"--root={root}",
                 "--sort=fid.fid"])
  lines = result.stdout.splitlines()
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  assert header[:5] == ["run", "status", "step", "model.lsh_out_channels", "loss.vsa_coef"]
  assert {"g_total", "d_total", "fid.fid", "fid.kid"} <= set(header)
  assert "wall_time" not in header
  rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
  assert len(rows) == 4
  # Sorted by FID ascending; runs without a report last.
  assert [(r["model.lsh_out_channels"], r["loss.vsa_coef"], r["fid.fid"]) for r in rows[:2]] == [
      ("32", "10.0", "10"), ("32", "1.0", "30")]
  by_key = {(r["model.lsh_out_channels"], r["loss.vsa_coef"]): r for r in rows}
  assert by_key["32", "1.0"]["g_total"] == "4"  # the last step's value, not the first
  # Step 3 logged again after a resume: the later line wins (NaN was written as null);
  # the torn line after it is not read.
  assert (by_key["32", "10.0"]["step"], by_key["32", "10.0"]["g_total"],
          by_key["32", "10.0"]["d_total"]) == ("3", "5", "")
  assert (by_key["32", "1.0"]["status"], by_key["64", "1.0"]["status"],
          by_key["64", "10.0"]["status"]) == ("done", "partial", "missing")
  with open(root / "results.csv", newline="") as f:
    table = list(csv.DictReader(f))
  assert [r["run"] for r in table] == [r["run"] for r in rows]
  assert float(table[0]["fid.kid"]) == pytest.approx(0.01)
  assert (root / "results.md").read_text() == result.stdout


def test_collect_without_a_sweep_names_the_missing_file(tmp_path):
  result = _run([sys.executable, str(LAUNCH / "sweep.py"), "collect", f"--root={tmp_path}"],
                check=False)
  assert result.returncode != 0 and "no sweep.json" in result.stderr


@pytest.mark.slow
def test_local_two_by_two_sweep_of_the_tiny_config_then_collect(tmp_path):
  """Four real training runs, one after another; collect prints their 4-row table."""
  root = tmp_path / "sweep"
  _run([sys.executable, str(LAUNCH / "sweep.py"), "run", str(LAUNCH / "sweeps" / "example.py"),
        f"--root={root}"], env={"JAX_PLATFORMS": "cpu",
                               # tiny's batch of 2 on one device, whatever the session set.
                               "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  table = _run([sys.executable, str(LAUNCH / "sweep.py"), "collect", f"--root={root}",
                "--sort=g_vsa"]).stdout
  lines = table.splitlines()
  header = [cell.strip() for cell in lines[0].strip("|").split("|")]
  rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
  assert len(rows) == 4
  assert {(r["model.lsh_out_channels"], r["loss.vsa_coef"]) for r in rows} == {
      ("32", "1.0"), ("32", "10.0"), ("64", "1.0"), ("64", "10.0")}
  assert all(r["status"] == "done" and r["step"] == "2" for r in rows)
  g_vsa = [float(r["g_vsa"]) for r in rows]
  assert g_vsa == sorted(g_vsa)
  for run in json.loads((root / "sweep.json").read_text())["runs"]:
    workdir = pathlib.Path(run["workdir"])
    assert (workdir / "checkpoints" / "2").is_dir()
    records = metric_writer.read_metrics(workdir / metric_writer.METRICS_FILE)
    assert [record["step"] for record in records] == [1, 2]


# ---------------------------------------------------------------------------
# launchers: dry runs


def _tpu_dry_run(*args):
  return _run(["bash", str(LAUNCH / "tpu_pod.sh"), "--project=proj", "--zone=us-central2-b",
               "--name=vsait-pod", "--accelerator=v4-32", "--config=configs/tiny.py",
               "--workdir=gs://bucket/runs/a", "--dry-run", *args])


def test_tpu_pod_dry_run_prints_create_install_and_train_on_all_workers():
  lines = _tpu_dry_run("--", "--config.total_steps=3",
                       "--config.data.preprocess=resize(32,64)|flip_lr").stdout.splitlines()
  commands = [shlex.split(line) for line in lines if not line.startswith("#")]
  assert all(c[0] in ("gcloud", "python") for c in commands)
  verbs = [c[4] for c in commands if c[0] == "gcloud"]
  assert verbs[:2] == ["describe", "create"]
  create = next(c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"])
  assert {"vsait-pod", "--accelerator-type=v4-32", "--zone=us-central2-b",
          "--project=proj"} <= set(create)
  assert any(c[:3] == ["python", "-m", "pip"] and "wheel" in c for c in commands)
  ssh = [c for c in commands if c[4:5] == ["ssh"]]
  assert all("--worker=all" in c for c in ssh)
  install = next(c for c in ssh if "pip install" in c[-1])
  assert "[tpu]" in install[-1] and "gcsfs" in install[-1]
  train = ssh[-1][-1]
  assert train.startswith("--command=")
  remote = shlex.split(train.split("&& ", 2)[-1].split(" 2>&1")[0])
  assert remote == ["python3", "-m", "i2i_jax.train", "--config=configs/tiny.py",
                    "--workdir=gs://bucket/runs/a", "--config.total_steps=3",
                    "--config.data.preprocess=resize(32,64)|flip_lr"]
  assert "tee ~/i2i_jax/train.log" in train and "I2I_JAX_DISTRIBUTED=1" in train


def test_tpu_pod_dry_run_with_package_and_detach():
  lines = _tpu_dry_run("--package=i2i_jax[tpu] @ git+https://example.com/i2i_jax",
                       "--detach").stdout.splitlines()
  commands = [shlex.split(line) for line in lines if not line.startswith("#")]
  assert not any(c[0] == "python" for c in commands)  # no local wheel
  assert any('"i2i_jax[tpu] @ git+https://example.com/i2i_jax"' in c[-1] for c in commands)
  *_, start, follow = commands
  assert "nohup python3 -m i2i_jax.train" in start[-1] and start[-1].endswith("&")
  assert "--worker=0" in follow and follow[-1] == "--command=tail -F ~/i2i_jax/train.log"


@pytest.mark.parametrize("args, message", [
    (["--workdir=/local/dir"], "must be gs://"),
    (["--workdir=gs://b/x", "--config=configs/nope.py"], "is not a file"),
    (["--workdir=gs://b/x", "--bogus"], "unknown argument --bogus"),
])
def test_tpu_pod_rejects_bad_flags_naming_them(args, message):
  result = _run(["bash", str(LAUNCH / "tpu_pod.sh"), "--project=p", "--zone=z", "--name=n",
                 "--config=configs/tiny.py", *args, "--dry-run"], check=False)
  assert result.returncode == 2 and message in result.stderr


def test_slurm_dry_run_one_process_per_gpu():
  result = _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--config=configs/tiny.py",
                 "--workdir=/shared/run", "--config.total_steps=3"],
                env={"DRY_RUN": "1", "NODES": "2", "GPUS_PER_NODE": "4"})
  srun = shlex.split(result.stdout.splitlines()[-1])
  assert srun[:3] == ["srun", "--nodes=2", "--ntasks-per-node=4"]
  assert srun[srun.index("python"):] == ["python", "-m", "i2i_jax.train", "--config=configs/tiny.py",
                                         "--workdir=/shared/run", "--config.total_steps=3"]
  assert "8 process(es)" in result.stdout and "JAX_LOCAL_DEVICE_IDS" not in result.stdout


def test_slurm_dry_run_one_process_per_node_sees_all_its_gpus():
  result = _run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--config=configs/tiny.py",
                 "--workdir=/shared/run"],
                env={"DRY_RUN": "1", "PROCESS_PER": "node", "SLURM_JOB_NUM_NODES": "3",
                     "SLURM_GPUS_ON_NODE": "4"})
  assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3" in result.stdout
  assert shlex.split(result.stdout.splitlines()[-1])[:3] == [
      "srun", "--nodes=3", "--ntasks-per-node=1"]


def test_slurm_outside_a_job_refuses_to_run():
  env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
  result = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sbatch"), "--config=configs/tiny.py",
                           "--workdir=/x"], cwd=REPO, capture_output=True, text=True, env=env)
  assert result.returncode == 2 and "not inside a SLURM job" in result.stderr
