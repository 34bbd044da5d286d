"""Flipping and lost detail, measured: translators trained on the toy worlds, one table.

  python benchmarks/toy_world_table.py --root=/tmp/toy_table \
      --worlds=mismatch,overgrown,matched --seeds=0,1
      issue 13's baseline: vanilla VSAIT (configs/toy_flipping.py, the demo's
      model and budget) trained from sim_detail into each real world, beside the
      identity (F(X) = X) and ideal (F(X) = the real-style render of the same
      scenes) rows; ~1 hour per trained row and seed on a 2-core CPU.
  python benchmarks/toy_world_table.py --root=/tmp/toy_table --worlds=overgrown \
      --methods=vanilla,semantic,label_bound,projection,spade,semantic+label_bound,identity,ideal \
      --json=benchmarks/results/label_guided_ablation.json
      issue 14's ablation: the label-guided options (docs/label_guided.md) with
      the same budget and seeds.
  python benchmarks/toy_world_table.py --root=/tmp/toy_table --worlds=mismatch \
      --methods=vanilla,cut,cyclegan,srunit,srunit_paper,identity,ideal --seeds=0,1,2
      issue 16's comparison: CUT, CycleGAN and SRUNIT (configs/toy_flipping.py:WORLD,FAMILY:
      the official losses and optimisers at the demo's width, budget and data;
      srunit_paper: SRUNIT with the paper's robustness loss, docs/srunit.md).

Worlds (the target domain; docs/toy_world.md): `mismatch` real_mismatch
(Cityscapes-like differences from sim), `overgrown` real_overgrown (the same
pushed to its end), `matched` real_detail (the control: only the camera
differs). Every run is evaluated on the same held-out scenes, so the rows are
comparable across worlds. Every step is a command users run, started as a
subprocess, and skipped when its output exists, so a rerun resumes:

  1. data       python -m i2i_jax.data.toy_streets: --val_images val scenes
                (sim_detail, and their ideal, real_mismatch = real_detail) and
                --target_images train scenes of each real world (Y), at 128x256.
  2. segmenters python -m i2i_jax.train_segmenter on real_detail and
                real_mismatch train scenes (reads F(X) for the flip metrics), and
                on sim_detail for the label-guided options' frozen segmenter.
  3. per method, world and seed: python -m i2i_jax.train, then python -m
                i2i_jax.translate of the val scenes.
  4. per row:   python -m i2i_jax.evaluate (FD, flips raw and in excess of the
                ideal's, detail retention, light states, downstream gain).

Writes ROOT/picture_<world>.png (X, each trained method's F(X) of the first
seed and the ideal, for two scenes and crops of lights and signs) and
ROOT/table.md and ROOT/table.json (with --picture/--markdown/--json, copies too):
one row per method and world, a list of one value per seed in each column (the
JSON's "method", "world", "seeds", "fd", "flip_rate", "excess_flip_rate",
"detail_retention", "light_state_preserved", "downstream_gain", "steps_per_sec").
Columns (mean +- std over seeds): FD to Y (random-init Inception offline), flip
rate (share of X's labelled pixels that seg(F(X)) reads as another class),
excess flip rate (the same minus the ideal translation's: what the translator
adds to the segmenter's own errors), the excess of the classes the mismatched
worlds shrink, the worst excess class pairs, segmenter-free detail retention of
poles, lights and signs, light-state accuracy, downstream gain (mIoU on Y of a
U-Net trained on F(X) minus one trained on X, at 64x128) and training steps/s
with the step time relative to vanilla's in the same world: from the runs' logs
(runs share the CPU: a rough figure), or, with --step_costs, from
`benchmarks/step_cost.py`'s side-by-side measurement.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from i2i_jax.metrics import detail_pictures
from i2i_jax.metrics import pictures

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD_TARGETS = {"mismatch": "real_mismatch", "overgrown": "real_overgrown",
                 "matched": "real_detail"}
HEIGHT, WIDTH = 128, 256
# The downstream U-Nets train at half the evaluation size: 4x cheaper on a CPU, and the
# classes they are scored on (road, building, sky, ...) are large.
DOWNSTREAM_SIZE = "64x128"
# The label-guided options (docs/label_guided.md) read the source labels and a frozen
# segmenter trained on the *source* images ({source_segmenter}), never the metrics' one.
_LABELS = ["--config.data.with_labels=True", "--config.model.semantic_segmenter={source_segmenter}"]
# The toy targets come with labels, so the class-conditioned discriminators read the target's
# own label maps (as a user with labelled real data would), not the source segmenter's guesses.
_TARGET_LABELS = ["--config.data.with_target_labels=True"]
# method -> config file (":{world}" is filled in) and --config overrides; None: not trained.
METHODS = {
    "vanilla": ("configs/toy_flipping.py:{world}", []),
    "semantic": ("configs/toy_flipping.py:{world}", _LABELS + ["--config.loss.semantic_coef=1.0"]),
    "label_bound": ("configs/toy_flipping.py:{world}",
                    _LABELS + _TARGET_LABELS + ["--config.model.label_bound_discriminator=True"]),
    "projection": ("configs/toy_flipping.py:{world}", _LABELS + _TARGET_LABELS + [
        "--config.model.class_conditional_discriminator=True"]),
    "spade": ("configs/toy_flipping.py:{world}",
              _LABELS + ["--config.model.label_conditioned_generator=True"]),
    "semantic+label_bound": ("configs/toy_flipping.py:{world}", _LABELS + _TARGET_LABELS + [
        "--config.loss.semantic_coef=1.0", "--config.model.label_bound_discriminator=True"]),
    "spade+label_bound": ("configs/toy_flipping.py:{world}", _LABELS + _TARGET_LABELS + [
        "--config.model.label_conditioned_generator=True",
        "--config.model.label_bound_discriminator=True"]),
    "cut": ("configs/toy_flipping.py:{world},cut", []),
    "cyclegan": ("configs/toy_flipping.py:{world},cyclegan", []),
    "srunit": ("configs/toy_flipping.py:{world},srunit", []),
    # SRUNIT with the paper's robustness loss, G trained from the start (docs/srunit.md).
    "srunit_paper": ("configs/toy_flipping.py:{world},srunit", [
        "--config.loss.reg_variant=paper", "--config.loss.freeze_generator_while_inactive=False"]),
    "identity": None,
    "ideal": None,
}
COLUMNS = ("fd", "flip_rate", "excess_flip_rate", "detail_retention", "light_state_preserved",
           "downstream_gain")
# Classes the mismatched real worlds have less of than sim (docs/toy_world.md): a translator
# that repaints to match the target's statistics flips them first.
SHRUNK_CLASSES = ("sky", "building", "road")


def run(command: list[str], log_path: str) -> None:
  """Runs `command` from the repository root, output to `log_path`; exits naming it on failure."""
  print("$", " ".join(command), flush=True)
  start = time.time()
  with open(log_path, "a") as log:
    result = subprocess.run(command, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT)
  if result.returncode:
    sys.exit(f"failed (exit {result.returncode}) after {time.time() - start:.0f} s: "
             f"{' '.join(command)}; see {log_path}")
  print(f"  done in {time.time() - start:.0f} s", flush=True)


def prepare_data(root: str, val_images: int, target_images: int) -> None:
  """ROOT/data/val/<style>/... and ROOT/data/train/<real style>/... at HEIGHT x WIDTH."""
  python = sys.executable
  for split, count, styles in (("val", val_images, ("sim_detail", "real_mismatch")),
                               ("train", target_images, tuple(WORLD_TARGETS.values()))):
    for style in styles:
      folder = os.path.join(root, "data", split)
      if os.path.isdir(os.path.join(folder, style, "images")):
        continue
      run([python, "-m", "i2i_jax.data.toy_streets", f"--out={folder}", f"--n={count}",
           f"--style={style}", f"--split={split}", f"--height={HEIGHT}", f"--width={WIDTH}"],
          os.path.join(root, "data.log"))


def train_segmenter(root: str, name: str, styles: list[str], steps: int) -> str:
  """ROOT/<name>: a U-Net trained on the train scenes of toy_streets `styles`."""
  out = os.path.join(root, name)
  if not os.path.isdir(out):
    run([sys.executable, "-m", "i2i_jax.train_segmenter",
         *[f"--data=toy_streets:{style}" for style in styles], f"--size={HEIGHT}x{WIDTH}",
         f"--steps={steps}", f"--out={out}"], os.path.join(root, f"{name}.log"))
  return out


def train_and_translate(root: str, method: str, world: str, seed: int, segmenter: str,
                        source_segmenter: str, steps: int | None) -> tuple[str, float]:
  """Trains `method` on `world` with `seed`, translates the val scenes.

  Returns:
    (the folder of F(X), the run's median logged training steps/s).
  """
  config, overrides = METHODS[method]
  workdir = run_dir(root, method, world, seed)
  os.makedirs(workdir, exist_ok=True)
  log = os.path.join(workdir, "commands.log")
  command = [sys.executable, "-m", "i2i_jax.train", f"--config={config.format(world=world)}",
             f"--workdir={workdir}", f"--config.seed={seed}", f"--config.data.shuffle_seed={seed}",
             f"--config.evals.flips.segmenter={segmenter}",
             *[override.format(source_segmenter=source_segmenter) for override in overrides]]
  if steps:
    command.append(f"--config.total_steps={steps}")
  run(command, log)
  translated = os.path.join(workdir, "translated_val")
  if not os.path.isfile(os.path.join(translated, "manifest.json")):
    # With the simulator's labels, as users translate: a label-conditioned generator is
    # conditioned on them (as in training), the others copy them into OUTPUT/labels.
    val = os.path.join(root, "data", "val", "sim_detail")
    run([sys.executable, "-m", "i2i_jax.translate", f"--workdir={workdir}",
         f"--input={os.path.join(val, 'images')}", f"--labels={os.path.join(val, 'labels')}",
         f"--output={translated}"], log)
  return os.path.join(translated, "images"), training_speed(workdir)


def run_dir(root: str, method: str, world: str, seed: int) -> str:
  return os.path.join(root, "runs", f"{method}_{world}_seed{seed}")


def training_speed(workdir: str) -> float:
  """The median of a run's logged training steps/s."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    speeds = [record["steps_per_sec"] for record in map(json.loads, f)
              if record.get("steps_per_sec")]
  return float(np.median(speeds))


