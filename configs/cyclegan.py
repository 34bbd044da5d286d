"""CycleGAN (Zhu et al., ICCV 2017), `--model cycle_gan`, value for value.

Every model, loss, optimizer and data value is the official default of
junyanz/pytorch-CycleGAN-and-pix2pix (options/base_options.py,
options/train_options.py, models/cycle_gan_model.py); the official option name
is in each comment. The networks, image pools, losses and step are
i2i_jax/losses_cyclegan.py (CUT's modules without antialiasing), the family
i2i_jax/families/cyclegan.py (docs/cyclegan.md). The blocks of the shared
trainer (sharding, checkpoints, logging, evaluators, data loading) are
configs/vsait.py's, which documents them.

  python -m i2i_jax.train --config=configs/cyclegan.py --workdir=DIR \
      --config.data.source=folder:DATAROOT/trainA --config.data.target=folder:DATAROOT/trainB
"""

import ml_collections

from i2i_jax.configs import cut
from i2i_jax.configs import vsait


def get_config() -> ml_collections.ConfigDict:
  """Returns the official CycleGAN training configuration."""
  config = vsait.get_config()

  config.model = ml_collections.ConfigDict()
  config.model.family = "cyclegan"
  config.model.name = "cycle_gan"  # --model cycle_gan
  config.model.input_nc = 3  # --input_nc
  config.model.output_nc = 3  # --output_nc
  config.model.ngf = 64  # --ngf
  config.model.n_blocks = 9  # --netG resnet_9blocks
  config.model.ndf = 64  # --ndf
  config.model.n_layers_D = 3  # --netD basic (70x70 PatchGAN, n_layers=3)
  # Fixed by the official defaults and implemented as such (not switchable here):
  # --norm instance (InstanceNorm2d without affine or running statistics),
  # --no_dropout True (cycle_gan's default), reflection padding in the
  # generator, stride-2 convs down and ConvTranspose2d up (no antialiasing),
  # --init_type normal --init_gain 0.02 (N(0, 0.02) weights, biases 0).
  # --pool_size: generated images each discriminator's pool keeps (0: no pool).
  # Part of the state (the pools are checkpointed), hence a model key.
  config.model.pool_size = 50

  config.loss = ml_collections.ConfigDict()
  config.loss.gan_mode = "lsgan"  # --gan_mode
  config.loss.lambda_A = 10.0  # --lambda_A: cycle loss A -> B -> A
  config.loss.lambda_B = 10.0  # --lambda_B: cycle loss B -> A -> B
  config.loss.lambda_identity = 0.5  # --lambda_identity (times lambda_B / lambda_A)

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 2e-4  # --lr (generators and discriminators alike)
  config.optimizer.b1 = 0.5  # --beta1
  config.optimizer.b2 = 0.999  # fixed in cycle_gan_model.py (Adam betas=(beta1, 0.999))
  config.optimizer.eps = 1e-8  # torch.optim.Adam's default
  # --lr_policy linear: constant for --n_epochs epochs, then linearly to zero
  # over --n_epochs_decay epochs (the official train.py steps the scheduler at
  # the start of each epoch, so the last epoch trains at rate 0).
  config.optimizer.n_epochs = 100  # --n_epochs
  config.optimizer.n_epochs_decay = 100  # --n_epochs_decay
  config.optimizer.epoch_count = 1  # --epoch_count
  # Optimizer steps per epoch = max(|trainA|, |trainB|) / batch_size (the official
  # unaligned dataset's length); set it for the data set. Default: horse2zebra
  # (1067 horses, 1334 zebras).
  config.optimizer.steps_per_epoch = 1334
  # The official run: epochs epoch_count .. n_epochs + n_epochs_decay. Set it
  # with n_epochs, n_epochs_decay or steps_per_epoch.
  config.total_steps = (config.optimizer.n_epochs + config.optimizer.n_epochs_decay
                        ) * config.optimizer.steps_per_epoch
  # No gradient accumulation in CycleGAN (the family refuses other values).
  config.grad_accum_steps = 1

  # The official unaligned dataset: DATAROOT/trainA (source) and DATAROOT/trainB
  # (target); --serial_batches False takes a random B for each A. Here both are
  # shuffled on their own.
  config.data.source = "folder:datasets/horse2zebra/trainA"
  config.data.target = "folder:datasets/horse2zebra/trainB"
  config.data.batch_size = 1  # --batch_size
  # --preprocess resize_and_crop --load_size 286 --crop_size 256, flip unless
  # --no_flip; images scaled to [-1, 1]. The official loader resizes bicubic
  # (our resize op is bilinear). The image pools hold images of the last
  # resize or crop's size (256 x 256).
  config.data.preprocess = "resize(286,286)|random_crop(256,256)|flip_lr|value_range(-1,1)"
  config.cpu_compiler_options = dict(cut.CPU_COMPILER_OPTIONS)  # the same generator
  return config
