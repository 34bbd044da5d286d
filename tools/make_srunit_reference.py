"""Runs the OFFICIAL SRUNIT code (SeanJia/SRUNIT) once and stores a parity fixture.

As tools/make_cut_reference.py does for CUT (whose option stubs, generator
of any block count, InstanceNorm gradient-layout workaround and zero-gradient
list are imported from it): on CPU, the official `SRUNITModel` (official option
defaults, sizes from the flags) is built with `torch.manual_seed(seed)` and
`np.random.seed(seed)`, `data_dependent_initialize` runs on the batch, then
`setup` and one `optimize_parameters(epoch)` with epoch = inact_epochs + 1 (the
robustness loss on): forward (with the perturbation), D step, then the G and F
step on `G + reg * reg` against the updated D. Twice:

* in float64 (networks and inputs cast up): every result key, stored float64;
* in float32 from the same seeds (the draws are checked to be the same):
  `f32/<key>` and `f32_error/<key>` = max |f32 - f64|; its G step runs against
  the float64 run's updated D cast to float32, as in the CUT tool.

The step's draws are stored for the JAX side: the NCE positions (as CUT's), the
robustness layer `choice` (np.random.choice), what the official generator makes
of its noise (torch.randn) and magnitudes (torch.rand): the float32 offset
[B, C, h, w] added to the feature and the divisor [B, 1, h, w], and its
positions (netF's draw).

Keys: those of tools/make_cut_reference.py, and
  robustness/choice, robustness/offset, robustness/magnitude, robustness/patch_ids
  outputs/reg/feat_k, outputs/reg/feat_q       netF of the clean and perturbed feature
  losses/reg

Regenerate the committed fixture (about 15 s on 2 cores):

  git --git-dir=$(fetched SeanJia/SRUNIT) archive HEAD models options util | tar x -C /tmp/srunit_official
  python tools/make_srunit_reference.py --official_dir=/tmp/srunit_official \\
      --out=tests/fixtures/srunit_tiny.npz
"""

import argparse
import contextlib
import io
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_cut_reference as cut_reference  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--official_dir", required=True,
                      help="a checkout of SeanJia/SRUNIT (needs models/, options/, util/)")
  parser.add_argument("--out", required=True, help="the .npz to write")
  parser.add_argument("--ngf", type=int, default=4, help="official --ngf (default 64 there)")
  parser.add_argument("--ndf", type=int, default=4, help="official --ndf (default 64 there)")
  parser.add_argument("--n_blocks", type=int, default=5,
                      help="residual blocks (>= 5 so that NCE layer 16 is a block; official 9)")
  parser.add_argument("--image_size", type=int, default=32, help="side of the square inputs")
  parser.add_argument("--batch", type=int, default=1, help="official --batch_size")
  parser.add_argument("--num_patches", type=int, default=16, help="official --num_patches (256)")
  parser.add_argument("--netF_nc", type=int, default=16, help="official --netF_nc (256)")
  parser.add_argument("--reg_type", default="v2", help="official --reg_type")
  parser.add_argument("--seed", type=int, default=0,
                      help="torch.manual_seed / np.random.seed, and the inputs' seed")
  return parser.parse_args(argv)


def official_options(args, train_options):
  """The official training options (SRUNIT defaults) with the flags' sizes."""
  return cut_reference.official_options(args, train_options,
                                        f"--model srunit --reg_type {args.reg_type}")


@contextlib.contextmanager
def recorded_torch_draws(draws: list):
  """Within it, torch.randn / torch.rand outputs are appended to `draws` as (name, tensor)."""
  import torch  # pylint: disable=g-import-not-at-top
  originals = {"randn": torch.randn, "rand": torch.rand}

  def recorder(name):
    def draw(*args, **kwargs):
      out = originals[name](*args, **kwargs)
      draws.append((name, out.clone()))
      return out
    return draw

  torch.randn, torch.rand = recorder("randn"), recorder("rand")
  try:
    yield
  finally:
    torch.randn, torch.rand = originals["randn"], originals["rand"]


