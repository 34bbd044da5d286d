"""Reflection padding written three ways: time and effective bandwidth, forward and backward.

  PYTHONPATH=. python benchmarks/reflect_pad.py [--shapes 64x64x64x256:1,64x256x256x64:3] \
      [--dtype bfloat16] [--calls 20]

The paper step spends ~24 % of its device time on one H100/H200 in the concatenate
fusions XLA emits for `jnp.pad(mode="reflect")` (benchmarks/RESULTS.md, "Third
round"): ~0.8 TB/s where a copy runs at ~4 TB/s. This times the candidates on the
default device, each jitted alone on [B, H, W, C] maps padded by P on H and W:

  concatenate   `jnp.pad(x, ..., mode="reflect")`, what `layers.reflect_pad` runs
  gather        `x[:, rows][:, :, cols]` with constant reflected index vectors
  pad+update    a zero `lax.pad`, then the 2P reflected rows and columns written in
                place (`.at[].set`), the border strips being small

Forward: the padded map; backward: the gradient of sum(pad(x) * w) for x. Each row
checks that the candidate equals `concatenate` exactly. Bandwidth counts the bytes
read (x) and written (padded) once, forward only.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

_PARSER = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_PARSER.add_argument("--shapes", default="64x64x64x256:1,64x256x256x64:3,64x128x128x128:1",
                     help="comma-separated BxHxWxC:P")
_PARSER.add_argument("--dtype", default="bfloat16")
_PARSER.add_argument("--calls", type=int, default=20, help="timed calls per row")


def by_concatenate(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _reflected(length: int, pad: int) -> np.ndarray:
  """Source index of each of the length + 2 * pad padded positions."""
  return np.concatenate([np.arange(pad, 0, -1), np.arange(length),
                         np.arange(length - 2, length - 2 - pad, -1)])


def by_gather(x: jax.Array, pad: int) -> jax.Array:
  return x[:, _reflected(x.shape[1], pad)][:, :, _reflected(x.shape[2], pad)]


def by_pad_and_update(x: jax.Array, pad: int) -> jax.Array:
  zero = jnp.zeros((), x.dtype)
  y = jax.lax.pad(x, zero, ((0, 0, 0), (pad, pad, 0), (0, 0, 0), (0, 0, 0)))
  y = y.at[:, :pad].set(x[:, pad:0:-1]).at[:, -pad:].set(x[:, -2:-2 - pad:-1])
  z = jax.lax.pad(y, zero, ((0, 0, 0), (0, 0, 0), (pad, pad, 0), (0, 0, 0)))
  return z.at[:, :, :pad].set(y[:, :, pad:0:-1]).at[:, :, -pad:].set(y[:, :, -2:-2 - pad:-1])


CANDIDATES = {"concatenate": by_concatenate, "gather": by_gather, "pad+update": by_pad_and_update}


def _time(fn, *args, calls: int) -> float:
  """Seconds per call after one compiling call."""
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(calls):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / calls


def main():
  args = _PARSER.parse_args()
  dtype = jnp.dtype(args.dtype)
  print(f"device: {jax.devices()[0].device_kind}, {args.dtype}\n")
  print("| shape BxHxWxC | pad | implementation | forward ms | forward GB/s "
        "| forward + backward ms "
        "| equal to concatenate |")
  print("|---|---:|---|---:|---:|---:|---|")
  for spec in args.shapes.split(","):
    dims, pad = spec.split(":")
    shape, pad = tuple(int(d) for d in dims.split("x")), int(pad)
    x = jax.random.normal(jax.random.key(0), shape, dtype)
    padded_shape = (shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad, shape[3])
    w = jax.random.normal(jax.random.key(1), padded_shape, dtype)
    expected = jax.jit(by_concatenate, static_argnums=1)(x, pad)
    moved = (np.prod(shape) + np.prod(padded_shape)) * dtype.itemsize
    for name, pad_fn in CANDIDATES.items():
      forward = jax.jit(pad_fn, static_argnums=1)
      backward = jax.jit(jax.grad(lambda x, w, f=pad_fn: jnp.sum(
          (f(x, pad) * w).astype(jnp.float32))))
      equal = bool(jnp.array_equal(forward(x, pad), expected))
      seconds = _time(forward, x, pad, calls=args.calls)
      both = _time(backward, x, w, calls=args.calls)
      print(f"| {dims} | {pad} | {name} | {1e3 * seconds:.3f} | {moved / seconds / 1e9:.0f} "
            f"| {1e3 * both:.3f} | {equal} |", flush=True)


if __name__ == "__main__":
  main()
