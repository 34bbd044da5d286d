"""Official VSAIT (PyTorch) vs ours (JAX), side by side in one process.

For each case the official model is built from a checkout of
facebookresearch/vsait that the user provides (never part of this repository)
through its own config system (`configs/vsait.yaml` + overrides), seeded, and
its `state_dict()` is converted to our variables with `i2i_jax.convert`, so
both start from the same weights. Before timing, the generator outputs on the
same image are compared. Then, on the same batch, each side runs `warmup`
untimed and `steps` timed training steps (G step then D step, each with its
Adam update), the two sides alternating call by call so that a change in the
machine's load affects both alike; after the first step the generators' outputs and the step's
losses are compared. Only the first update is compared: with Adam's b1 = 0,
parameters whose true gradient is ~0 (conv biases before instance norm) move
by +-lr in the direction of float32 noise, which both codes amplify
differently over later steps.

The official step is the one PyTorch-Lightning 1.9 runs for the
`VSAITSolver` (optimizer 0 = `model.g_net*`, then optimizer 1 = `model.d_net`;
before each, Lightning's `toggle_optimizer` turns off `requires_grad` of the
other optimizer's parameters), written out here without the Trainer so that
no logging or data loading is timed. The VGG weights are random (torchvision
`weights=None`): weights do not change the time.

Ours is `i2i_jax.families.vsait.train_step` under `jax.jit` with the train state
donated, timed to `block_until_ready` of every step.

CUT cases (`cut_tiny`, `cut_paper`; CPU only): the official `CUTModel` of
taesungp/contrastive-unpaired-translation (`--cut-official-dir`, a checkout
with models/, options/, util/) is built as tools/make_cut_reference.py builds
it (its functions, imported: official option defaults, the case's sizes,
seeded) and `data_dependent_initialize` runs on the batch (it creates netF's
MLPs, as the official train.py does on its first batch). Its netG, netF and
netD state dicts become our parameters through `convert_cut.import_state_dict`.
G(real_A) of both is compared before timing. The first step of both uses the
same patch ids (ours, drawn from the train state's key for step 0, handed to
the official netF), and its seven losses are compared; later steps draw their
own ids on each side (the time does not depend on which). Timed: the official
`optimize_parameters()` (forward, D step, G and F step) against our
`i2i_jax.families.cut.train_step` under `jax.jit` with the state donated, compiled
with the config's `cpu_compiler_options` as the train CLI does.
The official code runs unchanged, including its CPU InstanceNorm backward bug
that make_cut_reference.py works around (wrong G gradients, same work), so
only the first step's losses, not the updated weights, are compared.

CPU threads: `--threads N` pins the process to N cores (both libraries then
use N) and sets `torch.set_num_threads(N)`.

  python benchmarks/compare_official.py --official-dir=/path/to/vsait \
      [--cases paper,paper_b8,tiny,forward,cut_tiny,cut_paper] [--steps 3] [--warmup 1] \
      [--cut-official-dir=/tmp/cut_official] [--device cpu|gpu] [--dtype float32|bfloat16]

`--official-dir` is needed only by the VSAIT cases. Run it from a virtual
environment that has both stacks (torch, torchvision, pytorch-lightning 1.9,
fvcore for the official code; jax, flax, optax, ml_collections for ours) with
the repository root on PYTHONPATH. Prints a markdown table.
"""

import argparse
import contextlib
import dataclasses
import datetime
import functools
import io
import os
import platform
import statistics
import sys
import tempfile
import time

# Pin the process before any thread pool starts so that both libraries use the same cores.
_PARSER = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
_PARSER.add_argument("--official-dir",
                     help="checkout of facebookresearch/vsait (solver.py, models/, configs/); "
                     "needed by the VSAIT cases")
_PARSER.add_argument("--cut-official-dir", default="/tmp/cut_official",
                     help="checkout of taesungp/contrastive-unpaired-translation (models/, "
                     "options/, util/) for the CUT cases")
