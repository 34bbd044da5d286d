"""Training end to end (the train CLI on folder data of GTA5-sized PNGs) vs the step alone.

  PYTHONPATH=. python benchmarks/train_end_to_end.py --config=vsait --batch_sizes=1,32 \
      --steps=1000,300 --warmup_steps=300,100 --compute_dtype=bfloat16 --workers=0

For each batch size:

  step only    `benchmarks/train_step.py`'s `benchmark`: the jitted step of the same
               config and batch on device-resident random images, --step_only_steps
               steps after --step_only_warmup (in a spawned process, so that it holds
               no accelerator memory while the CLI runs).
  end to end   `python -m i2i_jax.train --config=configs/<config>.py --workdir=...`, a
               subprocess started the way users start it, with source = toy_streets
               "sim" and target = toy_streets "real" frames rendered at --frame_size
               (default 1914x1052, GTA5's) as PNG files, --frames per domain, read
               either on the fly (folder:DIR: decode + the config's preprocessing every
               step) or prepared (prepared:DIR, written once by `python -m
               i2i_jax.prepare` with the config's data.preprocess). Random VGG weights;
               image grids, checkpoints and evaluators are pushed past the last step
               (the last step still saves, after the timing). Its steps/s is read from
               WORKDIR/metrics.jsonl: the `steps_per_sec` records whose window (the
               steps since the previous record, --log_every apart) starts at or after
               --warmup_steps, combined as steps / seconds (the loop's own timer, which
               starts after compilation).

Prints a Markdown table: config, batch, compute dtype, input, grain worker processes,
read threads, device prefetch (batches copied ahead in a thread), step-only steps/s, end-to-end steps/s, their ratio, end-to-end images/s
(steps/s x batch) and the CLI's wall seconds (start-up, compilation, rendering of the
probe images and the final save included). The frames, prepared data and each run's
workdir and log stay in --work_dir when given.
"""

import argparse
import concurrent.futures
import importlib
import itertools
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import train_step
import translate

from i2i_jax import metric_writer

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def steady_steps_per_second(records: Sequence[dict], warmup_steps: int) -> tuple[float, int]:
  """(steps/s, steps counted) of a training run after `warmup_steps`.

  Args:
    records: a fresh run's metrics.jsonl records in file order (`read_metrics`); those
      with "steps_per_sec" each time the steps since the previous one (the first: since
      step 0).
    warmup_steps: windows that start before this step are left out.
  Raises:
    ValueError: no window starts at or after `warmup_steps`.
  """
  previous_step, steps, seconds = 0, 0, 0.0
  for record in records:
    if record.get("steps_per_sec") is None:
      continue
    window = record["step"] - previous_step
    if previous_step >= warmup_steps:
      steps += window
      seconds += window / record["steps_per_sec"]
    previous_step = record["step"]
  if not steps:
    raise ValueError(f"no steps_per_sec record after step {warmup_steps} (last logged step "
                     f"{previous_step}): raise --steps or lower --warmup_steps")
  return steps / seconds, steps


def time_step_only(config: str, batch_size: int, steps: int, warmup: int,
                   compute_dtype: str | None) -> float:
  """Steps/s of `train_step.benchmark`, in a spawned process that exits afterwards."""
  with concurrent.futures.ProcessPoolExecutor(
      1, mp_context=multiprocessing.get_context("spawn")) as pool:
    return pool.submit(train_step.benchmark, config, steps, warmup, compute_dtype,
                       batch_size, count_flops=False).result()["steps_per_s"]


def prepare(folder: str, out: str, preprocess: str, log: str):
  """`python -m i2i_jax.prepare` of `folder` into `out` (a finished one is left as it is)."""
  with open(log, "w") as log_file:
    subprocess.run([sys.executable, "-m", "i2i_jax.prepare", f"--source=folder:{folder}",
                    f"--preprocess={preprocess}", f"--out={out}"], cwd=REPOSITORY,
                   stdout=log_file, stderr=subprocess.STDOUT, check=True)


def train_command(config: str, workdir: str, overrides: dict[str, object]) -> list[str]:
  """The train CLI's argv: configs/<config>.py with `--config.KEY=VALUE` overrides."""
  return [sys.executable, "-m", "i2i_jax.train",
          f"--config={os.path.join(REPOSITORY, 'configs', config + '.py')}",
          f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in overrides.items())]


def run_training(command: list[str], workdir: str, warmup_steps: int,
                 timeout: float) -> tuple[float, float]:
  """Runs the train CLI in a fresh `workdir`; (steady steps/s, wall seconds).

  Its output goes to workdir + ".log".

  Raises:
    RuntimeError: the CLI failed (with the end of its log).
  """
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(os.path.dirname(workdir), exist_ok=True)
  log = workdir + ".log"
  start = time.perf_counter()
  with open(log, "w") as log_file:
    process = subprocess.run(command, cwd=REPOSITORY, stdout=log_file,
                             stderr=subprocess.STDOUT, timeout=timeout)
  wall = time.perf_counter() - start
  if process.returncode:
    with open(log) as log_file:
      tail = "".join(log_file.readlines()[-15:])
    raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{tail}")
  records = metric_writer.read_metrics(os.path.join(workdir, metric_writer.METRICS_FILE))
  return steady_steps_per_second(records, warmup_steps)[0], wall


