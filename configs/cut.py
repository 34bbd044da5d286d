"""CUT (Park et al., ECCV 2020), `--model cut --CUT_mode CUT`, value for value.

Every model, loss, optimizer and data value is the official default of
taesungp/contrastive-unpaired-translation (options/base_options.py,
options/train_options.py, models/cut_model.py with its CUT-mode overrides); the
official option name is in each comment. The modules are
i2i_jax/models/cut.py, the losses and the step i2i_jax/losses_cut.py, the
family i2i_jax/families/cut.py (docs/cut.md). The blocks of the shared trainer
(sharding, checkpoints, logging, evaluators, data loading) are configs/vsait.py's,
which documents them.

  python -m i2i_jax.train --config=configs/cut.py --workdir=DIR \
      --config.data.source=folder:DATAROOT/trainA --config.data.target=folder:DATAROOT/trainB
"""

import ml_collections

from i2i_jax.configs import vsait

# XLA options of the train step and the translator when JAX runs on CPU
# (config.cpu_compiler_options):
# convolutions to XLA:CPU's own kernels, matrix products and reductions to
# YNNPACK. The generators' unpadded convs on reflection-padded maps run 2-4x
# faster there than in YNNPACK's fusions; without them the CUT step at 256x256
# runs ~1.7x as long (benchmarks/RESULTS.md, "CUT: official vs ours (CPU)",
# tenth round).
CPU_COMPILER_OPTIONS = dict(xla_cpu_experimental_ynn_fusion_type=(
    "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"))


def get_config() -> ml_collections.ConfigDict:
  """Returns the official CUT training configuration."""
  config = vsait.get_config()

  config.model = ml_collections.ConfigDict()
  config.model.family = "cut"
  config.model.name = "cut"  # --model cut, --CUT_mode CUT (not FastCUT)
  config.model.input_nc = 3  # --input_nc
  config.model.output_nc = 3  # --output_nc
  config.model.ngf = 64  # --ngf
  config.model.n_blocks = 9  # --netG resnet_9blocks
  # Fixed by the official defaults and implemented as such (not switchable here):
  # --normG instance, --normD instance (InstanceNorm2d without affine), --no_dropout
  # True, --no_antialias False and --no_antialias_up False (blur down/up-sampling),
  # reflection padding in the generator, --netF mlp_sample, --netD basic.
  config.model.ndf = 64  # --ndf
  config.model.n_layers_D = 3  # --netD basic (PatchGAN, n_layers=3)
  config.model.netF_nc = 256  # --netF_nc
  # Indices into the official generator's nn.Sequential (--nce_layers): the
  # reflection-padded input, the two down-sampling convs, residual blocks 1 and 5.
  config.model.nce_layers = (0, 4, 8, 12, 16)
  config.model.num_patches = 256  # --num_patches (per layer and image)
  # --init_type xavier --init_gain 0.02 (xavier_normal_(gain=0.02), biases 0) is
  # the modules' initializer.

  config.loss = ml_collections.ConfigDict()
  config.loss.gan_mode = "lsgan"  # --gan_mode
  config.loss.lambda_GAN = 1.0  # --lambda_GAN
  config.loss.lambda_NCE = 1.0  # --lambda_NCE (CUT mode)
  config.loss.nce_idt = True  # --nce_idt (CUT mode): NCE also on (real_B, G(real_B))
  config.loss.nce_T = 0.07  # --nce_T
  config.loss.nce_includes_all_negatives_from_minibatch = False  # same option name
  # --flip_equivariance False (FastCUT only; not implemented).

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-4  # --lr (G, F and D alike)
  config.optimizer.b1 = 0.5  # --beta1
  config.optimizer.b2 = 0.999  # --beta2
  config.optimizer.eps = 1e-8  # torch.optim.Adam's default
  # --lr_policy linear: constant for --n_epochs epochs, then linearly to zero
  # over --n_epochs_decay epochs (stepped once per epoch, from --epoch_count).
  config.optimizer.n_epochs = 200  # --n_epochs
  config.optimizer.n_epochs_decay = 200  # --n_epochs_decay
  config.optimizer.epoch_count = 1  # --epoch_count
  # Optimizer steps per epoch = max(|trainA|, |trainB|) / batch_size (the official
  # unaligned dataset's length); set it for the data set. Default: horse2zebra
  # (1067 horses, 1334 zebras).
  config.optimizer.steps_per_epoch = 1334
  # The official run: epochs epoch_count .. n_epochs + n_epochs_decay. Set it
  # with n_epochs, n_epochs_decay or steps_per_epoch.
  config.total_steps = (config.optimizer.n_epochs + config.optimizer.n_epochs_decay
                        ) * config.optimizer.steps_per_epoch
  # No gradient accumulation in CUT (the family refuses other values).
  config.grad_accum_steps = 1

  # The official unaligned dataset: DATAROOT/trainA (source) and DATAROOT/trainB
  # (target), each shuffled on its own (--serial_batches False); CUT keeps no
  # image pool for D (--pool_size 0).
  config.data.source = "folder:datasets/horse2zebra/trainA"
  config.data.target = "folder:datasets/horse2zebra/trainB"
  config.data.batch_size = 1  # --batch_size
  # --preprocess resize_and_crop --load_size 286 --crop_size 256, flip unless
  # --no_flip; images scaled to [-1, 1]. The official loader resizes bicubic
  # (our resize op is bilinear) and stops the resize-and-crop (load_size =
  # crop_size) once the learning rate decays (epoch > n_epochs).
  config.data.preprocess = "resize(286,286)|random_crop(256,256)|flip_lr|value_range(-1,1)"
  config.cpu_compiler_options = dict(CPU_COMPILER_OPTIONS)
  return config
