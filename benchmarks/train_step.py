"""Train-step throughput and FLOPs, and where the FLOPs of one step go.

  python benchmarks/train_step.py [--configs tiny,demo,vsait] [--steps 3] \
      [--compute_dtype float32] [--batch_sizes 1,8] [--peak_tflops 989] \
      [--split_config vsait]

For each config (and each of --batch_sizes, else the config's batch): the
jitted `i2i_jax.families.vsait.train_step` at the config's crop size on all local devices
(batch split over them), timed over `--steps` steps after one compiling call
and `--warmup` more. FLOPs per step are XLA's cost analysis of the step
compiled for the CPU (XLA:GPU's analysis does not count cuDNN convolutions);
with --peak_tflops (per device) the table adds the model FLOP utilisation,
FLOPs/s over the devices' peak. The split attributes the FLOPs
of one step of `--split_config` to the generator, VGG, LSH and discriminator
(with the map network), from the cost analysis of each piece as the step uses
it; their sum is printed next to the whole step's count as a check.
"""

import argparse
import functools
import importlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax import compile_options
from i2i_jax import sharding
from i2i_jax.families import vsait as vsait_family
from i2i_jax.models import vsait

_PARSER = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_PARSER.add_argument("--configs", default="tiny,demo,vsait",
                     help="comma-separated config modules under configs/ ('' for none)")
_PARSER.add_argument("--steps", type=int, default=3, help="timed steps per config")
_PARSER.add_argument("--warmup", type=int, default=1, help="untimed steps after the compiling one")
_PARSER.add_argument("--batch_sizes", default="",
                     help="comma-separated global batch sizes (default: each config's own)")
_PARSER.add_argument("--peak_tflops", type=float, default=0.0,
                     help="peak FLOP/s per device in TFLOP/s, for the MFU column (0: no column)")
_PARSER.add_argument("--compute_dtype", default=None,
                     help="override config.compute_dtype (float32, bfloat16)")
_PARSER.add_argument("--split_config", default="vsait",
                     help="config whose FLOPs are split ('' for none)")
_PARSER.add_argument("--cpu_options_rounds", type=int, default=0,
                     help="also time each config that sets config.cpu_compiler_options "
                          "without them, alternating the two compiled steps over this many "
                          "rounds of --steps steps (medians; 0: only with them)")


def _crop_shape(config) -> tuple[int, int]:
  """(H, W) of the training crops, from the last crop or resize op of data.preprocess."""
  ops = re.findall(r"(random_crop|center_crop|resize)\((\d+),\s*(\d+)\)", config.data.preprocess)
  crops = [op for op in ops if op[0] != "resize"] or ops
  if not crops:
    raise ValueError(f"config.data.preprocess={config.data.preprocess!r} fixes no image size")
  return int(crops[-1][1]), int(crops[-1][2])


def _load(name: str, compute_dtype: str | None):
  config = importlib.import_module(f"configs.{name}").get_config()
  config.model.vgg_weights = "random"  # timing does not depend on the weights
  if compute_dtype:
    config.compute_dtype = compute_dtype
  return config