def evaluate(root: str, translated: str, world: str, out: str, segmenter: str,
             downstream_steps: int, seed: int) -> dict:
  """`python -m i2i_jax.evaluate` of one F(X) of the val scenes against world's Y; its metrics.

  `seed` seeds the evaluation itself (the random-init Inception of FD, the downstream U-Nets).
  """
  if not os.path.isfile(os.path.join(out, "report.json")):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    val = os.path.join(root, "data", "val")
    target = os.path.join(root, "data", "train", WORLD_TARGETS[world])
    run([sys.executable, "-m", "i2i_jax.evaluate",
         f"--source=folder:{val}/sim_detail/images", f"--labels={val}/sim_detail/labels",
         f"--instances={val}/sim_detail/instances", f"--translated=folder:{translated}",
         f"--ideal=folder:{val}/real_mismatch/images", f"--target=folder:{target}/images",
         f"--target_labels={target}/labels", f"--segmenter={segmenter}",
         f"--downstream_steps={downstream_steps}", f"--segmenter_size={DOWNSTREAM_SIZE}",
         f"--seed={seed}", f"--out={out}"],
        os.path.join(os.path.dirname(out), "evaluate.log"))
  with open(os.path.join(out, "report.json")) as f:
    return json.load(f)["metrics"]


def row_values(metrics: dict) -> dict:
  """The table's columns (and the excess pair rates) from one report's metrics."""
  fid = metrics.get("fid", {})
  fd = next((value for key, value in fid.items() if key.startswith(("FID", "FD"))
             and "/" not in key), float("nan"))
  flips = metrics["flips"]
  downstream = metrics.get("downstream", {})
  return {
      "fd": fd,
      "flip_rate": flips["flip_rate"],
      "excess_flip_rate": flips["excess_flip_rate"],
      "detail_retention": metrics["detail"]["retention"],
      "light_state_preserved": metrics["detail"]["light_state_accuracy"],
      "downstream_gain": downstream.get("mIoU_gain", float("nan")),
      "excess_pairs": {key.split("/", 1)[1]: value for key, value in flips.items()
                       if key.startswith("excess_flip/")},
      "excess_by_class": {name: flips.get(f"excess_flip_rate/{name}", float("nan"))
                          for name in SHRUNK_CLASSES},
  }


