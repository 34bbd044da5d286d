"""Runs the OFFICIAL CycleGAN code (junyanz/pytorch-CycleGAN-and-pix2pix) once and stores a parity fixture.

What it computes, on CPU, from one set of float32 weights and inputs (see docs/cyclegan.md):
the official `CycleGANModel` (official option defaults from the official option
parser, sizes from the flags below) is built with `torch.manual_seed(seed)`,
`setup` runs (it creates the LambdaLR schedulers) and then one
`optimize_parameters`: forward, the G step (G_A and G_B), then the D step
(D_A and D_B) on the forward's fakes after each went through its ImagePool.
The pools start empty, and an `ImagePool.query` on a pool that is not full
stores the images and returns them unchanged: the step is deterministic (the
tool checks that the pools returned their inputs). That is done twice:

* in float64 (networks and inputs cast up): every result key, stored float64;
* in float32: `f32/<key>` and `f32_error/<key>` = max |f32 - f64|.

The G step and the D step both start from the initial weights (the D step
sees the fakes of the generators before their update), so no float32 result
depends on another float32 optimizer step.

Keys (PyTorch layout, NCHW / OIHW / ConvTranspose2d [in, out, kh, kw]; <net> in
netG_A, netG_B, netD_A, netD_B):
  config_json, inputs/real_A, inputs/real_B     [B, 3, S, S] float32 in (-1, 1)
  params/<net>.<name>                           float32 weights before the step
                                                (netG_A's are exactly latest_net_G_A.pth)
  outputs/fake_B, rec_A, fake_A, rec_B,         the forward's images at the initial weights,
          idt_A, idt_B                          and G_A(real_B), G_B(real_A)
  outputs/g_step/pred_fake_B, .../pred_fake_A   D_A(fake_B), D_B(fake_A) in the G step
  outputs/pool/fake_B, .../fake_A               what the two ImagePools returned (= the fakes)
  outputs/d_step/D_A/pred_real, .../pred_fake   D_A(real_B), D_A(pooled fake_B) (and D_B/...)
  losses/G_A, G_B, cycle_A, cycle_B, idt_A, idt_B, G, D_A, D_B
  grads/<net>.<name>                            G_A, G_B: of loss G; D_A, D_B: of D_A + D_B
  params_after_step/<net>.<name>
  f32/<key>, f32_error/<key>                    for every result key

Only the official code runs here; nothing of it is copied. Its option parser
imports the `data` package (torchvision transforms, not installed here); the
tool puts a `data` module whose option setter adds nothing (the official
unaligned dataset adds no options) in `sys.modules`, so that the official
`options`, `models` and `util` import unchanged. The official `define_G`
accepts only 6 or 9 residual blocks; the tool replaces it with the same
`ResnetGenerator` construction for `--n_blocks`. `--gpu_ids -1` keeps every
network on the CPU (no DataParallel wrapper).

Regenerate the committed fixture (a few seconds on 2 cores); the official files
come from the newest upstream commit the stored snapshots hold (00d5574,
2021-11-17, "update warning message", via an unmodified fork):

  git --git-dir=$(fetched repo) archive 00d5574908eb66fe0127b32d7b030001453f21d0 \\
      models options util data | tar x -C /tmp/cyclegan_official
  python tools/make_cyclegan_reference.py --official_dir=/tmp/cyclegan_official \\
      --out=tests/fixtures/cyclegan_tiny.npz

and another configuration, checked by the same test:

  python tools/make_cyclegan_reference.py --official_dir=/tmp/cyclegan_official --ngf=6 \\
      --ndf=5 --n_blocks=3 --image_size=40 --batch=2 --seed=3 \\
      --out=/tmp/cyclegan_ref/cyclegan_b2.npz
  I2I_CYCLEGAN_REFERENCE_DIR=/tmp/cyclegan_ref python -m pytest -q tests/test_cyclegan_parity.py
"""

import argparse
import contextlib
import io
import json
import pathlib
import re
import sys
import types

import numpy as np

NETS = ("netG_A", "netG_B", "netD_A", "netD_B")


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--official_dir", required=True,
                      help="a checkout of junyanz/pytorch-CycleGAN-and-pix2pix (needs models/, "
                      "options/, util/)")
  parser.add_argument("--out", required=True, help="the .npz to write")
  parser.add_argument("--ngf", type=int, default=3, help="official --ngf (default 64 there)")
  parser.add_argument("--ndf", type=int, default=3, help="official --ndf (default 64 there)")
  parser.add_argument("--n_blocks", type=int, default=2,
                      help="residual blocks of the generators (official resnet_9blocks: 9)")
  parser.add_argument("--image_size", type=int, default=32,
                      help="side of the square inputs (a multiple of 4)")
  parser.add_argument("--batch", type=int, default=1, help="official --batch_size")
  parser.add_argument("--seed", type=int, default=0,
                      help="torch.manual_seed before building the model, and the inputs' seed")
  return parser.parse_args(argv)


