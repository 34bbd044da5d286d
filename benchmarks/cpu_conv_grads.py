"""The CUT generator's stride-1 convs on CPU: plain `nn.Conv` against `layers.cpu_tuned_conv`.

  PYTHONPATH=. python benchmarks/cpu_conv_grads.py [--batch 2] [--repeats 7]

For each conv shape of `configs/cut.py`'s generator at 256x256 (the 7x7 convs
from and to RGB on the reflection-padded maps, the zero-padded 3x3 convs of the
down- and up-sampling stages, a residual conv on its reflection-padded map) it
times, on the same inputs, the forward, the kernel gradient alone and both
gradients, once for the plain conv and once with
`conv_general_dilated=layers.cpu_tuned_conv`, each jitted with the config's
`cpu_compiler_options`; the two variants alternate within every repeat so that
a change of load hits both alike. Prints a Markdown table of medians (ms) and
the largest difference of the gradients (float32 rounding: the same sums in
another order).
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.configs import cut as cut_config
from i2i_jax.models import layers

# (name, input height = width, in channels, out channels, kernel, padding)
SHAPES = [
    ("first 7x7 (RGB -> 64), reflect-padded", 262, 3, 64, 7, "VALID"),
    ("down 3x3 64 -> 128 at 256", 256, 64, 128, 3, ((1, 1), (1, 1))),
    ("down 3x3 128 -> 256 at 128", 128, 128, 256, 3, ((1, 1), (1, 1))),
    ("residual 3x3 256 -> 256, reflect-padded", 66, 256, 256, 3, "VALID"),
    ("up 3x3 256 -> 128 at 128", 128, 256, 128, 3, ((1, 1), (1, 1))),
    ("up 3x3 128 -> 64 at 256", 256, 128, 64, 3, ((1, 1), (1, 1))),
    ("last 7x7 (64 -> RGB), reflect-padded", 262, 64, 3, 7, "VALID"),
]


def _timed(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=2,
                      help="images per conv call (2: G's forward on real_A and real_B)")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  options = cut_config.CPU_COMPILER_OPTIONS
  rng = np.random.default_rng(0)
  print(f"batch {args.batch}, {jax.devices()[0].device_kind}, median of {args.repeats} (ms)\n")
  print("| conv | plain fwd | tuned fwd | plain dW | tuned dW | plain dX+dW | tuned dX+dW "
        "| max abs diff of the gradients |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  for name, size, c_in, c_out, kernel, padding in SHAPES:
    plain = nn.Conv(c_out, (kernel, kernel), padding=padding)
    tuned = plain.clone(conv_general_dilated=layers.cpu_tuned_conv)
    x = jnp.asarray(rng.standard_normal((args.batch, size, size, c_in), np.float32))
    params = plain.init(jax.random.key(0), x)
    cotangent = jnp.asarray(rng.standard_normal(plain.apply(params, x).shape, np.float32))
    functions = {}
    for label, conv in (("plain", plain), ("tuned", tuned)):
      functions[label] = (
          jax.jit(conv.apply, compiler_options=options),
          jax.jit(lambda p, v, g, conv=conv: jax.vjp(lambda q: conv.apply(q, v), p)[1](g),
                  compiler_options=options),
          jax.jit(lambda p, v, g, conv=conv: jax.vjp(conv.apply, p, v)[1](g),
                  compiler_options=options))
    grads = {label: fns[2](params, x, cotangent) for label, fns in functions.items()}
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(grads["plain"]), jax.tree.leaves(grads["tuned"])))
    times = {(label, kind): [] for label in functions for kind in range(3)}
    for repeat in range(args.repeats + 1):  # the first round warms up
      for label, (forward, kernel_grad, both) in functions.items():
        for kind, (fn, fn_args) in enumerate(((forward, (params, x)),
                                              (kernel_grad, (params, x, cotangent)),
                                              (both, (params, x, cotangent)))):
          elapsed = _timed(fn, *fn_args)
          if repeat:
            times[label, kind].append(elapsed)
    median = {key: np.median(value) for key, value in times.items()}
    cells = " | ".join(f"{median['plain', kind]:.0f} | {median['tuned', kind]:.0f}"
                       for kind in range(3))
    print(f"| {name} | {cells} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
  main()