def _flops(fn, *args) -> float:
  """XLA's FLOP count of fn(*args), compiled for the CPU whatever the default backend.

  XLA:GPU's cost analysis leaves out the convolutions it hands to cuDNN, so the
  count always comes from the CPU program (the same HLO before fusion).
  """
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  args = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu), args)
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def compiled_step(name: str, compute_dtype: str | None, batch_size: int | None = None,
                  cpu_compiler_options: bool = True):
  """The jitted train step of config `name`, compiled, with its state and a random batch.

  With cpu_compiler_options (on a CPU), compiled with the config's, as the train
  CLI does; else without.

  Returns (step_fn, state, batch, row): step_fn(state, batch) -> (state, metrics) donates
  the state; the batch holds uniform [-1, 1) float32 images on all local devices (batch
  split over them); row has the table's config, batch, crop, devices, dtype and
  compile_s (compiling call and the first step).
  """
  config = _load(name, compute_dtype)
  fns = vsait_family.make_step_functions(config)
  mesh = sharding.make_mesh(jax.local_devices())
  height, width = _crop_shape(config)
  batch_size = max(batch_size or config.data.batch_size, mesh.size)
  init = lambda: vsait_family.create_train_state(
      fns, vsait.init_variables(fns.modules, jax.random.key(0), (height, width)))
  shardings = sharding.state_shardings(jax.eval_shape(init), mesh, config.sharding,
                                       vsait_family.is_fsdp_leaf)
  state = jax.jit(init, out_shardings=shardings)()
  images = jax.random.uniform(jax.random.key(1), (2, batch_size, height, width, 3),
                              minval=-1, maxval=1)
  batch = sharding.global_batch({"source": images[0], "target": images[1]}, mesh)
  step = jax.jit(functools.partial(vsait_family.train_step, fns=fns),
                 in_shardings=(shardings, sharding.batch_sharding(mesh)),
                 out_shardings=(shardings, None), donate_argnums=0)
  start = time.perf_counter()
  # The config's CPU compiler options, as the train CLI compiles it.
  compiled = step.lower(state, batch).compile(
      compiler_options=compile_options.cpu_compiler_options(config) if cpu_compiler_options else None)
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  row = {"config": name, "batch": batch_size, "crop": f"{height}x{width}",
         "devices": mesh.size, "dtype": config.compute_dtype,
         "compile_s": time.perf_counter() - start,
         "step_fn": functools.partial(vsait_family.train_step, fns=fns)}
  return compiled, state, batch, row


def time_steps(step_fn, state, batch, steps: int, warmup: int):
  """(steps/s over `steps` calls after `warmup` untimed ones, final state)."""
  for _ in range(warmup):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step_fn(state, batch)
  jax.block_until_ready(metrics)
  return steps / (time.perf_counter() - start), state


def benchmark(name: str, steps: int, warmup: int, compute_dtype: str | None,
              batch_size: int | None = None, count_flops: bool = True) -> dict:
  """Times `steps` jitted train steps of config `name`; returns one table row.

  count_flops: add "gflops", XLA's count for the CPU program (a CPU compile: ~16 s
  for the paper config).
  """
  compiled, state, batch, row = compiled_step(name, compute_dtype, batch_size)
  steps_per_s, state = time_steps(compiled, state, batch, steps, warmup)
  step_fn = row.pop("step_fn")
  row |= {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * row["batch"]}
  if count_flops:
    row["gflops"] = _flops(step_fn, state, batch) / 1e9
  return row


def flop_split(name: str, compute_dtype: str | None) -> dict[str, float]:
  """GFLOPs of one step (batch 1) per network, counted as the step runs them.

  G step: G forward + backward (parameters); VGG and LSH forward on the source
  and forward + backward (input) on the translation; map network forward +
  backward (parameters); D forward + backward (input) on two fakes.
  D step: G forward; VGG and LSH forward on the translation and the target;
  map network forward; D forward + backward (parameters) on two fakes and one real.
  """
  config = _load(name, compute_dtype)
  fns = vsait_family.make_step_functions(config)
  modules = fns.modules
  height, width = _crop_shape(config)
  variables = jax.eval_shape(
      lambda: vsait.init_variables(modules, jax.random.key(0), (height, width)))
  images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  features = jax.eval_shape(modules.vgg.apply, variables["vgg"], images)
  hypervectors = jax.eval_shape(modules.lsh.apply, variables["lsh"], features)

  def cost(apply, v, x, wrt=None):
    """FLOPs of apply(v, x), or of its forward + backward w.r.t. argument `wrt`."""
    if wrt is None:
      return _flops(apply, v, x)
    total = lambda v, x: sum(jnp.sum(o.astype(jnp.float32)) for o in jax.tree.leaves(apply(v, x)))
    return _flops(jax.grad(total, argnums=wrt), v, x)

  g, vgg_, lsh_ = modules.generator.apply, modules.vgg.apply, modules.lsh.apply
  mapn, disc = modules.map_net.apply, modules.discriminator.apply
  split = {
      "generator": cost(g, variables["generator"], images, 0) + cost(g, variables["generator"], images),
      "vgg": 3 * cost(vgg_, variables["vgg"], images) + cost(vgg_, variables["vgg"], images, 1),
      "lsh": 3 * cost(lsh_, variables["lsh"], features) + cost(lsh_, variables["lsh"], features, 1),
      "discriminator+map": (
          cost(mapn, variables["map_net"], hypervectors, 0) + cost(mapn, variables["map_net"], hypervectors)
          + 2 * cost(disc, variables["discriminator"], hypervectors, 1)
          + 3 * cost(disc, variables["discriminator"], hypervectors, 0)),
  }
  state = jax.eval_shape(lambda: vsait_family.create_train_state(
      fns, vsait.init_variables(modules, jax.random.key(0), (height, width))))
  batch = {"source": images, "target": images}
  whole = _flops(functools.partial(vsait_family.train_step, fns=fns), state, batch)
  return {k: v / 1e9 for k, v in split.items()} | {"whole step": whole / 1e9}