def import_official(official_dir: str):
  """The official modules, imported from `official_dir` with the `data` stub of the docstring."""
  sys.path.insert(0, str(pathlib.Path(official_dir).resolve()))
  data = types.ModuleType("data")
  data.get_option_setter = lambda name: (lambda parser, is_train: parser)
  sys.modules["data"] = data
  from models import cycle_gan_model, networks  # pylint: disable=g-import-not-at-top
  from options import train_options  # pylint: disable=g-import-not-at-top
  return cycle_gan_model, networks, train_options


def official_options(args, train_options):
  """The official training options (cycle_gan defaults) with the flags' sizes."""
  cmd_line = (f"--dataroot unused --model cycle_gan --gpu_ids -1 --ngf {args.ngf} "
              f"--ndf {args.ndf} --batch_size {args.batch} "
              f"--crop_size {args.image_size} --load_size {args.image_size}")
  # BaseOptions.gather_options parses sys.argv.
  argv, sys.argv = sys.argv, [sys.argv[0], *cmd_line.split()]
  try:
    opt = train_options.TrainOptions().gather_options()
  finally:
    sys.argv = argv
  opt.isTrain = True
  opt.gpu_ids = []  # what BaseOptions.parse makes of --gpu_ids -1
  opt.netG = f"resnet_{args.n_blocks}blocks"
  return opt


def define_g_any_blocks(networks):
  """`networks.define_G`'s resnet branch with the block count taken from the name."""

  def define_G(input_nc, output_nc, ngf, netG,  # pylint: disable=invalid-name
               norm="batch", use_dropout=False, init_type="normal", init_gain=0.02, gpu_ids=()):
    n_blocks = int(re.fullmatch(r"resnet_(\d+)blocks", netG).group(1))
    net = networks.ResnetGenerator(input_nc, output_nc, ngf,
                                   norm_layer=networks.get_norm_layer(norm_type=norm),
                                   use_dropout=use_dropout, n_blocks=n_blocks)
    return networks.init_net(net, init_type, init_gain, list(gpu_ids))

  return define_G


def zero_gradient_params(model) -> list[str]:
  """Conv and transposed-conv biases followed by an InstanceNorm: their true gradient is 0."""
  import torch  # pylint: disable=g-import-not-at-top
  names = []
  for net_name in NETS:
    for prefix, module in getattr(model, net_name).named_modules():
      if not isinstance(module, torch.nn.Sequential):
        continue
      children = list(module.named_children())
      for (name, layer), (_, following) in zip(children, children[1:]):
        if (isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
            and isinstance(following, torch.nn.InstanceNorm2d) and layer.bias is not None):
          names.append(f"{net_name}.{prefix}.{name}.bias".replace("..", "."))
  return names


class Run:
  """One official training step in one dtype, recording the D outputs and the pools' answers."""

  def __init__(self, cycle_gan_model, opt, seed, inputs, dtype, weights=None):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(seed)
    data = {"A": torch.from_numpy(inputs["real_A"]), "B": torch.from_numpy(inputs["real_B"]),
            "A_paths": ["A"], "B_paths": ["B"]}
    with contextlib.redirect_stdout(io.StringIO()):
      model = cycle_gan_model.CycleGANModel(opt)
      model.setup(opt)
    self.initial = {f"{net}.{k}": v.detach().numpy().copy() for net in NETS
                    for k, v in getattr(model, net).named_parameters()}
    self.state_keys = {f"{net}.{k}" for net in NETS for k in getattr(model, net).state_dict()}
    if weights is not None:  # same seed, so the same weights; checked
      for key, value in self.initial.items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    if dtype == torch.float64:
      for net in NETS:
        getattr(model, net).double()  # in place: the optimizers keep these Parameter objects
      model.criterionGAN.double()
      data = {k: v.double() if torch.is_tensor(v) else v for k, v in data.items()}
    self.predictions = {name: [] for name in ("netD_A", "netD_B")}
    for name, calls in self.predictions.items():
      net = getattr(model, name)
      forward = net.forward
      net.forward = lambda x, forward=forward, calls=calls: calls.append(forward(x)) or calls[-1]
    self.pooled = {}
    for name in ("fake_B", "fake_A"):
      pool = getattr(model, f"{name}_pool")
      query = pool.query
      pool.query = (lambda images, query=query, name=name:
                    self.pooled.setdefault(name, query(images)))
    model.set_input(data)
    model.optimize_parameters()
    self.model = model

  def results(self) -> dict[str, np.ndarray]:
    m = self.model
    d_a, d_b = self.predictions["netD_A"], self.predictions["netD_B"]
    # netD calls in optimize_parameters: G step D_A(fake_B), D_B(fake_A); then the
    # D step D_A(real_B), D_A(pooled fake_B), D_B(real_A), D_B(pooled fake_A).
    out = {f"outputs/{name}": getattr(m, name)
           for name in ("fake_B", "rec_A", "fake_A", "rec_B", "idt_A", "idt_B")}
    out.update({"outputs/g_step/pred_fake_B": d_a[0], "outputs/g_step/pred_fake_A": d_b[0],
                "outputs/pool/fake_B": self.pooled["fake_B"],
                "outputs/pool/fake_A": self.pooled["fake_A"],
                "outputs/d_step/D_A/pred_real": d_a[1], "outputs/d_step/D_A/pred_fake": d_a[2],
                "outputs/d_step/D_B/pred_real": d_b[1], "outputs/d_step/D_B/pred_fake": d_b[2]})
    for name in ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "G", "D_A", "D_B"):
      out[f"losses/{name}"] = getattr(m, f"loss_{name}")
    for net in NETS:
      for k, v in getattr(m, net).named_parameters():
        out[f"grads/{net}.{k}"] = v.grad
        out[f"params_after_step/{net}.{k}"] = v
    return {k: np.asarray(v.detach().numpy() if hasattr(v, "detach") else v)
            for k, v in out.items()}


