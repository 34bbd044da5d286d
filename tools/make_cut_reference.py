"""Runs the OFFICIAL CUT code (taesungp/contrastive-unpaired-translation) once and stores a parity fixture.

What it computes, on CPU, from one set of float32 weights and inputs (see docs/cut.md):
the official `CUTModel` (CUT mode, official option defaults from the official
option parser, sizes from the flags below) is built with `torch.manual_seed(seed)`
and `np.random.seed(seed)`, `data_dependent_initialize` runs on the batch (it
creates netF's MLPs and netF's optimizer, as the official train.py does on its
first batch), then `setup` and one `optimize_parameters`: forward, D step, then
the G and F step against the updated D. That is done twice:

* in float64 (networks and inputs cast up): every result key, stored float64;
  the patch ids netF draws (np.random.permutation) are recorded;
* in float32 with the recorded patch ids fed back: `f32/<key>` and
  `f32_error/<key>` = max |f32 - f64|. The float32 G step runs against the
  float64 run's updated D cast to float32 (so `f32_error` of the G-step
  quantities measures float32 rounding, not the random signs that Adam's first
  step takes where a D gradient is below its float32 noise); `f32/params_after_step`
  of D is the float32 run's own D step.

Keys (PyTorch layout, NCHW / OIHW / Linear [out, in]; <net> in netG, netF, netD):
  config_json, inputs/real_A, inputs/real_B     [B, 3, S, S] float32 in (-1, 1)
  params/<net>.<name>                           float32 weights before the step
  buffers/netG.<name>                           netG's buffers (blur filters): with params/netG.*
                                                exactly netG.state_dict(), i.e. latest_net_G.pth
  patch_ids/nce/<i>, patch_ids/nce_idt/<i>      int64 [P_i]: ids netF drew for
                                                NCE(real_A, fake_B) and NCE_Y(real_B, idt_B), layer i
  outputs/fake_B, outputs/idt_B                 G(real_A), G(real_B) at the initial weights
  outputs/d_step/pred_fake, .../pred_real       D outputs in the D step
  outputs/g_step/pred_fake                      D (updated) on fake_B in the G step
  outputs/nce/feat_k/<i>, .../feat_q/<i>        netF outputs [B*P_i, netF_nc] (and nce_idt/...)
  losses/D_fake, D_real, D, G_GAN, NCE, NCE_Y, G
  grads/<net>.<name>                            D: of loss D; G, F: of loss G
  params_after_step/<net>.<name>
  f32/<key>, f32_error/<key>                    for every result key

Only the official code runs here; nothing of it is copied. Its `util.util`
imports torchvision at the top (used only by image helpers we do not call) and
its option parser imports the `data` package (torchvision transforms); the tool
puts an empty `torchvision` module and a `data` module whose option setter adds
nothing (the official unaligned dataset adds no options) in `sys.modules` so
that the official `options`, `util.util`, `models.cut_model` import unchanged.
The official `define_G` accepts only 6 or 9 residual blocks (4 via code); the
tool replaces it with the same ResnetGenerator construction for `--n_blocks`.
`model.parallelize()` (a DataParallel wrapper, a no-op on CPU) is skipped.

A PyTorch bug is worked around: on CPU (seen with torch 2.13), the backward of
`InstanceNorm2d` is wrong when the gradient arriving at its output is not
contiguous (channels-last strides). netF's `feat.permute(0, 2, 3, 1)[:, ids]`
sends exactly such a gradient into the generator features that follow an
instance norm directly (a residual block's output, the norm at index 16 of a
2-block generator), and the official G gradients of NCE then differ from the
derivative of the official loss (checked by finite differences) by ~100%. The
tool registers a hook that makes that gradient contiguous (values unchanged);
`config_json["torch_instance_norm_layout_bug"]` records whether the installed
torch has the bug.

Regenerate the committed fixture (about 10 s on 2 cores):

  git --git-dir=$(fetched repo) archive HEAD models options util | tar x -C /tmp/cut_official
  python tools/make_cut_reference.py --official_dir=/tmp/cut_official \\
      --out=tests/fixtures/cut_tiny.npz

and another configuration, checked by the same test:

  python tools/make_cut_reference.py --official_dir=/tmp/cut_official --ngf=6 --ndf=5 \\
      --n_blocks=5 --image_size=40 --batch=2 --num_patches=24 --netF_nc=12 --seed=3 \\
      --out=/tmp/cut_ref/cut_b2.npz
  I2I_CUT_REFERENCE_DIR=/tmp/cut_ref python -m pytest -q tests/test_cut_parity.py
"""

import argparse
import contextlib
import importlib
import io
import json
import pathlib
import re
import sys
import types