_PARSER.add_argument("--cases", default="paper,paper_b8,tiny,forward",
                     help="comma-separated subset of: paper, paper_b8, tiny, forward, cut_tiny, "
                     "cut_paper")
_PARSER.add_argument("--steps", type=int, default=3, help="timed steps per case (median reported)")
_PARSER.add_argument("--warmup", type=int, default=1,
                     help="untimed calls per side first, >= 1 (ours compiles in the first)")
_PARSER.add_argument("--threads", type=int, default=os.cpu_count(),
                     help="CPU cores for both libraries (default: all)")
_PARSER.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
_PARSER.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="compute dtype of ours (the official code runs float32)")
_PARSER.add_argument("--seed", type=int, default=0)
_ARGS = _PARSER.parse_args() if __name__ == "__main__" else None
if _ARGS is not None and _ARGS.device == "cpu":
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:_ARGS.threads])
  os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import torch  # pylint: disable=g-import-not-at-top,wrong-import-position

from i2i_jax.configs import cut as cut_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax.configs import vsait as vsait_config  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax import compile_options  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax import convert  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax import convert_cut  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax import losses_cut  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax.families import cut as cut_family  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax.families import vsait as vsait_family  # pylint: disable=g-import-not-at-top,wrong-import-position
from i2i_jax.models import cut as cut_models  # pylint: disable=g-import-not-at-top,wrong-import-position
from tools import make_cut_reference  # pylint: disable=g-import-not-at-top,wrong-import-position


@dataclasses.dataclass(frozen=True)
class Case:
  """One benchmark shape: a model size, a crop size and a batch."""
  name: str
  res_blocks: int
  res_channels: int
  lsh_out_channels: int
  discriminator_channels: tuple[int, ...]
  height: int
  width: int
  batch: int
  train: bool = True  # False: time the generator's forward only


PAPER = dict(res_blocks=9, res_channels=64, lsh_out_channels=4096,
             discriminator_channels=(1024, 1024, 1))
CASES = {
    "paper": Case("paper config, 256x256, batch 1", **PAPER, height=256, width=256, batch=1),
    "paper_b8": Case("paper config, 256x256, batch 8", **PAPER, height=256, width=256,
                     batch=8),
    # configs/tiny.py
    "tiny": Case("tiny config, 32x32, batch 2", res_blocks=2, res_channels=8,
                 lsh_out_channels=64, discriminator_channels=(32, 16, 1), height=32, width=32,
                 batch=2),
    "forward": Case("paper generator forward, 512x1024, batch 1", **PAPER, height=512,
                    width=1024, batch=1, train=False),
}


def our_config(case: Case, dtype: str):
  """configs/vsait.py with the case's model size."""
  config = vsait_config.get_config()
  config.compute_dtype = dtype
  config.model.res_blocks = case.res_blocks
  config.model.res_channels = case.res_channels
  config.model.lsh_out_channels = case.lsh_out_channels
  config.model.discriminator_channels = case.discriminator_channels
  config.model.vgg_weights = "random"
  return config


def build_official(official_dir: str, case: Case, seed: int, output_dir: str):
  """The official `VSAITSolver` for `case` (configs/vsait.yaml + the case's sizes)."""
  if official_dir not in sys.path:
    sys.path.insert(0, official_dir)
  from solver import VSAITSolver  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  from utils.config import get_cfg  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  cfg = get_cfg()
  cfg.merge_from_file(os.path.join(official_dir, "configs", "vsait.yaml"))
  cfg.merge_from_dict({"TASK_MODEL": {
      "RES_BLOCKS": case.res_blocks,
      "RES_CHANNELS": case.res_channels,
      "LSH": {"out_channels": case.lsh_out_channels},
      "DISCRIMINATOR_KWARGS": {"n_channels": list(case.discriminator_channels)},
      "FEATURE_EXTRACTOR": {"WEIGHTS": None},  # random VGG: nothing downloaded
      "IMAGE_LOGGING_FREQ": 0,
  }})
  cfg.OUTPUT_DIR = output_dir
  torch.manual_seed(seed)
  return VSAITSolver(cfg)