def main(argv=None):
  args = parse_args(argv)
  import torch  # pylint: disable=g-import-not-at-top
  torch.use_deterministic_algorithms(True)
  cycle_gan_model, networks, train_options = import_official(args.official_dir)
  networks.define_G = define_g_any_blocks(networks)
  opt = official_options(args, train_options)
  rng = np.random.default_rng(args.seed)
  shape = (args.batch, opt.input_nc, args.image_size, args.image_size)
  inputs = {name: rng.uniform(-1, 1, shape).astype(np.float32) for name in ("real_A", "real_B")}

  run64 = Run(cycle_gan_model, opt, args.seed, inputs, torch.float64)
  weights = run64.initial
  ref = run64.results()
  f32 = Run(cycle_gan_model, opt, args.seed, inputs, torch.float32, weights).results()
  for results in (ref, f32):  # an ImagePool that is not full returns its input
    for name in ("fake_B", "fake_A"):
      np.testing.assert_array_equal(results[f"outputs/pool/{name}"], results[f"outputs/{name}"])
  # Every state-dict entry is a trained parameter (instance norm keeps no statistics).
  assert run64.state_keys == set(weights), run64.state_keys ^ set(weights)

  config = {
      "model": opt.model, "input_nc": opt.input_nc, "output_nc": opt.output_nc,
      "ngf": opt.ngf, "ndf": opt.ndf, "n_blocks": args.n_blocks, "netD": opt.netD,
      "n_layers_D": 3, "norm": opt.norm, "no_dropout": opt.no_dropout,
      "init_type": opt.init_type, "init_gain": opt.init_gain, "gan_mode": opt.gan_mode,
      "lambda_A": opt.lambda_A, "lambda_B": opt.lambda_B,
      "lambda_identity": opt.lambda_identity, "pool_size": opt.pool_size, "lr": opt.lr,
      "beta1": opt.beta1, "beta2": 0.999, "adam_eps": 1e-8, "lr_policy": opt.lr_policy,
      "n_epochs": opt.n_epochs, "n_epochs_decay": opt.n_epochs_decay,
      "epoch_count": opt.epoch_count, "batch_size": opt.batch_size,
      "image_size": args.image_size, "seed": args.seed,
      "zero_gradient_params": zero_gradient_params(run64.model),
      "pools_returned_their_inputs": True,
      "torch": torch.__version__,
  }
  assert (opt.gan_mode, opt.netD, opt.norm, opt.init_type, opt.lr_policy) == (
      "lsgan", "basic", "instance", "normal", "linear"), opt
  assert opt.no_dropout and opt.direction == "AtoB" and opt.pool_size > 0, opt
  fixture = {"config_json": np.array(json.dumps(config)),
             **{f"inputs/{k}": v for k, v in inputs.items()},
             **{f"params/{k}": v for k, v in weights.items()}}
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
        f"losses G {float(ref['losses/G']):.6f} D_A {float(ref['losses/D_A']):.6f} "
        f"D_B {float(ref['losses/D_B']):.6f}")


if __name__ == "__main__":
  main()