import numpy as np


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--official_dir", required=True,
                      help="a checkout of taesungp/contrastive-unpaired-translation (needs models/, "
                      "options/, util/)")
  parser.add_argument("--out", required=True, help="the .npz to write")
  parser.add_argument("--ngf", type=int, default=4, help="official --ngf (default 64 there)")
  parser.add_argument("--ndf", type=int, default=4, help="official --ndf (default 64 there)")
  parser.add_argument("--n_blocks", type=int, default=2,
                      help="residual blocks of the generator (official resnet_9blocks: 9)")
  parser.add_argument("--image_size", type=int, default=32, help="side of the square inputs")
  parser.add_argument("--batch", type=int, default=1, help="official --batch_size")
  parser.add_argument("--num_patches", type=int, default=16, help="official --num_patches (256)")
  parser.add_argument("--netF_nc", type=int, default=16, help="official --netF_nc (256)")
  parser.add_argument("--nce_layers", default="0,4,8,12,16",
                      help="official --nce_layers (indices into netG.model)")
  parser.add_argument("--generator_checkpoint", default=None,
                      help="also write the initial netG as the official save_networks does "
                      "(torch.save(netG.state_dict()), a latest_net_G.pth)")
  parser.add_argument("--seed", type=int, default=0,
                      help="torch.manual_seed / np.random.seed before building the model, and "
                      "the inputs' seed")
  return parser.parse_args(argv)


def import_official(official_dir: str, model: str = "cut"):
  """The official `models.<model>_model`, `models.networks` and `options.train_options`,
  imported from `official_dir` (CUT's code base, or one built on it such as SRUNIT's)
  with the two stubs of the docstring."""
  sys.path.insert(0, str(pathlib.Path(official_dir).resolve()))
  sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
  data = types.ModuleType("data")
  data.get_option_setter = lambda name: (lambda parser, is_train: parser)
  sys.modules["data"] = data
  model_module = importlib.import_module(f"models.{model}_model")
  from models import networks  # pylint: disable=g-import-not-at-top
  from options import train_options  # pylint: disable=g-import-not-at-top
  return model_module, networks, train_options


def official_options(args, train_options, model_flags: str | None = None):
  """The official training options with the flags' sizes; `model_flags` selects the
  model and its own options (default: CUT mode with `args.nce_layers`)."""
  if model_flags is None:
    model_flags = f"--model cut --nce_layers {args.nce_layers}"
  cmd_line = (f"{model_flags} --gpu_ids -1 --ngf {args.ngf} --ndf {args.ndf} "
              f"--batch_size {args.batch} --num_patches {args.num_patches} "
              f"--netF_nc {args.netF_nc} "
              f"--crop_size {args.image_size} --load_size {args.image_size}")
  # CUTModel.modify_commandline_options parses sys.argv itself (for --CUT_mode),
  # so it sees the official command line, not this tool's flags.
  argv, sys.argv = sys.argv, [sys.argv[0], *cmd_line.split()]
  try:
    opt = train_options.TrainOptions(cmd_line).gather_options()
  finally:
    sys.argv = argv
  opt.isTrain = True
  opt.gpu_ids = []  # what TrainOptions.parse makes of --gpu_ids -1
  opt.netG = f"resnet_{args.n_blocks}blocks"
  return opt


def define_g_any_blocks(networks):
  """`networks.define_G`'s resnet branch with the block count taken from the name."""

  def define_G(input_nc, output_nc, ngf, netG, norm="batch", use_dropout=False,  # pylint: disable=invalid-name
               init_type="normal", init_gain=0.02, no_antialias=False, no_antialias_up=False,
               gpu_ids=(), opt=None):
    n_blocks = int(re.fullmatch(r"resnet_(\d+)blocks", netG).group(1))
    net = networks.ResnetGenerator(input_nc, output_nc, ngf,
                                   norm_layer=networks.get_norm_layer(norm_type=norm),
                                   use_dropout=use_dropout, no_antialias=no_antialias,
                                   no_antialias_up=no_antialias_up, n_blocks=n_blocks, opt=opt)
    return networks.init_net(net, init_type, init_gain, list(gpu_ids))

  return define_G