class OfficialStep:
  """One Lightning-1.9 training batch of the official solver (G then D), without the Trainer."""

  def __init__(self, solver):
    self.solver = solver
    self.optimizers, self.schedulers = solver.configure_optimizers()
    solver.train()

  def _toggle(self, index: int):
    """Lightning's `toggle_optimizer`: only this optimizer's parameters require grad."""
    for optimizer in self.optimizers:
      for group in optimizer.param_groups:
        for param in group["params"]:
          param.requires_grad_(False)
    for group in self.optimizers[index].param_groups:
      for param in group["params"]:
        param.requires_grad_(True)

  def __call__(self, batch) -> dict[str, float]:
    losses = {}
    for index, optimizer in enumerate(self.optimizers):
      self._toggle(index)
      optimizer.zero_grad(set_to_none=True)
      loss = self.solver.training_step(batch, 1, optimizer_idx=index)["loss"]
      loss.backward()
      optimizer.step()
      losses.update(self.solver.criterion.log)
    for scheduler in self.schedulers:
      scheduler["scheduler"].step()
    for optimizer in self.optimizers:
      for group in optimizer.param_groups:
        for param in group["params"]:
          param.requires_grad_(True)
    return losses


def timed(fn, calls: int, sync, label: str) -> list[float]:
  """Seconds of each of `calls` calls of `fn`, each to `sync` of its result (logged to stderr)."""
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - start)
    print(f"  {label}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
  return times


def alternate(official_fn, sync_official, our_fn, args) -> tuple[float, float]:
  """Medians (official, ours) of `args.steps` calls after `args.warmup - 1` more untimed ones.

  The two alternate call by call, so that a change in the machine's load hits both sides alike.
  """
  official_times, our_times = [], []
  for i in range(args.warmup - 1 + args.steps):
    official_time, = timed(official_fn, 1, sync_official, "official")
    our_time, = timed(our_fn, 1, jax.block_until_ready, "ours")
    if i >= args.warmup - 1:
      official_times.append(official_time)
      our_times.append(our_time)
  return statistics.median(official_times), statistics.median(our_times)


def to_torch(x: np.ndarray, device: str) -> torch.Tensor:
  """[B, H, W, C] -> [B, C, H, W] on `device`."""
  return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def run_case(case: Case, args, official_solver=None) -> dict[str, object]:
  """Builds both models for `case`, checks they agree, times both; returns one table row."""
  torch_device = "cuda" if args.device == "gpu" else "cpu"
  sync_torch = (lambda _: torch.cuda.synchronize()) if torch_device == "cuda" else (lambda _: None)
  rng = np.random.default_rng(args.seed)
  images = {k: rng.uniform(-1, 1, (case.batch, case.height, case.width, 3)).astype(np.float32)
            for k in ("source", "target")}

  with tempfile.TemporaryDirectory() as output_dir:
    solver = official_solver or build_official(args.official_dir, case, args.seed, output_dir)
    solver.to(torch_device)
    state_dict = {k: v.detach().cpu().numpy() for k, v in solver.model.state_dict().items()}
    config = our_config(case, args.dtype)
    fns = vsait_family.make_step_functions(config)
    variables = jax.device_put(convert.import_official_checkpoint(state_dict, config))
    generate = jax.jit(fns.modules.generator.apply)
    source_t = to_torch(images["source"], torch_device)

    def official_generate():
      with torch.no_grad():
        return solver.model.g_net(source_t)

    def output_difference() -> float:
      ours = np.asarray(generate(variables["generator"], images["source"]), np.float32)
      theirs = official_generate().cpu().numpy().transpose(0, 2, 3, 1)
      return float(np.max(np.abs(ours - theirs)))

    row = {"case": case.name, "initial_diff": output_difference()}
    if not case.train:
      solver.eval()
      official_fn = official_generate
      our_fn = lambda: generate(variables["generator"], images["source"])
    else:
      official_step = OfficialStep(solver)
      batch_t = {k: {"image": to_torch(v, torch_device)} for k, v in images.items()}
      official_losses = []
      official_fn = lambda: official_losses.append(official_step(batch_t))
      step = jax.jit(functools.partial(vsait_family.train_step, fns=fns), donate_argnums=0)
      state = vsait_family.create_train_state(fns, variables)
      batch = jax.device_put(images)
      our_losses = []

      def our_fn():
        nonlocal state
        state, metrics = step(state, batch)
        our_losses.append(metrics)
        return metrics

    # The first call of each (ours compiles), then the comparison after one update.
    row["official_first"], = timed(official_fn, 1, sync_torch, "official")
    row["ours_first"], = timed(our_fn, 1, jax.block_until_ready, "ours")
    if case.train:
      variables = state.variables
      solver.eval()
      row["trained_diff"] = output_difference()
      solver.train()
      ours = {k: float(v) for k, v in our_losses[0].items()}
      theirs = official_losses[0]
      row["loss_diff"] = max(abs(ours["g_vsa"] - theirs["vsa"]),
                             abs(ours["g_adv"] - theirs["adv"]),
                             abs(ours["d_total"] - theirs["discr"]))
    row["official"], row["ours"] = alternate(official_fn, sync_torch, our_fn, args)
    row["solver"] = solver
    return row


@dataclasses.dataclass(frozen=True)
class CutCase:
  """One CUT benchmark shape (official option names); square crops."""
  name: str
  ngf: int
  ndf: int
  n_blocks: int
  netF_nc: int  # pylint: disable=invalid-name
  num_patches: int
  image_size: int
  batch: int


CUT_CASES = {
    # configs/cut_tiny.py
    "cut_tiny": CutCase("CUT tiny config (configs/cut_tiny.py), 32x32, batch 1: one training step",
                        ngf=4, ndf=4, n_blocks=2, netF_nc=16, num_patches=16, image_size=32,
                        batch=1),
    # configs/cut.py: the official defaults (the official crop is 256 too)
    "cut_paper": CutCase("CUT official defaults (configs/cut.py), 256x256, batch 1: one training "
                         "step", ngf=64, ndf=64, n_blocks=9, netF_nc=256, num_patches=256,
                         image_size=256, batch=1),
}
# Our network -> the official one.
CUT_NETWORKS = {"generator": "netG", "patch_sampler": "netF", "discriminator": "netD"}
# The official loss attributes (`loss_<name>`) -> our step's metrics.
CUT_LOSSES = {"D_fake": "d_fake", "D_real": "d_real", "D": "d_total", "G_GAN": "g_gan",
              "NCE": "g_nce", "NCE_Y": "g_nce_y", "G": "g_total"}


@contextlib.contextmanager
def cut_official_imports(official_dir: str):
  """`make_cut_reference.import_official(official_dir)`, side by side with the VSAIT checkout.

  Both checkouts have a top-level `models` package, and the CUT import puts
  stand-ins for `data` (and `torchvision`, where it is not installed) in
  `sys.modules`. Within the context (the official option parser imports the
  model's module by name) every module of those top-level names is set aside;
  afterwards none of the official ones is left (the objects built keep theirs),
  so VSAIT cases before or after import their own.
  """
  names = {os.path.splitext(n)[0] for n in os.listdir(official_dir)} | {"data", "torchvision"}
  in_names = lambda module: module.split(".")[0] in names
  set_aside = {k: sys.modules.pop(k) for k in list(sys.modules) if in_names(k)}
  path = list(sys.path)
  try:
    yield make_cut_reference.import_official(official_dir)
  finally:
    sys.path[:] = path
    for module in [k for k in sys.modules if in_names(k)]:
      del sys.modules[module]
    sys.modules.update(set_aside)


def build_cut_official(official_dir: str, case: CutCase, seed: int, data: dict):
  """The official `CUTModel` for `case`, seeded, after `data_dependent_initialize(data)`."""
  sizes = argparse.Namespace(ngf=case.ngf, ndf=case.ndf, n_blocks=case.n_blocks,
                             batch=case.batch, num_patches=case.num_patches,
                             netF_nc=case.netF_nc, nce_layers="0,4,8,12,16",
                             image_size=case.image_size)
  with cut_official_imports(official_dir) as (cut_model, networks, train_options):
    networks.define_G = make_cut_reference.define_g_any_blocks(networks)
    opt = make_cut_reference.official_options(sizes, train_options)
    torch.manual_seed(seed)
    np.random.seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # the official network summaries
      model = cut_model.CUTModel(opt)
      model.data_dependent_initialize(data)
      model.setup(opt)
  return model


def our_cut_config(case: CutCase, dtype: str):
  """configs/cut.py with the case's model size."""
  config = cut_config.get_config()
  config.compute_dtype = dtype
  config.model.update(ngf=case.ngf, ndf=case.ndf, n_blocks=case.n_blocks, netF_nc=case.netF_nc,
                      num_patches=case.num_patches)
  return config


def run_cut_case(case: CutCase, args) -> dict[str, object]:
  """Builds both CUT models for `case`, checks they agree, times both; returns one table row."""
  rng = np.random.default_rng(args.seed)
  image_shape = (case.image_size, case.image_size, 3)
  images = {k: rng.uniform(-1, 1, (case.batch, *image_shape)).astype(np.float32)
            for k in ("source", "target")}
  data = {"A": to_torch(images["source"], "cpu"), "B": to_torch(images["target"], "cpu"),
          "A_paths": ["A"] * case.batch, "B_paths": ["B"] * case.batch}
  model = build_cut_official(args.cut_official_dir, case, args.seed, data)
  model.set_input(data)

  config = our_cut_config(case, args.dtype)
  fns = cut_family.make_step_functions(config)
  shapes = jax.eval_shape(
      lambda: cut_models.init_params(fns.modules, jax.random.key(0), image_shape))
  params = {ours: convert_cut.import_state_dict(
      {k: v.detach().numpy() for k, v in getattr(model, theirs).state_dict().items()},
      shapes[ours], f"official {theirs}") for ours, theirs in CUT_NETWORKS.items()}
  gf_params = {"generator": params["generator"], "patch_sampler": params["patch_sampler"]}
  state = jax.device_put(cut_family.TrainState(
      step=jnp.zeros((), jnp.int32),
      variables={name: {"params": params[name]} for name in cut_family.NETWORKS},
      opt_states={"gf": fns.optimizer.init(gf_params),
                  "d": fns.optimizer.init(params["discriminator"])},
      patch_rng=jax.random.key_data(jax.random.key(args.seed))))

  with torch.no_grad():
    theirs = model.netG(data["A"]).numpy().transpose(0, 2, 3, 1)
  ours = np.asarray(jax.jit(fns.modules.generator.apply)(state.variables["generator"],
                                                         images["source"]), np.float32)
  row = {"case": case.name, "initial_diff": float(np.max(np.abs(ours - theirs)))}

  # The first step: the official netF takes the ids our step draws at step 0
  # (its two calls without ids, NCE's then NCE_Y's, are the ones that draw).
  first_ids = losses_cut.draw_patch_ids(jax.random.fold_in(jax.random.key(args.seed), 0),
                                        fns.modules, image_shape, case.num_patches)
  replay = [[np.asarray(ids, np.int64) for ids in first_ids[term]] for term in ("nce", "nce_idt")]
  sample = model.netF.forward

  def sample_replaying(feats, num_patches=64, patch_ids=None):
    if patch_ids is None and replay:
      patch_ids = replay.pop(0)
    return sample(feats, num_patches, patch_ids)

  model.netF.forward = sample_replaying
  official_fn = model.optimize_parameters
  step = jax.jit(functools.partial(cut_family.train_step, fns=fns), donate_argnums=0,
                 compiler_options=compile_options.cpu_compiler_options(config))  # as the train CLI
  batch = jax.device_put(images)
  our_losses = []

  def our_fn():
    nonlocal state
    state, metrics = step(state, batch)
    our_losses.append(metrics)
    return metrics

  no_sync = lambda _: None
  row["official_first"], = timed(official_fn, 1, no_sync, "official")
  row["ours_first"], = timed(our_fn, 1, jax.block_until_ready, "ours")
  assert not replay, "the official step did not take the replayed patch ids"
  del model.netF.forward  # later steps: the official netF draws its own ids
  row["loss_diff"] = max(abs(float(our_losses[0][metric]) - getattr(model, f"loss_{name}").item())
                         for name, metric in CUT_LOSSES.items())
  row["official"], row["ours"] = alternate(official_fn, no_sync, our_fn, args)
  return row


def cpu_name() -> str:
  """The CPU's model name (from /proc/cpuinfo where there is one)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def main(args):
  names = args.cases.split(",")
  unknown = [name for name in names if name not in CASES and name not in CUT_CASES]
  if unknown:
    _PARSER.error(f"--cases: unknown {', '.join(unknown)} (known: "
                  f"{', '.join([*CASES, *CUT_CASES])})")
  if not args.official_dir and any(name in CASES for name in names):
    _PARSER.error("--official-dir (the VSAIT checkout) is needed by the VSAIT cases "
                  f"{', '.join(n for n in names if n in CASES)}")
  if args.device != "cpu" and any(name in CUT_CASES for name in names):
    _PARSER.error("the CUT cases run on --device=cpu only")
  torch.set_num_threads(args.threads)
  families = " / ".join(f for f, cases in (("VSAIT", CASES), ("CUT", CUT_CASES))
                        if any(name in cases for name in names))
  print(f"# Official {families} vs ours, {datetime.date.today()}")
  print(f"machine: {cpu_name()}, "
        f"{len(os.sched_getaffinity(0))} of {os.cpu_count()} cores used, "
        f"torch threads {torch.get_num_threads()}; jax {jax.__version__} on "
        f"{jax.devices()[0].device_kind} ({args.dtype}), torch {torch.__version__} on "
        f"{args.device} (float32)")
  print(f"command: {' '.join(sys.argv)}")
  print(f"median of {args.steps} calls after {args.warmup} untimed; first = the first call "
        "(ours includes compilation)\n")
  print("| case | official s | ours s | official / ours | first call official / ours s "
        "| max abs diff G(x) at init / after 1 step | max abs diff first-step losses |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  paper_solver = None
  for name in names:
    if name in CUT_CASES:
      case = CUT_CASES[name]
      row = run_cut_case(case, args)
    else:
      case = CASES[name]
      # The forward case reuses the paper model (same weights, any image size).
      reuse = paper_solver if name == "forward" else None
      row = run_case(case, args, reuse)
      if name == "paper":
        paper_solver = row["solver"]
    trained = f" / {row['trained_diff']:.1e}" if "trained_diff" in row else ""
    losses = f"{row['loss_diff']:.1e}" if "loss_diff" in row else "-"
    print(f"| {case.name} | {row['official']:.3f} | {row['ours']:.3f} "
          f"| {row['official'] / row['ours']:.2f}x "
          f"| {row['official_first']:.1f} / {row['ours_first']:.1f} "
          f"| {row['initial_diff']:.1e}{trained} | {losses} |", flush=True)


if __name__ == "__main__":
  main(_ARGS)
