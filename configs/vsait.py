"""The paper configuration of VSAIT (Theiss et al., ECCV 2022), value for value.

Every hyper-parameter of a run lives here; `configs/*.py` derive from this file
and change only what they must. Override any field from the command line with
`--config.path.to.field=value`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the official VSAIT configuration (configs/vsait.yaml of the reference)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 200_000
  # Dtype of activations; parameters and optimizer states stay float32.
  # bfloat16 is recommended on GPU/TPU.
  config.compute_dtype = "float32"
  # Each optimisation batch of `data.batch_size` images is processed as this
  # many sequential micro-batches (gradients averaged; G then D as in one step).
  config.grad_accum_steps = 1

  # Devices form one mesh axis "data" over all hosts; the batch is split over
  # it. Parameters are replicated; with `fsdp` the fixed LSH projections and
  # both optimizer states are split over it too (arrays of at least
  # `fsdp_min_size` elements, along their largest axis the device count divides).
  config.sharding = ml_collections.ConfigDict()
  config.sharding.fsdp = False
  config.sharding.fsdp_min_size = 2**18

  # Orbax checkpoints in WORKDIR/checkpoints (see i2i_jax/checkpoint.py).
  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 5_000
  config.checkpoint.keep = 3  # most recent checkpoints kept (0: all)
  config.checkpoint.keep_every_steps = 50_000  # also kept forever (0: none)
  config.checkpoint.async_save = True  # write off the training thread

  config.log_every_steps = 100  # scalars and the progress line
  config.log_images_every = 1_000  # image grids (IMAGE_LOGGING_FREQ)
  # Images per domain behind the logged style distance (Frechet distance of
  # colour/texture statistics, translated vs target); 0 turns it off.
  config.style_distance_images = 0
  config.image_grid_rows = 4  # examples per logged image grid
  # A jax.profiler trace (XProf/TensorBoard "profile" tab, Perfetto) of steps
  # [profile_start_step, profile_start_step + profile_steps) into WORKDIR/profile/,
  # data loading included; 0 steps = off. Start after compilation and warm-up.
  config.profile_steps = 0
  config.profile_start_step = 10
  # XLA compiler options for the train step and the translator on CPU (ignored on
  # GPU/TPU), e.g. {"xla_cpu_experimental_ynn_fusion_type": "..."}: which
  # kernel library takes which ops. None by default; configs/demo.py sets one.
  config.cpu_compiler_options = ml_collections.ConfigDict()
  # Evaluators run inside training on fixed held-out images, logged as
  # eval/<name>/<metric> (i2i_jax/evaluators.py): name -> dict(type=...,
  # every_steps=..., data and settings of the type). None by default.
  config.evals = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  # Which model family trains (i2i_jax/families/, docs/model_families.md); the
  # other model keys are the family's.
  config.model.family = "vsait"
  config.model.in_channels = 3
  config.model.out_channels = 3
  config.model.res_blocks = 9  # split R - R//2 encoder, R//2 decoder
  config.model.res_channels = 64
  # "imagenet": torchvision's VGG19 weights (downloaded, checksummed, cached);
  # "random": seeded He-normal weights (tests, offline demos); or a path to a
  # converted .npz / torchvision .pth file.
  config.model.vgg_weights = "imagenet"
  # With vgg_weights="random": std of the seeded conv biases (0: torchvision's
  # zeros, blind to contrast; see VGG19Features).
  config.model.vgg_random_bias_std = 0.0
  config.model.lsh_out_channels = 4096  # hypervector dimension D
  config.model.lsh_kernel_sizes = (16, 8, 4, 2, 1)  # one per VGG return node
  config.model.lsh_strides = (16, 8, 4, 2, 1)
  # Map network widths; empty means the official default (D, D).
  config.model.map_net_channels = ()
  config.model.discriminator_channels = (1024, 1024, 1)
  # Label-guided options (not in the paper; all off; docs/label_guided.md). Each
  # needs config.data.with_labels=True (batch["source_label"]).
  # Classes of the source label maps (Cityscapes train ids; 255 = ignore).
  config.model.label_classes = 19
  # A FlaxSegmenter folder trained on source images and labels
  # (`python -m i2i_jax.train_segmenter`), frozen: scores G(x) for
  # loss.semantic_coef and gives the target's pseudo-labels to the
  # class-conditioned discriminators. "" = none.
  config.model.semantic_segmenter = ""
  # SPADE in the decoder's up-sampling stages, modulated by the source labels.
  config.model.label_conditioned_generator = False
  # Projection discriminator on hypervectors, conditioned on the cells' classes.
  config.model.class_conditional_discriminator = False
  # The discriminator sees hypervectors bound with their cells' class hypervectors.
  config.model.label_bound_discriminator = False

  config.loss = ml_collections.ConfigDict()
  config.loss.vsa_coef = 10.0
  config.loss.gan = "hinge"
  # Weight of the semantic consistency loss CE(seg(G(x)), labels of x) with the
  # frozen config.model.semantic_segmenter (CyCADA); 0 = off.
  config.loss.semantic_coef = 0.0

  config.optimizer = ml_collections.ConfigDict()
  # torch.optim.Adam with L2 weight decay added to the gradient (not AdamW).
  config.optimizer.g = ml_collections.ConfigDict(
      dict(learning_rate=1e-4, b1=0.0, b2=0.9, eps=1e-8, weight_decay=1e-4))
  config.optimizer.d = ml_collections.ConfigDict(
      dict(learning_rate=4e-4, b1=0.0, b2=0.9, eps=1e-8, weight_decay=1e-4))
  # StepLR: multiply both learning rates by `lr_decay_factor` every
  # `lr_decay_steps` optimizer steps.
  config.optimizer.lr_decay_steps = 100_000
  config.optimizer.lr_decay_factor = 0.5

  config.data = ml_collections.ConfigDict()
  # Sources are strings (i2i_jax/data/sources.py): folder:PATH, tfds:NAME[:SPLIT],
  # toy_streets:STYLE[:SPLIT] or prepared:DIR. Decoding and resizing large frames
  # costs ~50 ms of CPU per 1914x1052 PNG, every step; when the input pipeline
  # cannot keep the accelerators busy (a few hundred images/s per 16 cores), run
  # `python -m i2i_jax.prepare --source=... --preprocess=<data.preprocess>
  # --out=DIR` once and train on prepared:DIR with the same data.preprocess: the
  # stored images already had the leading deterministic ops (resize) applied, so
  # training only crops, flips and scales (~3 ms per image), with the same
  # batches. Labels are stored with their images (leave source_labels empty).
  config.data.source = "folder:data/source/train"
  config.data.target = "folder:data/target/train"
  config.data.source_labels = ""  # "" = none; a folder matched by relative path
  config.data.with_labels = False
  # The target's labels (batch["target_label"]), for the class-conditioned
  # discriminators in place of the segmenter's pseudo-labels; off by default
  # (real data rarely has them). data.target_labels as data.source_labels.
  config.data.target_labels = ""
  config.data.with_target_labels = False
  config.data.batch_size = 1  # global batch, split over all devices
  # Ops applied to each image, in order (labels follow the geometric ones).
  config.data.preprocess = (
      "resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)")
  # Grain worker processes per host (0: the training process itself). At small
  # batches on a GPU host the input's host work competes with the step's dispatch:
  # batch 1 on one H200 ran 63.5 steps/s with 0 and 78.6 with 4 (RESULTS.md).
  config.data.worker_count = 0
  # Threads decoding and preprocessing in each process, and how many
  # preprocessed examples each domain keeps ready.
  config.data.read_threads = 8
  config.data.prefetch_buffer_size = 32
  # Batches read and copied to the devices ahead of the step, in a thread, so that
  # the host work of the next batch overlaps the running step (0: none).
  config.data.device_prefetch = 2
  config.data.tfds_data_dir = ""  # "" = TFDS's default ($TFDS_DATA_DIR)
  config.data.shuffle_seed = 0

  return config