def instance_norm_layout_bug() -> bool:
  """Whether InstanceNorm2d's backward differs for a channels-last incoming gradient."""
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True,
                  generator=torch.Generator().manual_seed(0))
  grad = torch.randn(1, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
  norm = torch.nn.InstanceNorm2d(4)
  dense, = torch.autograd.grad(norm(x), x, grad)
  strided, = torch.autograd.grad(norm(x), x, grad.contiguous(memory_format=torch.channels_last))
  return not torch.allclose(dense, strided, rtol=1e-12, atol=0)


def contiguous_instance_norm_gradients():
  """Makes the gradient entering every InstanceNorm2d's backward contiguous (see the docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  forward = torch.nn.InstanceNorm2d.forward

  def forward_with_contiguous_gradient(self, x):
    out = forward(self, x)
    if out.requires_grad:
      # A hook registered before the in-place ReLU that follows gets the
      # gradient with respect to this (pre-ReLU) output: the one IN's backward uses.
      out.register_hook(lambda grad: grad.contiguous())
    return out

  torch.nn.InstanceNorm2d.forward = forward_with_contiguous_gradient


def zero_gradient_params(model, networks_module) -> list[str]:
  """Conv biases followed by an InstanceNorm: their true gradient is 0."""
  import torch  # pylint: disable=g-import-not-at-top
  names = []
  for net_name in ("netG", "netD"):
    for prefix, module in getattr(model, net_name).named_modules():
      if not isinstance(module, torch.nn.Sequential):
        continue
      children = list(module.named_children())
      for (name, layer), (_, following) in zip(children, children[1:]):
        if isinstance(layer, torch.nn.Conv2d) and isinstance(following, torch.nn.InstanceNorm2d):
          names.append(f"{net_name}.{prefix}.{name}.bias".replace("..", "."))
  return names


class Run:
  """One official training step in one dtype, with netF's patch ids recorded or replayed."""

  def __init__(self, cut_model, opt, seed, inputs, dtype, weights=None, patch_ids=None,
               g_step_d_params=None, generator_checkpoint=None):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = {"A": torch.from_numpy(inputs["real_A"]), "B": torch.from_numpy(inputs["real_B"]),
            "A_paths": ["A"], "B_paths": ["B"]}
    with contextlib.redirect_stdout(io.StringIO()):
      model = cut_model.CUTModel(opt)
      model.data_dependent_initialize(data)
      model.setup(opt)
    self.initial = {f"{net}.{k}": v.detach().numpy().copy() for net in ("netG", "netF", "netD")
                    for k, v in getattr(model, net).named_parameters()}
    self.initial_buffers = {k: v.detach().clone() for k, v in model.netG.named_buffers()}
    self.initial_state_keys = list(model.netG.state_dict())
    if dtype == torch.float32 and generator_checkpoint:
      torch.save(model.netG.state_dict(), generator_checkpoint)  # BaseModel.save_networks
    if weights is not None:  # same seed, so the same weights; checked, then loaded anyway
      for key, value in self.initial.items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    if dtype == torch.float64:
      for net in (model.netG, model.netF, model.netD, model.criterionGAN):
        net.double()  # in place: the optimizers keep these Parameter objects
      data = {k: v.double() if torch.is_tensor(v) else v for k, v in data.items()}
    self.drawn, self.pooled = [], []
    sample = model.netF.forward
    replay = list(patch_ids or [])

    def netf_forward(feats, num_patches=64, ids=None):
      if ids is None and replay:
        ids = replay.pop(0)
        self.drawn.append(ids)
        pooled, ids = sample(feats, num_patches, ids)
      else:
        drew = ids is None
        pooled, ids = sample(feats, num_patches, ids)
        if drew:
          self.drawn.append(ids)
      self.pooled.append(pooled)
      return pooled, ids

    model.netF.forward = netf_forward
    if g_step_d_params is not None:
      step_d = model.optimizer_D.step

      def step_then_load_d():
        step_d()
        self.own_d_after = {f"netD.{k}": v.detach().numpy().copy()
                            for k, v in model.netD.named_parameters()}
        with torch.no_grad():
          for k, v in model.netD.named_parameters():
            v.copy_(torch.from_numpy(g_step_d_params[f"netD.{k}"]))

      model.optimizer_D.step = step_then_load_d
    d_forward = model.netD.forward
    self.predictions = []
    model.netD.forward = lambda x: self.predictions.append(d_forward(x)) or self.predictions[-1]
    model.set_input(data)
    model.optimize_parameters()
    self.model = model

  def results(self) -> dict[str, np.ndarray]:
    m = self.model
    out = {"outputs/fake_B": m.fake_B, "outputs/idt_B": m.idt_B,
           # netD calls in optimize_parameters: D step (fake, real), then G step (fake)
           "outputs/d_step/pred_fake": self.predictions[0],
           "outputs/d_step/pred_real": self.predictions[1],
           "outputs/g_step/pred_fake": self.predictions[2]}
    # netF calls: NCE (k, q), then NCE_Y (k, q)
    for term, (feat_k, feat_q) in zip(("nce", "nce_idt"),
                                      (self.pooled[0:2], self.pooled[2:4])):
      for i, (k, q) in enumerate(zip(feat_k, feat_q)):
        out[f"outputs/{term}/feat_k/{i}"], out[f"outputs/{term}/feat_q/{i}"] = k, q
    for name in ("D_fake", "D_real", "D", "G_GAN", "NCE", "NCE_Y", "G"):
      out[f"losses/{name}"] = getattr(m, f"loss_{name}")
    for net in ("netG", "netF", "netD"):
      for k, v in getattr(m, net).named_parameters():
        out[f"grads/{net}.{k}"] = v.grad
        out[f"params_after_step/{net}.{k}"] = v
    if hasattr(self, "own_d_after"):
      out.update({f"params_after_step/{k}": v for k, v in self.own_d_after.items()})
    return {k: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v)
            for k, v in out.items()}