def _read_images(folder: str, names: list[str]) -> list[np.ndarray]:
  return [np.asarray(Image.open(os.path.join(folder, name)).convert("RGB")) for name in names]


def small_objects(instance_folder: str, names: list[str], count: int) -> list[tuple[int, list]]:
  """(image index, box) of up to `count` well visible traffic lights and signs, lights first."""
  found = {"traffic light": [], "traffic sign": []}
  for index, name in enumerate(names):
    with open(os.path.join(instance_folder, os.path.splitext(name)[0] + ".json")) as f:
      for instance in json.load(f):
        if (instance["class"] in found and instance.get("visible", 1.0) >= 0.9
            and instance["area"] >= 30):
          found[instance["class"]].append((index, instance["box"]))
  lights, signs = found["traffic light"], found["traffic sign"]
  alternating = [item for pair in zip(lights, signs) for item in pair]
  return (alternating + lights[len(signs):] + signs[len(lights):])[:count]


def comparison_picture(root: str, world: str, methods: list[str], seed: int,
                       num_scenes: int = 2, num_crops: int = 6) -> np.ndarray | None:
  """X | each method's F(X) (run `seed`) | ideal, for the first val scenes and small objects.

  Returns [H, W, 3] uint8 on white: a title, `num_scenes` whole scenes, then
  `num_crops` rows of crops around traffic lights and signs of X (enlarged, the
  object's box outlined); None when no trained method has translated the scenes.
  """
  val = os.path.join(root, "data", "val")
  names = sorted(os.listdir(os.path.join(val, "sim_detail", "images")))[:8]
  columns = [("X: source", os.path.join(val, "sim_detail", "images"))]
  for method in methods:
    folder = os.path.join(run_dir(root, method, world, seed), "translated_val", "images")
    if METHODS[method] is not None and os.path.isdir(folder):
      columns.append((f"{method} (seed {seed})", folder))
  if len(columns) == 1:
    return None
  columns.append(("ideal translation", os.path.join(val, "real_mismatch", "images")))
  images = [_read_images(folder, names) for _, folder in columns]
  gap = detail_pictures.GAP
  height, width = images[0][0].shape[:2]
  scene_width = len(columns) * (width + gap)
  rows = [pictures.text_block([
      f"{world}: the first {num_scenes} held-out scenes and {num_crops} traffic lights and signs "
      "(crops enlarged, magenta frame = the object in X). Columns: "
      + " | ".join(title for title, _ in columns) + "."], scene_width)]
  rows.append(np.concatenate([pictures.text_block([title], width + gap)
                              for title, _ in columns], axis=1))
  for index in range(num_scenes):
    rows.append(np.concatenate([np.pad(column[index], ((0, gap), (0, gap), (0, 0)),
                                       constant_values=255) for column in images], axis=1))
  for index, box in small_objects(os.path.join(val, "sim_detail", "instances"), names,
                                  num_crops):
    # Each crop under its column's scenes.
    crop_padding = max(gap, width + gap - detail_pictures.CROP_WIDTH)
    crops = [np.pad(detail_pictures.crop_around(column[index], box),
                    ((0, gap), (0, crop_padding), (0, 0)), constant_values=255)
             for column in images]
    rows.append(np.concatenate(crops, axis=1))
  picture_width = max(row.shape[1] for row in rows)
  return np.concatenate([np.pad(row, ((0, 0), (0, picture_width - row.shape[1]), (0, 0)),
                                constant_values=255) for row in rows])


