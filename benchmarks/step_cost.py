"""Train-step time of the toy-world methods side by side: interleaved rounds in one process.

  PYTHONPATH=. python benchmarks/step_cost.py --methods=vanilla,semantic,label_bound,projection,\
spade,spade+label_bound --world=mismatch --rounds=6 --steps=5 [--json=FILE]

Each method is `benchmarks/toy_world_table.py`'s (its config and --config overrides,
the label-guided ones with a random frozen source segmenter: timing does not depend
on its weights). All steps are compiled first, then every round times --steps steps
of each method in turn, so that a change of load hits all methods alike; a method's
figure is the median over rounds of its mean step time. The training logs' steps/s
(the ablation table's column) come from runs at different times and loads; this is
the step cost to compare. Prints a Markdown table (ms per step, ratio to vanilla);
--json writes {method: ms per step}, which `toy_world_table.py --step_costs=FILE`
puts beside its logged steps/s.
"""

import argparse
import ast
import functools
import importlib
import json
import os
import tempfile
import time

import jax
import numpy as np

import toy_world_table

from i2i_jax import compile_options
from i2i_jax import families
from i2i_jax import sharding
from i2i_jax import train
from i2i_jax.data import pipeline
from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.models import vsait

_PARSER = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_PARSER.add_argument("--methods", default="vanilla,semantic,label_bound,projection,spade,"
                     "spade+label_bound", help="comma-separated toy_world_table methods")
_PARSER.add_argument("--world", default="mismatch")
_PARSER.add_argument("--rounds", type=int, default=6)
_PARSER.add_argument("--steps", type=int, default=5, help="timed steps per method and round")
_PARSER.add_argument("--json", default="", help="also write {method: ms per step} here")


def _set(config, key: str, text: str):
  """config[key] = text parsed like the field it replaces (bool, number or string)."""
  *path, name = key.split(".")
  for part in path:
    config = config[part]
  old = config.get(name)
  if isinstance(old, bool):
    value = text.lower() in ("true", "1")
  elif isinstance(old, (int, float)):
    value = type(old)(ast.literal_eval(text))
  else:
    value = text
  config[name] = value


def random_segmenter(folder: str, num_classes: int) -> str:
  """Saves a randomly initialised frozen source segmenter in `folder`; returns the folder."""
  model = segmenter_lib.SmallUNet(num_classes, vsait.SEGMENTER_FEATURES)
  params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  segmenter_lib.FlaxSegmenter(num_classes, params, vsait.SEGMENTER_FEATURES).save(folder)
  return folder


def method_config(method: str, world: str, source_segmenter: str):
  """The ml_collections config `toy_world_table.py` trains `method` with."""
  spec, overrides = toy_world_table.METHODS[method]
  path, argument = spec.format(world=world).split(":")
  config = importlib.import_module(path.removesuffix(".py").replace("/", ".")).get_config(argument)
  for override in overrides:
    key, text = override.removeprefix("--config.").split("=", 1)
    _set(config, key, text.format(source_segmenter=source_segmenter))
  return config


def compiled_step(config):
  """(jitted step, state, device batch) of `config` on all local devices."""
  mesh = sharding.make_mesh()
  family = families.get(config)
  fns = family.make_step_functions(config)
  state, shardings = train.create_state(config, family, fns, mesh,
                                        family.pretrained_variables(config, fns))
  host_batch = next(pipeline.make_train_iterator(config.data, seed=config.seed))
  batch = sharding.global_batch({k: host_batch[k] for k in family.batch_keys(fns)}, mesh)
  step = jax.jit(functools.partial(family.train_step, fns=fns),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, None), donate_argnums=0)
  step = step.lower(state, batch).compile(compiler_options=compile_options.cpu_compiler_options(config))
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return step, state, batch


def main():
  args = _PARSER.parse_args()
  methods = args.methods.split(",")
  steps = {}
  with tempfile.TemporaryDirectory() as folder:
    segmenter = random_segmenter(folder, method_config("vanilla", args.world, "").model
                                 .label_classes)
    for method in methods:
      start = time.perf_counter()
      steps[method] = list(compiled_step(method_config(method, args.world, segmenter)))
      print(f"{method}: compiled in {time.perf_counter() - start:.1f} s", flush=True)
  seconds = {method: [] for method in methods}
  for _ in range(args.rounds):
    for method in methods:
      step, state, batch = steps[method]
      start = time.perf_counter()
      for _ in range(args.steps):
        state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
      seconds[method].append((time.perf_counter() - start) / args.steps)
      steps[method][1] = state
  cost = {method: 1e3 * float(np.median(values)) for method, values in seconds.items()}
  print(f"\n{args.world}, {jax.device_count()} x {jax.devices()[0].device_kind}, median of "
        f"{args.rounds} interleaved rounds of {args.steps} steps\n")
  print("| method | ms per step | ÷ vanilla's |")
  print("|---|---:|---:|")
  for method in methods:
    ratio = f"{cost[method] / cost['vanilla']:.2f}" if "vanilla" in cost else "—"
    print(f"| {method} | {cost[method]:.0f} | {ratio} |")
  if args.json:
    with open(args.json + ".tmp", "w") as f:
      json.dump(cost, f, indent=1)
    os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
  main()
