r"""Ablation sweeps over `--config.*` overrides: run every point, then one table.

  python launch/sweep.py run launch/sweeps/example.py --root=/tmp/sweep
      every run in /tmp/sweep/<run name>/, one after another on this machine
  python launch/sweep.py run SWEEP --root=/shared/sweep --launcher=slurm [--dry-run]
      one SLURM array job (launch/slurm_gpu.sbatch), one array task per run
  python launch/sweep.py run SWEEP --root=gs://bucket/sweep --launcher=tpu \
      --tpu_args="--project=P --zone=Z --accelerator=v4-32 --name=N" [--dry-run]
      the runs one after another on one TPU slice (launch/tpu_pod.sh)
  python launch/sweep.py collect --root=/tmp/sweep [--sort=-g_total] [--metrics=g_total,fid.fid]
      prints one Markdown table and writes ROOT/results.md and ROOT/results.csv

A sweep file is Python with `get_sweep()` returning a dict:

  base_config  the config file every run starts from ("configs/tiny.py").
  fixed        {key: value}: overrides shared by every run (optional).
  grid         {key: [values]}: every combination is a run (optional).
  random       {"params": {key: spec}, "num_samples": n, "seed": s} (optional):
               n random points, each spec ("choice", [values]), ("uniform", lo, hi),
               ("log_uniform", lo, hi) or ("int", lo, hi) (both ends included).
               With a grid too, every grid point is crossed with the n points.

Keys are config paths without the `config.` prefix ("loss.vsa_coef"); every key
must exist in the base config. `run` writes ROOT/sweep.json (the runs, their
workdirs and overrides), which `collect` reads. A run's numbers are the value
of each scalar at its last step in WORKDIR/metrics.jsonl (the trainer's metrics
file; a step logged twice by a resumed run: the later line wins) and, when
present, the metrics of WORKDIR/eval/report.json (`python -m i2i_jax.evaluate
--out=WORKDIR/eval`) as "<section>.<name>". Running a sweep again resumes unfinished runs (the
trainer resumes from each workdir's last checkpoint).

ROOT may be a local path or gs:// / s3:// where etils epath can reach it.
"""

from collections.abc import Sequence
import csv
import importlib.util
import io
import itertools
import json
import math
import re
import shlex
import subprocess
import sys
from typing import Any

from absl import flags
from etils import epath
import numpy as np

from i2i_jax import cli
from i2i_jax import metric_writer
from i2i_jax import storage

LAUNCH_DIR = epath.Path(__file__).parent
SWEEP_JSON = "sweep.json"
RUNS_FILE = "runs.txt"


def load_python_file(path: str, function: str) -> Any:
  """Calls `function()` of the Python file `path`."""
  if not epath.Path(path).exists():
    raise FileNotFoundError(f"no such file: {path}")
  spec = importlib.util.spec_from_file_location(f"_loaded_{epath.Path(path).stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, function):
    raise ValueError(f"{path} has no {function}()")
  return getattr(module, function)()


def _sample(spec: Any, key: str, rng: np.random.Generator, sweep_file: str) -> Any:
  kind, *args = spec
  if kind == "choice":
    return args[0][rng.integers(len(args[0]))]
  if kind == "uniform":
    return float(rng.uniform(args[0], args[1]))
  if kind == "log_uniform":
    return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
  if kind == "int":
    return int(rng.integers(args[0], args[1] + 1))
  raise ValueError(f"{sweep_file}: random.params[{key!r}] = {spec!r}: expected "
                   "('choice', [values]), ('uniform', lo, hi), ('log_uniform', lo, hi) "
                   "or ('int', lo, hi)")


def expand(sweep: dict[str, Any], sweep_file: str) -> list[dict[str, Any]]:
  """The overrides of every run: fixed, then grid point, then random point."""
  unknown = set(sweep) - {"base_config", "fixed", "grid", "random"}
  if unknown or "base_config" not in sweep:
    raise ValueError(f"{sweep_file}: get_sweep() must return base_config and optionally "
                     f"fixed, grid, random; found keys {sorted(sweep)}")
  grid = sweep.get("grid", {})
  for key, values in grid.items():
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f"{sweep_file}: grid[{key!r}] must be a non-empty list, got {values!r}")
  grid_points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
  random_points = [{}]
  if "random" in sweep:
    random = sweep["random"]
    missing = {"params", "num_samples"} - set(random)
    if missing:
      raise ValueError(f"{sweep_file}: random needs {sorted(missing)}")
    rng = np.random.default_rng(random.get("seed", 0))
    random_points = [
        {key: _sample(spec, key, rng, sweep_file) for key, spec in random["params"].items()}
        for _ in range(random["num_samples"])]
  return [{**sweep.get("fixed", {}), **grid_point, **random_point}
          for grid_point in grid_points for random_point in random_points]