def summarise(values: list[float]) -> str:
  values = np.asarray(values, np.float64)
  if len(values) == 1:
    return f"{values[0]:.3f}"
  return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def markdown(rows: list[dict], step_costs: dict[str, float] | None = None) -> str:
  """The table; with `step_costs` ({method: ms per step}, `benchmarks/step_cost.py`) the
  step-time ratio is that side-by-side measurement's, else the logged steps/s ratio."""
  ratio_source = "side by side" if step_costs else "from the logs"
  lines = ["| method | world | seeds | FD | flip rate | excess flip rate | excess of "
           + " / ".join(SHRUNK_CLASSES) + " | worst excess pairs "
           "| detail retention | light state | downstream gain | train steps/s (step time "
           f"÷ vanilla's, {ratio_source}) |",
           "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
  vanilla_speed = {row["world"]: np.mean(row["steps_per_sec"]) for row in rows
                   if row["method"] == "vanilla" and row["steps_per_sec"]}
  for row in rows:
    speed = "—"
    if row["steps_per_sec"]:
      speed = summarise(row["steps_per_sec"])
      if step_costs:
        if row["method"] in step_costs and "vanilla" in step_costs:
          speed += f" (×{step_costs[row['method']] / step_costs['vanilla']:.2f})"
      elif row["world"] in vanilla_speed:
        speed += f" (×{vanilla_speed[row['world']] / np.mean(row['steps_per_sec']):.2f})"
    pairs = {}
    for seed_pairs in row["excess_pairs"]:
      for pair, value in seed_pairs.items():
        pairs.setdefault(pair, []).append(value)
    # A pair is reported for a seed when it is among that run's largest flips or excesses.
    worst = sorted((pair for pair in pairs if np.mean(pairs[pair]) > 0),
                   key=lambda pair: -np.mean(pairs[pair]))[:3]
    worst_text = ", ".join(f"{pair} {np.mean(pairs[pair]):+.2f}" for pair in worst) or "—"
    lines.append(f"| {row['method']} | {row['world']} | {len(row['seeds'])} | "
                 + " | ".join(summarise(row[column]) for column in COLUMNS[:3])
                 + " | " + " / ".join(
                     f"{np.mean([seed[name] for seed in row['excess_by_class']]):.3f}"
                     for name in SHRUNK_CLASSES)
                 + f" | {worst_text} | "
                 + " | ".join(summarise(row[column]) for column in COLUMNS[3:])
                 + f" | {speed} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.splitlines()[1:]))
  parser.add_argument("--root", required=True, help="Working folder (resumable).")
  parser.add_argument("--methods", default="vanilla,identity,ideal",
                      help=f"Rows, from {', '.join(METHODS)}.")
  parser.add_argument("--worlds", default="mismatch,overgrown,matched",
                      help=f"From {', '.join(WORLD_TARGETS)}.")
  parser.add_argument("--seeds", default="0,1,2",
                      help="Seeds of the trained methods (training and shuffling); the identity "
                      "and ideal rows, untrained, are evaluated once per seed with the "
                      "evaluation seeded instead (FD network, downstream U-Nets).")
  parser.add_argument("--steps", type=int, default=0,
                      help="Training steps (0: the config's, the demo budget).")
  parser.add_argument("--val_images", type=int, default=64)
  parser.add_argument("--target_images", type=int, default=200)
  parser.add_argument("--segmenter_steps", type=int, default=2000)
  parser.add_argument("--downstream_steps", type=int, default=300)
  parser.add_argument("--json", default="", help="Also write the table's JSON here.")
  parser.add_argument("--markdown", default="", help="Also write the markdown table here.")
  parser.add_argument("--picture", default="",
                      help="Also write the first world's comparison picture here (PNG).")
  parser.add_argument("--step_costs", default="",
                      help="JSON of benchmarks/step_cost.py ({method: ms per step}): the step "
                      "time ratios of the table come from it (the logged steps/s of runs at "
                      "different loads are a rough figure).")
  parser.add_argument("--table_only", action="store_true",
                      help="Train and evaluate nothing: the table of the runs already evaluated.")
  args = parser.parse_args()
  step_costs = None
  if args.step_costs:  # read before anything runs: a bad path fails now, not after hours
    with open(args.step_costs) as f:
      step_costs = json.load(f)
  methods = args.methods.split(",")
  worlds = args.worlds.split(",")
  seeds = [int(seed) for seed in args.seeds.split(",")]
  for name, known, flag in ((methods, METHODS, "methods"), (worlds, WORLD_TARGETS, "worlds")):
    unknown = sorted(set(name) - set(known))
    if unknown:
      parser.error(f"--{flag}: unknown {', '.join(unknown)}; expected some of {', '.join(known)}")
  root = os.path.abspath(args.root)
  os.makedirs(root, exist_ok=True)
  if not args.table_only:
    prepare_data(root, args.val_images, args.target_images)
  # Reads F(X) for the flip metrics: both real worlds' scenes (none of Y's images).
  segmenter = train_segmenter(root, "segmenter", ["real_detail", "real_mismatch"],
                              args.segmenter_steps)
  source_segmenter = ""
  if any(METHODS[method] and any("{source_segmenter}" in override
                                  for override in METHODS[method][1]) for method in methods):
    source_segmenter = train_segmenter(root, "source_segmenter", ["sim_detail"],
                                       args.segmenter_steps)
  val = os.path.join(root, "data", "val")
  rows = []
  for world in worlds:
    for method in methods:
      trained = METHODS[method] is not None
      row = {"method": method, "world": world, "seeds": seeds,
             "evaluated_seeds": [], "excess_pairs": [], "excess_by_class": [], "steps_per_sec": [],
             **{column: [] for column in COLUMNS}}
      for seed in row["seeds"]:
        out = os.path.join(root, "eval", f"{method}_{world}_seed{seed}")
        if args.table_only and not os.path.isfile(os.path.join(out, "report.json")):
          continue
        if method == "identity":
          translated = os.path.join(val, "sim_detail", "images")
        elif method == "ideal":
          translated = os.path.join(val, "real_mismatch", "images")
        elif args.table_only:
          translated = ""  # evaluated already
          row["steps_per_sec"].append(training_speed(run_dir(root, method, world, seed)))
        else:
          translated, steps_per_sec = train_and_translate(
              root, method, world, seed, segmenter, source_segmenter, args.steps or None)
          row["steps_per_sec"].append(steps_per_sec)
        # Identity trains the downstream U-Net on X twice: its gain is 0 by definition.
        # Trained rows share one evaluation (seed 0: the same FD network for all); the
        # untrained rows have nothing to seed but the evaluation, whose seed varies instead.
        values = row_values(evaluate(root, translated, world, out, segmenter,
                                     0 if method == "identity" else args.downstream_steps,
                                     seed=seed if not trained else 0))
        if method == "identity":
          values["downstream_gain"] = 0.0
        row["evaluated_seeds"].append(seed)
        row["excess_pairs"].append(values.pop("excess_pairs"))
        row["excess_by_class"].append(values.pop("excess_by_class"))
        for column in COLUMNS:
          row[column].append(values[column])
      if row["evaluated_seeds"]:
        row["seeds"] = row.pop("evaluated_seeds")
        rows.append(row)
  table = markdown(rows, step_costs)
  print(table)
  outputs = [(os.path.join(root, "table.md"), table),
             (os.path.join(root, "table.json"), json.dumps(rows, indent=1))]
  if args.markdown:
    outputs.append((args.markdown, table))
  if args.json:
    outputs.append((args.json, json.dumps(rows, indent=1)))
  for path, text in outputs:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)
  for number, world in enumerate(worlds):
    picture = comparison_picture(root, world, methods, seeds[0])
    if picture is not None:
      pictures.write_png(os.path.join(root, f"picture_{world}.png"), picture)
      if args.picture and number == 0:
        pictures.write_png(args.picture, picture)


if __name__ == "__main__":
  main()
