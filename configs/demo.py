"""The embedded demo: VSAIT on procedurally generated street scenes, on a CPU.

  python -m i2i_jax.train --config=configs/demo.py --workdir=/tmp/vsait_demo

toy_streets "sim" (flat colours) -> "real" (textures, noise, lighting, colour
cast), generated on the fly: nothing to download. A small model (16 base
channels, D = 1024) on 64x64 crops of 64x128 images, 1500 steps: ~3.3 steps/s
on 2 idle CPU cores (2026-11-27, jax 0.10.2; 2.0 without its
cpu_compiler_options), so about 8 minutes with start-up. VGG19 has
random (seeded) weights because no weights can be downloaded offline; the LSH
hypervectors of random convolutional features still describe local colour and
texture, which is what this data set's two styles differ in. Its conv biases
are random too (N(0, 0.05^2)): with torchvision's zero biases the features
scale with the image, the cosine hypervectors cannot see contrast, and the
translations drift to a contrast the real style does not have (random-Inception
FD to the real set: 6.86 before translation, 34.5 after it with zero biases,
2.80 with these; benchmarks/RESULTS.md, "Toy world"). With ImageNet weights
(--config.model.vgg_weights=imagenet) it is the paper's loss.

Progress shows as `style_distance/translated` (Frechet distance of per-image
colour and texture statistics to held-out real images) falling from the
`style_distance/source` level; the image grids (source | translated | target)
are in TensorBoard and WORKDIR/samples/. Every 500 steps (and at the last)
the "detail" evaluator translates 16 held-out toy_streets:sim_detail:val scenes
at 128x256 and logs `eval/detail/retention`, `eval/detail/contrast` and
`eval/detail/light_state_accuracy` (poles, lights and signs that survive, beside
the ideal translation's under `eval/detail/ideal/`) and draws two of the scenes,
X | F(X) | ideal at 128x256, above crops of the worst-kept objects
(samples/eval_detail_step_*.png): about 1.5 s per evaluation
plus one compile of about 2 s on the shared 2-core CPU (2026-11-26), ~2% of the
run.
"""

import ml_collections

from i2i_jax.configs import vsait


def get_config() -> ml_collections.ConfigDict:
  config = vsait.get_config()
  config.total_steps = 1500
  config.model.res_blocks = 4
  config.model.res_channels = 16
  config.model.vgg_weights = "random"
  config.model.vgg_random_bias_std = 0.05
  config.model.lsh_out_channels = 1024
  config.model.discriminator_channels = (256, 256, 1)
  config.data.source = "toy_streets:sim"
  config.data.target = "toy_streets:real"
  config.data.batch_size = 1
  config.data.preprocess = "resize(64,128)|random_crop(64,64)|flip_lr|value_range(-1,1)"
  config.data.read_threads = 2
  config.data.prefetch_buffer_size = 8
  # Convolutions to XLA:CPU's own kernels, matrix products alone to YNNPACK: the
  # default fuses chains of VGG19's deep convolutions (512 channels at 8x8 and
  # 4x4) into YNNPACK graphs that run ~8 GFLOP/s, and the step ~1.7x as long
  # (benchmarks/RESULTS.md, "The demo on CPU").
  config.cpu_compiler_options = dict(
      xla_cpu_experimental_ynn_fusion_type="LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")
  config.checkpoint.every_steps = 500
  config.checkpoint.keep = 2
  config.checkpoint.keep_every_steps = 0
  config.log_every_steps = 100
  config.log_images_every = 250
  config.style_distance_images = 32
  config.image_grid_rows = 1
  config.evals.detail = dict(
      type="detail", every_steps=500, source="toy_streets:sim_detail:val",
      ideal="toy_streets:real_mismatch:val", num_images=16, height=128, width=256)
  return config