def _lookup(config: Any, key: str, where: str) -> Any:
  value = config
  for part in key.split("."):
    if not hasattr(value, "keys") or part not in value.keys():
      raise KeyError(f"{where}: config key {key!r} does not exist in the base config")
    value = value[part]
  return value


def format_value(value: Any) -> str:
  """A value as `--config.KEY=` expects it (ml_collections' flag parsers)."""
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(format_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def run_name(index: int, overrides: dict[str, Any], swept: list[str]) -> str:
  """'003_lsh_out_channels=64_vsa_coef=10.0': index, then the swept values."""
  short = {key: key.rsplit(".", 1)[-1] for key in swept}
  if len(set(short.values())) < len(short):
    short = {key: key for key in swept}
  parts = [f"{short[key]}={format_value(overrides[key])}" for key in swept]
  return re.sub(r"[^A-Za-z0-9._=,()-]", "-", "_".join([f"{index:03d}", *parts]))


def plan(sweep_file: str, root: str) -> dict[str, Any]:
  """The runs of a sweep file: names, workdirs and overrides, checked against the base config."""
  sweep = load_python_file(sweep_file, "get_sweep")
  base_config = sweep.get("base_config", "")
  if not epath.Path(base_config).exists():
    raise FileNotFoundError(f"{sweep_file}: base_config {base_config!r} does not exist "
                            "(paths are relative to where sweep.py runs, the repository root)")
  config = load_python_file(base_config, "get_config")
  points = expand(sweep, sweep_file)
  swept = [key for key in points[0] if key not in sweep.get("fixed", {})]
  for key in points[0]:
    _lookup(config, key, sweep_file)
  runs = []
  for index, overrides in enumerate(points):
    name = run_name(index, overrides, swept)
    runs.append({"name": name, "workdir": str(epath.Path(root) / name), "overrides": overrides})
  total_steps = {run["name"]: run["overrides"].get("total_steps", config.total_steps)
                 for run in runs}
  return {"sweep_file": sweep_file, "base_config": base_config, "swept": swept,
          "total_steps": total_steps, "runs": runs}


def train_args(sweep_plan: dict[str, Any], run: dict[str, Any]) -> list[str]:
  """The flags of `python -m i2i_jax.train` for one run."""
  return [f"--config={sweep_plan['base_config']}", f"--workdir={run['workdir']}",
          *(f"--config.{key}={format_value(value)}" for key, value in run["overrides"].items())]


def _write_text(path: epath.Path, text: str) -> None:
  with storage.atomic_write(path, "w") as f:
    f.write(text)


def write_plan(sweep_plan: dict[str, Any], root: epath.Path) -> None:
  _write_text(root / SWEEP_JSON, json.dumps(sweep_plan, indent=2) + "\n")
  # One line per run, shell-quoted: the slurm array task i appends line i to its command.
  _write_text(root / RUNS_FILE, "".join(
      shlex.join(train_args(sweep_plan, run)[1:]) + "\n" for run in sweep_plan["runs"]))


def launch_commands(sweep_plan: dict[str, Any], root: epath.Path, launcher: str,
                    tpu_args: str) -> list[list[str]]:
  """The commands that run the sweep with `launcher` ("local", "slurm" or "tpu")."""
  if launcher == "local":
    return [[sys.executable, "-m", "i2i_jax.train", *train_args(sweep_plan, run)]
            for run in sweep_plan["runs"]]
  if launcher == "slurm":
    count = len(sweep_plan["runs"])
    return [["sbatch", f"--array=0-{count - 1}", "--job-name=sweep",
             f"--output={root}/slurm-%A_%a.out",
             f"--export=ALL,RUNS_FILE={root / RUNS_FILE}",
             str(LAUNCH_DIR / "slurm_gpu.sbatch"), f"--config={sweep_plan['base_config']}"]]
  if launcher == "tpu":
    if not tpu_args:
      raise ValueError("--launcher=tpu needs --tpu_args (launch/tpu_pod.sh flags: "
                       "--project, --zone, --accelerator, --name)")
    return [["bash", str(LAUNCH_DIR / "tpu_pod.sh"), *shlex.split(tpu_args),
             *train_args(sweep_plan, run)[:2], "--",
             *train_args(sweep_plan, run)[2:]] for run in sweep_plan["runs"]]
  raise ValueError(f"unknown --launcher={launcher!r}; use local, slurm or tpu")


def run_sweep(sweep_file: str, root: str, launcher: str = "local", tpu_args: str = "",
              dry_run: bool = False) -> int:
  """Runs every run of `sweep_file` (see `launch_commands`); returns 0, or 1 if one failed.

  With `dry_run`, prints the commands and neither writes nor runs anything.
  """
  root = epath.Path(root)
  sweep_plan = plan(sweep_file, str(root))
  commands = launch_commands(sweep_plan, root, launcher, tpu_args)
  if dry_run:
    for command in commands:
      print(shlex.join(command))
    return 0
  write_plan(sweep_plan, root)
  # slurm: one command (the array job) for all runs; otherwise one command per run.
  labels = (["sbatch"] if launcher == "slurm"
            else [run["name"] for run in sweep_plan["runs"]])
  failed = []
  for label, command in zip(labels, commands):
    print(f"[sweep] {shlex.join(command)}", file=sys.stderr, flush=True)
    if subprocess.run(command, check=False).returncode:
      failed.append(label)
  if failed:
    print(f"[sweep] failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


def final_scalars(workdir: epath.Path) -> tuple[int | None, dict[str, float | None]]:
  """(last step, {name: value at its last step}) of WORKDIR/metrics.jsonl; (None, {}) without one.

  A step logged twice (a resumed run) counts as its later line; a null value (a
  NaN or Inf the trainer logged) stays None.
  """
  last: dict[str, tuple[int, float | None]] = {}
  for record in metric_writer.read_metrics(workdir / metric_writer.METRICS_FILE):
    step = record["step"]
    for name, value in record.items():
      if name not in ("step", "wall_time") and step >= last.get(name, (-1,))[0]:
        last[name] = (step, value)
  step = max((s for s, _ in last.values()), default=None)
  return step, {name: value for name, (_, value) in last.items()}


def eval_metrics(workdir: epath.Path) -> dict[str, float | None]:
  """{"section.name": value} of WORKDIR/eval/report.json, {} when there is none."""
  path = workdir / "eval" / "report.json"
  if not path.exists():
    return {}
  try:
    sections = json.loads(path.read_text())["metrics"]
  except (json.JSONDecodeError, KeyError) as error:
    raise ValueError(f"{path}: not an evaluation report ({error!r})") from error
  return {f"{section}.{name}": value for section, metrics in sections.items()
          for name, value in metrics.items()}


def collect_rows(sweep_plan: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
  """(metric columns, one row per run: name, status, step, overrides and metrics)."""
  rows, metric_columns = [], {}
  for run in sweep_plan["runs"]:
    workdir = epath.Path(run["workdir"])
    step, scalars = final_scalars(workdir)
    metrics = {**scalars, **eval_metrics(workdir)}
    metric_columns.update(dict.fromkeys(metrics))
    total = sweep_plan["total_steps"][run["name"]]
    status = "missing" if step is None else "done" if step >= total else "partial"
    rows.append({"run": run["name"], "status": status, "step": step,
                 **{key: run["overrides"][key] for key in sweep_plan["swept"]}, **metrics})
  return list(metric_columns), rows


def sort_rows(rows: list[dict[str, Any]], sort: str, swept: list[str]) -> list[dict[str, Any]]:
  """By `sort` (a column; "-" first for descending; missing values last), else by the swept values."""
  if not sort:
    return sorted(rows, key=lambda row: [(str(type(row[k])), row[k]) for k in swept])
  descending, column = sort.startswith("-"), sort.lstrip("-")
  if rows and all(column not in row for row in rows):
    raise KeyError(f"--sort={sort}: no column {column!r}; columns: {sorted(rows[0])}")
  present = [row for row in rows if row.get(column) is not None]
  absent = [row for row in rows if row.get(column) is None]
  return sorted(present, key=lambda row: row[column], reverse=descending) + absent


def _cell(value: Any) -> str:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def markdown_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def csv_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return out.getvalue()


def collect(root: str, sort: str = "", metrics: Sequence[str] = ()) -> str:
  """The Markdown table of every run of the sweep in `root`; also writes ROOT/results.{md,csv}.

  Args:
    root: the root `run_sweep` wrote ROOT/sweep.json to.
    sort: a column to sort by, "-" first for descending (default: the swept values).
    metrics: the metric columns (default: every metric of any run).
  """
  root = epath.Path(root)
  if not (root / SWEEP_JSON).exists():
    raise FileNotFoundError(f"no {SWEEP_JSON} in {root}: is it the --root of `sweep.py run`?")
  sweep_plan = json.loads((root / SWEEP_JSON).read_text())
  metric_columns, rows = collect_rows(sweep_plan)
  if metrics:
    metric_columns = list(metrics)
  columns = ["run", "status", "step", *sweep_plan["swept"], *metric_columns]
  rows = sort_rows(rows, sort, sweep_plan["swept"])
  # Override values exactly as the runs were given them ("1.0", "(32,16,1)").
  rows = [{**row, **{key: format_value(row[key]) for key in sweep_plan["swept"]}}
          for row in rows]
  table = markdown_table(columns, rows)
  _write_text(root / "results.md", table)
  _write_text(root / "results.csv", csv_table(columns, rows))
  return table


# Each command's own flags (cli.py): `run` and `collect` both have --root.
RUN_FLAGS = flags.FlagValues()
_RUN_ROOT = flags.DEFINE_string("root", None, "Each run goes to ROOT/<run name>.",
                                required=True, flag_values=RUN_FLAGS)
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm", "tpu"],
                              "Where the runs run.", flag_values=RUN_FLAGS)
_TPU_ARGS = flags.DEFINE_string("tpu_args", "", "launch/tpu_pod.sh flags (--launcher=tpu).",
                                flag_values=RUN_FLAGS)
_DRY_RUN = flags.DEFINE_bool("dry-run", False, "Print the commands; write and run nothing.",
                             flag_values=RUN_FLAGS)
COLLECT_FLAGS = flags.FlagValues()
_COLLECT_ROOT = flags.DEFINE_string("root", None, "The --root of `run`.", required=True,
                                    flag_values=COLLECT_FLAGS)
_SORT = flags.DEFINE_string("sort", "", "Column to sort by, '-' first for descending.",
                            flag_values=COLLECT_FLAGS)
_METRICS = flags.DEFINE_list("metrics", [], "Comma-separated metric columns (default: all).",
                             flag_values=COLLECT_FLAGS)
_COMMANDS = {"run": RUN_FLAGS, "collect": COLLECT_FLAGS}


def _help() -> str:
  return "".join([__doc__.rstrip(), "\n"] + [
      f"\n`{name}` flags:\n{flag_values.get_help(include_special_flags=False)}\n"
      for name, flag_values in _COMMANDS.items()])


def main(argv: Sequence[str]) -> int:
  """`python launch/sweep.py COMMAND ...` in this process: `argv` as sys.argv; returns 0 or 1.

  Raises:
    cli.HelpRequested: --help (before or after the command).
    cli.UsageError: no command, a bad flag, a sweep file, config key or
      column that does not exist.
  """
  command = argv[1] if len(argv) > 1 else ""
  if command not in _COMMANDS:
    if command in ("--help", "-help", "-h", "--helpshort", "-?"):
      raise cli.HelpRequested(_help())
    raise cli.UsageError(f"expected a command, run or collect, first; got {argv[1:]} "
                         "(see --help)")
  arguments = cli.parse_flags([argv[0], *argv[2:]], _COMMANDS[command], __doc__)
  try:
    if command == "run":
      if len(arguments) != 2:
        raise cli.UsageError(f"run: expected one sweep file, got {arguments[1:]}")
      return run_sweep(arguments[1], _RUN_ROOT.value, _LAUNCHER.value, _TPU_ARGS.value,
                       _DRY_RUN.value)
    if len(arguments) > 1:
      raise cli.UsageError(f"collect: unexpected arguments {arguments[1:]}")
    print(collect(_COLLECT_ROOT.value, _SORT.value, _METRICS.value), end="")
    return 0
  except KeyError as e:  # its message is the first argument, without str()'s quotes
    raise cli.UsageError(e.args[0]) from e
  except (FileNotFoundError, ValueError) as e:
    raise cli.UsageError(str(e)) from e


if __name__ == "__main__":
  cli.run(main)