class Run:
  """One official SRUNIT training step in one dtype, recording its draws."""

  def __init__(self, srunit_model, opt, seed, inputs, dtype, weights=None, g_step_d_params=None):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(seed)
    np.random.seed(seed)
    data = {"A": torch.from_numpy(inputs["real_A"]), "B": torch.from_numpy(inputs["real_B"]),
            "A_paths": ["A"], "B_paths": ["B"]}
    with contextlib.redirect_stdout(io.StringIO()):
      model = srunit_model.SRUNITModel(opt)
      model.data_dependent_initialize(data)
      model.setup(opt)
    self.initial = {f"{net}.{k}": v.detach().numpy().copy() for net in ("netG", "netF", "netD")
                    for k, v in getattr(model, net).named_parameters()}
    if weights is not None:
      for key, value in self.initial.items():
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    if dtype == torch.float64:
      for net in (model.netG, model.netF, model.netD, model.criterionGAN):
        net.double()
      data = {k: v.double() if torch.is_tensor(v) else v for k, v in data.items()}
    self.drawn, self.pooled, self.torch_draws = [], [], []
    sample = model.netF.forward

    def netf_forward(feats, num_patches=64, patch_ids=None, **kwargs):
      pooled, ids = sample(feats, num_patches, patch_ids, **kwargs)
      if patch_ids is None:
        self.drawn.append([np.asarray(i) for i in ids])
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
    with recorded_torch_draws(self.torch_draws):
      model.optimize_parameters(opt.inact_epochs + 1)
    assert [name for name, _ in self.torch_draws] == ["randn", "rand"], self.torch_draws
    self.model = model

  def perturbation(self) -> dict[str, np.ndarray]:
    """The official offset and divisor of the step, from its draws by the official expressions.

    Evaluated here with the same torch ops on the same float32 tensors (bit for
    bit what `ResnetGenerator.forward(noises=...)` makes of them).
    """
    (_, noise), (_, rand_magnitude) = self.torch_draws
    reg_noise = self.model.opt.reg_noise
    norm = noise.pow(2).sum(1, keepdim=True).pow(0.5)
    return {"robustness/offset": (noise.div(norm + 1e-12) * reg_noise).numpy(),
            "robustness/magnitude": (1e-7 + (reg_noise - 1e-7) * rand_magnitude).numpy()}

  def draws(self) -> dict[str, np.ndarray]:
    """The step's randomness: NCE ids, the robustness layer, noise, magnitudes, ids."""
    out = {"robustness/choice": np.array(self.model.choice, np.int64),
           **self.perturbation(),
           "robustness/patch_ids": self.drawn[2][0].astype(np.int64)}
    for term, ids in zip(("nce", "nce_idt"), self.drawn[:2]):
      for i, layer_ids in enumerate(ids):
        out[f"patch_ids/{term}/{i}"] = layer_ids.astype(np.int64)
    return out

  def results(self) -> dict[str, np.ndarray]:
    m = self.model
    out = {"outputs/fake_B": m.fake_B, "outputs/idt_B": m.idt_B,
           "outputs/d_step/pred_fake": self.predictions[0],
           "outputs/d_step/pred_real": self.predictions[1],
           "outputs/g_step/pred_fake": self.predictions[2]}
    # netF calls: NCE (k, q), NCE_Y (k, q), then the robustness loss (k, q)
    for term, (feat_k, feat_q) in zip(("nce", "nce_idt"), (self.pooled[0:2], self.pooled[2:4])):
      for i, (k, q) in enumerate(zip(feat_k, feat_q)):
        out[f"outputs/{term}/feat_k/{i}"], out[f"outputs/{term}/feat_q/{i}"] = k, q
    out["outputs/reg/feat_k"], out["outputs/reg/feat_q"] = self.pooled[4][0], self.pooled[5][0]
    for name in ("D_fake", "D_real", "D", "G_GAN", "NCE", "NCE_Y", "G", "reg"):
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
  layout_bug = cut_reference.instance_norm_layout_bug()
  cut_reference.contiguous_instance_norm_gradients()
  assert not cut_reference.instance_norm_layout_bug()
  srunit_model, networks, train_options = cut_reference.import_official(args.official_dir,
                                                                         "srunit")
  networks.define_G = cut_reference.define_g_any_blocks(networks)
  opt = official_options(args, train_options)
  rng = np.random.default_rng(args.seed)
  shape = (args.batch, opt.input_nc, args.image_size, args.image_size)
  inputs = {name: rng.uniform(-1, 1, shape).astype(np.float32) for name in ("real_A", "real_B")}

  run64 = Run(srunit_model, opt, args.seed, inputs, torch.float64)
  ref = run64.results()
  d_after64 = {k[len("params_after_step/"):]: v.astype(np.float32) for k, v in ref.items()
               if k.startswith("params_after_step/netD.")}
  run32 = Run(srunit_model, opt, args.seed, inputs, torch.float32, run64.initial, d_after64)
  f32 = run32.results()
  draws = run64.draws()
  for key, value in run32.draws().items():
    np.testing.assert_array_equal(value, draws[key], err_msg=f"{key}: the runs drew differently")

  config = {
      "model": "srunit", "CUT_mode": opt.CUT_mode, "input_nc": opt.input_nc,
      "output_nc": opt.output_nc, "ngf": opt.ngf, "ndf": opt.ndf, "n_blocks": args.n_blocks,
      "netD": opt.netD, "n_layers_D": 3, "normG": opt.normG, "normD": opt.normD,
      "no_antialias": opt.no_antialias, "no_antialias_up": opt.no_antialias_up,
      "no_dropout": opt.no_dropout, "netF": opt.netF, "netF_nc": opt.netF_nc,
      "num_patches": opt.num_patches, "nce_layers": [int(i) for i in opt.nce_layers.split(",")],
      "nce_T": opt.nce_T, "nce_idt": opt.nce_idt,
      "nce_includes_all_negatives_from_minibatch": opt.nce_includes_all_negatives_from_minibatch,
      "flip_equivariance": opt.flip_equivariance, "lambda_GAN": opt.lambda_GAN,
      "lambda_NCE": opt.lambda_NCE, "gan_mode": opt.gan_mode, "lr": opt.lr,
      "beta1": opt.beta1, "beta2": opt.beta2, "adam_eps": 1e-8, "batch_size": opt.batch_size,
      "reg": opt.reg, "reg_type": opt.reg_type, "reg_noise": opt.reg_noise,
      "reg_layers": [int(i) for i in opt.reg_layers.split(",")],
      "inact_epochs": opt.inact_epochs, "D_noise": opt.D_noise,
      "epoch": opt.inact_epochs + 1, "image_size": args.image_size, "seed": args.seed,
      "zero_gradient_params": cut_reference.zero_gradient_params(run64.model, networks),
      "f32_g_step_uses_float64_updated_D": True,
      "torch_instance_norm_layout_bug": layout_bug,
      "torch": torch.__version__,
  }
  assert opt.gan_mode == "lsgan" and opt.netF == "mlp_sample" and not opt.flip_equivariance, opt
  assert opt.D_noise == 0, opt
  fixture = {"config_json": np.array(json.dumps(config)),
             **{f"inputs/{k}": v for k, v in inputs.items()},
             **{f"params/{k}": v for k, v in run64.initial.items()}, **draws}
  for key, value in ref.items():
    fixture[key] = value.astype(np.float64)
    fixture[f"f32/{key}"] = f32[key].astype(np.float32)
    fixture[f"f32_error/{key}"] = np.array(np.max(np.abs(f32[key].astype(np.float64) - value)))
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  partial = out.with_name(out.name + ".partial")
  with open(partial, "wb") as f:
    np.savez_compressed(f, **fixture)
  partial.replace(out)
  print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB, {len(fixture)} keys); "
        f"choice {int(draws['robustness/choice'])}; losses G {float(ref['losses/G']):.6f} "
        f"reg {float(ref['losses/reg']):.6f} D {float(ref['losses/D']):.6f}")


if __name__ == "__main__":
  main()
