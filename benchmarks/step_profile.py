"""Where the device time of a train step goes: a `jax.profiler` trace, summarised.

  PYTHONPATH=. python benchmarks/step_profile.py --config=vsait --batch_size=64 \
      --compute_dtype=bfloat16 --steps=3 --out=DIR [--gflops=1167 --peak_tflops=989]
  PYTHONPATH=. python benchmarks/step_profile.py --summarise=WORKDIR/profile --steps=20

The second form only summarises a trace already written, e.g. by the train CLI's
config.profile_steps (which writes a perfetto trace beside the xplane).

Compiles the step of `benchmarks/train_step.py` (config, batch, dtype; random VGG),
times --timed_steps steps after --warmup, then traces --steps more into
DIR/plugins/profile/<run>/ (xplane for TensorBoard/XProf, perfetto_trace.json.gz
for ui.perfetto.dev). From the perfetto trace it prints two tables: device time
per step by kind of work (convolution forward, input gradient, weight gradient,
matrix products, fusions, copies...) and the --top kernels, with the share of
the step each takes and the device's busy share of the traced wall time.

Device events are those of the trace's processes and threads whose
"process/thread" name matches --device_pattern (on a GPU: "/device:GPU:0/Stream
#..."); on XLA:CPU, where the work runs on host threads, use
--device_pattern=tf_XLA and XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re

import jax

import train_step

_PARSER = argparse.ArgumentParser(description=__doc__.split("\n")[0])
_PARSER.add_argument("--config", default="vsait", help="config module under configs/")
_PARSER.add_argument("--batch_size", type=int, default=None,
                     help="global batch (default: the config's)")
_PARSER.add_argument("--compute_dtype", default=None, help="override config.compute_dtype")
_PARSER.add_argument("--warmup", type=int, default=3, help="untimed steps after the compiling one")
_PARSER.add_argument("--timed_steps", type=int, default=10, help="steps timed without tracing")
_PARSER.add_argument("--steps", type=int, default=3, help="steps traced")
_PARSER.add_argument("--out", default="", help="directory for the trace")
_PARSER.add_argument("--summarise", default="",
                     help="only summarise the trace under this directory (--steps: its steps)")
_PARSER.add_argument("--top", type=int, default=30, help="kernels listed")
_PARSER.add_argument("--device_pattern", default="/device:",
                     help="regex on 'process/thread' names that selects device events")
_PARSER.add_argument("--gflops", type=float, default=0.0,
                     help="model GFLOPs per step, for the MFU line (0: not printed)")
_PARSER.add_argument("--peak_tflops", type=float, default=989.0, help="peak TFLOP/s per device")

# Kinds of device work, first match wins; matched on the kernel's name and its HLO op.
KINDS = (
    ("convolution, weight gradient", r"wgrad|backward_filter|bwd_filter|bw-filter"),
    ("convolution, input gradient", r"dgrad|backward_input|bwd_data|bw-input"),
    ("convolution, forward", r"fprop|conv(?!ert)|implicit_gemm|winograd"),
    ("matrix product", r"gemm|nvjet|cublas|cutlass|dot|triton"),
    ("copy or transpose", r"memcpy|copy|transpose|nchw|nhwc|Memset"),
    ("concatenate fusion", r"concatenate"),
    ("reduction fusion", r"reduce|reduction"),
    ("other fusion", r"fusion|loop_"),
)


def kind_of(text: str) -> str:
  """The first KINDS entry whose pattern occurs in `text` (case-insensitive), else 'other'."""
  for kind, pattern in KINDS:
    if re.search(pattern, text, re.IGNORECASE):
      return kind
  return "other"


def load_trace(out: str) -> list[dict]:
  """The events of the newest perfetto_trace.json.gz under `out`."""
  paths = sorted(glob.glob(os.path.join(out, "**", "perfetto_trace.json.gz"), recursive=True),
                 key=os.path.getmtime)
  if not paths:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {out}")
  with gzip.open(paths[-1]) as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def device_events(events: list[dict], device_pattern: str) -> list[dict]:
  """Complete ("X") events on the processes/threads whose 'process/thread' name matches."""
  processes, threads = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      processes[e["pid"]] = e["args"]["name"]
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[e["pid"], e["tid"]] = e["args"]["name"]
  pattern = re.compile(device_pattern)
  return [e for e in events if e.get("ph") == "X" and e.get("dur", 0) > 0 and pattern.search(
      f"{processes.get(e['pid'], '')}/{threads.get((e['pid'], e.get('tid')), '')}")]


def busy_seconds(events: list[dict]) -> tuple[float, float]:
  """(seconds any event runs, seconds from the first start to the last end)."""
  spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events)
  busy, end = 0.0, -float("inf")
  for start, stop in spans:
    if stop > end:
      busy += stop - max(start, end)
      end = stop
  return busy / 1e6, (spans[-1][1] - spans[0][0]) / 1e6


def summarise(events: list[dict], steps: int, top: int) -> str:
  """Markdown tables of device milliseconds per step by kind and by kernel."""
  by_kind, by_kernel = collections.Counter(), collections.Counter()
  calls = collections.Counter()
  for e in events:
    hlo_op = (e.get("args") or {}).get("hlo_op", "")
    key = (e["name"][:90], hlo_op[:40])
    by_kernel[key] += e["dur"]
    calls[key] += 1
    by_kind[kind_of(f"{e['name']} {hlo_op}")] += e["dur"]
  total = sum(by_kind.values())
  busy, wall = busy_seconds(events)
  ms = lambda us: us / 1e3 / steps
  lines = [f"device events: {len(events)} over {steps} steps; kernel time {ms(total):.2f} ms/step, "
           f"device busy {1e3 * busy / steps:.2f} ms/step of {1e3 * wall / steps:.2f} ms/step "
           f"traced wall ({100 * busy / wall:.0f} % busy)", "",
           "| kind of work | ms/step | share of kernel time |", "|---|---:|---:|"]
  for kind, us in by_kind.most_common():
    lines.append(f"| {kind} | {ms(us):.3f} | {100 * us / total:.1f}% |")
  lines += ["", "| kernel | HLO op | calls/step | ms/step | share |", "|---|---|---:|---:|---:|"]
  for (name, hlo_op), us in by_kernel.most_common(top):
    lines.append(f"| `{name}` | {hlo_op} | {calls[name, hlo_op] / steps:g} | {ms(us):.3f} "
                 f"| {100 * us / total:.1f}% |")
  return "\n".join(lines)


def _device_events(trace_dir: str, device_pattern: str) -> list[dict]:
  events = device_events(load_trace(trace_dir), device_pattern)
  if not events:
    raise SystemExit(f"no trace events under {trace_dir} match --device_pattern={device_pattern!r}")
  return events


def main():
  args = _PARSER.parse_args()
  if args.summarise:
    print(summarise(_device_events(args.summarise, args.device_pattern), args.steps, args.top))
    return
  if not args.out:
    raise SystemExit("--out: a directory for the trace is needed (or --summarise=DIR)")
  print(f"devices: {jax.local_device_count()} x {jax.devices()[0].device_kind}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  compiled, state, batch, row = train_step.compiled_step(args.config, args.compute_dtype,
                                                         args.batch_size)
  steps_per_s, state = train_step.time_steps(compiled, state, batch, args.timed_steps, args.warmup)
  line = (f"{row['config']}, batch {row['batch']}, {row['dtype']}: "
          f"compile {row['compile_s']:.1f} s, "
          f"{steps_per_s:.3f} steps/s, {steps_per_s * row['batch']:.1f} images/s")
  if args.gflops:
    mfu = args.gflops * steps_per_s / (1e3 * args.peak_tflops * row["devices"])
    line += f", MFU {100 * mfu:.1f}% of {args.peak_tflops:g} TFLOP/s"
  print(line, flush=True)
  with jax.profiler.trace(args.out, create_perfetto_trace=True):
    for _ in range(args.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
  print(summarise(_device_events(args.out, args.device_pattern), args.steps, args.top))


if __name__ == "__main__":
  main()