def main(argv=None):
  args = parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  torch.use_deterministic_algorithms(True)
  layout_bug = instance_norm_layout_bug()
  contiguous_instance_norm_gradients()
  assert not instance_norm_layout_bug()
  cut_model, networks, train_options = import_official(args.official_dir)
  networks.define_G = define_g_any_blocks(networks)
  opt = official_options(args, train_options)
  rng = np.random.default_rng(args.seed)
  shape = (args.batch, opt.input_nc, args.image_size, args.image_size)
  inputs = {name: rng.uniform(-1, 1, shape).astype(np.float32) for name in ("real_A", "real_B")}

  run64 = Run(cut_model, opt, args.seed, inputs, torch.float64)
  weights = run64.initial
  patch_ids = [[i.numpy() for i in ids] for ids in run64.drawn]
  ref = run64.results()
  d_after64 = {k[len("params_after_step/"):]: v.astype(np.float32) for k, v in ref.items()
               if k.startswith("params_after_step/netD.")}
  run32 = Run(cut_model, opt, args.seed, inputs, torch.float32, weights, patch_ids, d_after64,
              args.generator_checkpoint)
  f32 = run32.results()

  nce_layers = [int(i) for i in opt.nce_layers.split(",")]
  config = {
      "model": "cut", "CUT_mode": opt.CUT_mode, "input_nc": opt.input_nc,
      "output_nc": opt.output_nc, "ngf": opt.ngf, "ndf": opt.ndf, "n_blocks": args.n_blocks,
      "netD": opt.netD, "n_layers_D": 3, "normG": opt.normG, "normD": opt.normD,
      "no_antialias": opt.no_antialias, "no_antialias_up": opt.no_antialias_up,
      "no_dropout": opt.no_dropout, "init_type": opt.init_type, "init_gain": opt.init_gain,
      "netF": opt.netF, "netF_nc": opt.netF_nc, "num_patches": opt.num_patches,
      "nce_layers": nce_layers, "nce_T": opt.nce_T, "nce_idt": opt.nce_idt,
      "nce_includes_all_negatives_from_minibatch": opt.nce_includes_all_negatives_from_minibatch,
      "flip_equivariance": opt.flip_equivariance, "lambda_GAN": opt.lambda_GAN,
      "lambda_NCE": opt.lambda_NCE, "gan_mode": opt.gan_mode, "lr": opt.lr,
      "beta1": opt.beta1, "beta2": opt.beta2, "adam_eps": 1e-8, "batch_size": opt.batch_size,
      "image_size": args.image_size, "seed": args.seed,
      "zero_gradient_params": zero_gradient_params(run64.model, networks),
      "f32_g_step_uses_float64_updated_D": True,
      "torch_instance_norm_layout_bug": layout_bug,
      "torch": torch.__version__,
  }
  assert opt.gan_mode == "lsgan" and opt.netF == "mlp_sample" and not opt.flip_equivariance, opt
  buffers = {f"netG.{k}": v.numpy() for k, v in run64.initial_buffers.items()}
  state_keys = {f"netG.{k}" for k in run64.initial_state_keys}
  assert state_keys == {k for k in weights if k.startswith("netG.")} | set(buffers), state_keys
  fixture = {"config_json": np.array(json.dumps(config)),
             **{f"inputs/{k}": v for k, v in inputs.items()},
             **{f"params/{k}": v for k, v in weights.items()},
             **{f"buffers/{k}": v for k, v in buffers.items()}}
  for term, ids in zip(("nce", "nce_idt"), patch_ids):
    for i, layer_ids in enumerate(ids):
      fixture[f"patch_ids/{term}/{i}"] = layer_ids.astype(np.int64)
  for key, value in ref.items():
    fixture[key] = value.astype(np.float64)
    fixture[f"f32/{key}"] = f32[key].astype(np.float32)
    fixture[f"f32_error/{key}"] = np.array(np.max(np.abs(f32[key].astype(np.float64) - value)))
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  partial = out.with_name(out.name + ".partial")  # renamed when whole: no half-written fixture
  with open(partial, "wb") as f:
    np.savez_compressed(f, **fixture)
  partial.replace(out)
  print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB, {len(fixture)} keys); "
        f"losses G {float(ref['losses/G']):.6f} D {float(ref['losses/D']):.6f}")


if __name__ == "__main__":
  main()