def _per_batch(values: str, batch_sizes: list[int], flag: str) -> list[int]:
  """One int per batch size from a comma list of one value or one per batch size."""
  parsed = [int(v) for v in values.split(",")]
  if len(parsed) == 1:
    return parsed * len(batch_sizes)
  if len(parsed) != len(batch_sizes):
    raise SystemExit(f"--{flag}={values}: give one value or one per --batch_sizes entry")
  return parsed


def table(args, work_dir: str):
  """Renders (and prepares) the frames, runs every row and prints the table."""
  config = importlib.import_module(f"configs.{args.config}").get_config()
  preprocess = config.data.preprocess
  height, width = (int(v) for v in args.frame_size.split("x"))
  folders = {style: translate.render_frames(
      os.path.join(work_dir, f"{style}_{height}x{width}"), args.frames, style, height, width)
      for style in ("sim", "real")}
  inputs = {}
  for name in args.inputs.split(","):
    if name == "folder":
      inputs["folder, on the fly"] = {s: f"folder:{f}" for s, f in folders.items()}
    elif name == "prepared":
      specs = {}
      for style, folder in folders.items():
        out = f"{folder}_prepared_{args.config}"
        prepare(folder, out, preprocess, out + ".log")
        specs[style] = f"prepared:{out}"
      inputs[f"prepared ({preprocess.split('|')[0]} done once)"] = specs
    else:
      raise SystemExit(f"--inputs: unknown input {name!r}; expected folder and/or prepared")

  print(f"{args.config} config, {args.frames} toy_streets frames per domain at "
        f"{width}x{height} (PNG), data.preprocess={preprocess}\n")
  print("| config | batch | compute dtype | input | grain workers | read threads | device "
        "prefetch | step only steps/s | end to end steps/s | end to end / step only | end to "
        "end images/s | CLI wall s |")
  print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  dtype = args.compute_dtype or config.compute_dtype
  read_threads = args.read_threads or config.data.read_threads
  steps = _per_batch(args.steps, args.batch_sizes, "steps")
  warmups = _per_batch(args.warmup_steps, args.batch_sizes, "warmup_steps")
  for batch_size, total_steps, warmup_steps in zip(args.batch_sizes, steps, warmups):
    step_only = time_step_only(args.config, batch_size, args.step_only_steps,
                               args.step_only_warmup, args.compute_dtype)
    for input_name, specs in inputs.items():
      for workers, prefetch in itertools.product(
          (int(w) for w in args.workers.split(",")),
          [int(p) for p in args.device_prefetch.split(",")]):
        never = total_steps + 1
        overrides = {
            "model.vgg_weights": "random", "compute_dtype": dtype,
            "total_steps": total_steps, "log_every_steps": args.log_every,
            "log_images_every": never, "checkpoint.every_steps": never,
            "style_distance_images": 0, "data.batch_size": batch_size,
            "data.source": specs["sim"], "data.target": specs["real"],
            "data.worker_count": workers, "data.read_threads": read_threads,
            "data.device_prefetch": prefetch,
            **{f"evals.{name}.every_steps": never for name in config.evals}}
        workdir = os.path.join(work_dir, "runs", f"{args.config}_b{batch_size}_"
                               f"{input_name.split()[0].strip(',')}_w{workers}_p{prefetch}")
        try:
          rate, wall = run_training(train_command(args.config, workdir, overrides), workdir,
                                    warmup_steps, args.timeout)
          cells = f"{rate:.3g} | {rate / step_only:.2f} | {rate * batch_size:.3g} | {wall:.0f}"
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
          print(f"\n{error}\n", file=sys.stderr)
          cells = "failed | | |"
        print(f"| {args.config} | {batch_size} | {dtype} | {input_name} | {workers} | "
              f"{read_threads} | {prefetch} | {step_only:.3g} | {cells} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="vsait", help="a module of configs/ (tiny, demo, "
                      "vsait, ...)")
  parser.add_argument("--batch_sizes", default="1,32", help="comma-separated global batches")
  parser.add_argument("--steps", default="600", help="the CLI's total steps: one value, or "
                      "one per batch size")
  parser.add_argument("--warmup_steps", default="200", help="steps before the timed windows "
                      "(rounded up to a multiple of --log_every): one value, or one per batch")
  parser.add_argument("--log_every", type=int, default=50,
                      help="config.log_every_steps: the timing windows")
  parser.add_argument("--inputs", default="folder,prepared",
                      help="folder (on the fly) and/or prepared (python -m i2i_jax.prepare)")
  parser.add_argument("--workers", default="0",
                      help="comma-separated config.data.worker_count values (a row each)")
  parser.add_argument("--device_prefetch", default="2",
                      help="comma-separated config.data.device_prefetch values (a row each)")
  parser.add_argument("--read_threads", type=int, default=0,
                      help="config.data.read_threads (0: the config's)")
  parser.add_argument("--compute_dtype", default=None, help="default: the config's")
  parser.add_argument("--frames", type=int, default=64, help="PNG frames per domain")
  parser.add_argument("--frame_size", default="1052x1914", help="HxW of the frames")
  parser.add_argument("--step_only_steps", type=int, default=20)
  parser.add_argument("--step_only_warmup", type=int, default=3)
  parser.add_argument("--timeout", type=float, default=600, help="seconds per CLI run")
  parser.add_argument("--work_dir", default="", help="frames, prepared data, workdirs and "
                      "logs (kept; frames and prepared data are reused); default: temporary")
  args = parser.parse_args()
  args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  if args.work_dir:
    table(args, args.work_dir)
  else:
    with tempfile.TemporaryDirectory() as work_dir:
      table(args, work_dir)


if __name__ == "__main__":
  main()