def compare_cpu_compiler_options(args) -> None:
  """Prints steps/s with and without config.cpu_compiler_options, alternated in rounds."""
  print("\nconfig.cpu_compiler_options, side by side (median steps/s over "
        f"{args.cpu_options_rounds} alternating rounds of {args.steps} steps):")
  print("| config | batch | options | steps/s without | steps/s with | with / without |")
  print("|---|---:|---|---:|---:|---:|")
  for name in filter(None, args.configs.split(",")):
    options = compile_options.cpu_compiler_options(_load(name, args.compute_dtype))
    if not options:
      continue
    variants = [list(compiled_step(name, args.compute_dtype, cpu_compiler_options=use))
                for use in (False, True)]
    rates = ([], [])
    for _ in range(args.cpu_options_rounds):
      for variant, rate in zip(variants, rates):
        compiled, state, batch, _ = variant
        steps_per_s, variant[1] = time_steps(compiled, state, batch, args.steps, args.warmup)
        rate.append(steps_per_s)
    without, with_options = (float(np.median(rate)) for rate in rates)
    print(f"| {name} | {variants[0][3]['batch']} | {options} | {without:.3f} | "
          f"{with_options:.3f} | {with_options / without:.2f} |", flush=True)


def main():
  args = _PARSER.parse_args()
  print(f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}")
  mfu = " MFU |" if args.peak_tflops else ""
  print("| config | batch | crop | devices | compute dtype | compile s | steps/s | images/s "
        f"| GFLOPs/step |{mfu}")
  print("|---|---:|---|---:|---|---:|---:|---:|---:|" + ("---:|" if mfu else ""))
  batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b] or [None]
  for name in filter(None, args.configs.split(",")):
    for batch_size in batch_sizes:
      r = benchmark(name, args.steps, args.warmup, args.compute_dtype, batch_size)
      row = (f"| {r['config']} | {r['batch']} | {r['crop']} | {r['devices']} | {r['dtype']} "
             f"| {r['compile_s']:.1f} | {r['steps_per_s']:.3f} | {r['images_per_s']:.3f} "
             f"| {r['gflops']:.1f} |")
      if args.peak_tflops:
        utilisation = r["gflops"] * r["steps_per_s"] / (1e3 * args.peak_tflops * r["devices"])
        row += f" {100 * utilisation:.1f}% |"
      print(row, flush=True)
  if args.cpu_options_rounds:
    compare_cpu_compiler_options(args)
  if args.split_config:
    split = flop_split(args.split_config, args.compute_dtype)
    parts = sum(v for k, v in split.items() if k != "whole step")
    print(f"\nFLOPs of one {args.split_config} step (batch 1), by network:")
    print("| network | GFLOPs | share |")
    print("|---|---:|---:|")
    for k, v in split.items():
      if k != "whole step":
        print(f"| {k} | {v:.1f} | {100 * v / parts:.1f}% |")
    print(f"| sum of pieces | {parts:.1f} | |")
    print(f"| whole step (XLA) | {split['whole step']:.1f} | |")


if __name__ == "__main__":
  main()
