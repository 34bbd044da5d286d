"""The demo's VSAIT on the detail toy worlds, where flipping and lost detail can be measured.

  python -m i2i_jax.train --config=configs/toy_flipping.py:mismatch --workdir=DIR \
      --config.evals.flips.segmenter=SEGMENTER_DIR

`:mismatch` translates toy_streets:sim_detail into toy_streets:real_mismatch (more
vegetation, less sky, wider sidewalks, more parked cars than the sim world: the
semantic statistics that push a discriminator to repaint classes); `:matched`
into toy_streets:real_detail (the same statistics as sim, only the camera
differs); `:overgrown` into toy_streets:real_overgrown, the mismatch pushed to its
end (almost no sky, vegetation over a third of the image). The model, optimiser and step budget are the demo's (configs/demo.py);
the images are resized to the evaluation size, 128x256, before the 64x64 crops,
so the translator is trained at the scale it is evaluated at (and each step
costs what a demo step costs).

Every 500 steps and at the last, two evaluators score F(X) of the same 32
held-out scenes (toy_streets:sim_detail:val at 128x256, whose ideal translation
is toy_streets:real_mismatch:val, i.e. real_detail:val, in both worlds):
  detail  segmenter-free retention of poles, lights and signs, light states.
  flips   flip rates of seg(F(X)) against X's labels and their excess over the
          ideal translation's, by the segmenter at config.evals.flips.segmenter
          (a FlaxSegmenter folder, e.g. from `python -m i2i_jax.train_segmenter`).

`:mismatch,cut` (likewise `,cyclegan`, `,srunit`) trains another model family on the same
world, data, crops, evaluators and step budget: the family's official model,
loss and optimiser (configs/cut.py, cyclegan.py, srunit.py; SRUNIT's loss off for the
first quarter of the run, as officially) with the generator and
discriminator as wide as the demo's (16 channels, 4 residual blocks) and the
official linear schedule fitted into the budget (constant for the first half,
then linearly to zero), so the comparison is of methods, not of model sizes.

benchmarks/toy_world_table.py trains this config over worlds and seeds and
writes the table of issue 13 (README, "The problem, measured").
"""

import ml_collections

from i2i_jax.configs import cut
from i2i_jax.configs import cyclegan
from i2i_jax.configs import demo
from i2i_jax.configs import srunit

WORLDS = {"mismatch": "toy_streets:real_mismatch", "overgrown": "toy_streets:real_overgrown",
          "matched": "toy_streets:real_detail"}
EVAL_SOURCE = "toy_streets:sim_detail:val"
EVAL_IDEAL = "toy_streets:real_mismatch:val"
EVAL_HEIGHT, EVAL_WIDTH = 128, 256


# Families besides VSAIT (the demo's), by their official configs.
OTHER_FAMILIES = {"cut": cut.get_config, "cyclegan": cyclegan.get_config,
                  "srunit": srunit.get_config}
# The demo's generator scale, for the other families (--ngf, --ndf, resnet_<n>blocks).
DEMO_WIDTH, DEMO_BLOCKS = 16, 4
SCHEDULE_EPOCHS = 10  # the budget as 5 constant + 5 decaying "epochs" of the official schedule


def get_config(world_and_family: str = "mismatch") -> ml_collections.ConfigDict:
  world, _, family = world_and_family.partition(",")
  if world not in WORLDS:
    raise ValueError(f"configs/toy_flipping.py:{world_and_family}: unknown world {world!r}; "
                     f"expected one of {', '.join(WORLDS)}")
  if family not in ("", "vsait", *OTHER_FAMILIES):
    raise ValueError(f"configs/toy_flipping.py:{world_and_family}: unknown family {family!r}; "
                     f"expected one of vsait, {', '.join(OTHER_FAMILIES)}")
  config = demo.get_config()
  if family in OTHER_FAMILIES:
    official = OTHER_FAMILIES[family]()
    official_epochs = official.optimizer.n_epochs + official.optimizer.n_epochs_decay
    config.model, config.loss, config.optimizer = (official.model, official.loss,
                                                   official.optimizer)
    # Their own configs' CPU kernel choice (the demo's is for VGG19's deep convolutions).
    config.cpu_compiler_options = official.cpu_compiler_options
    config.model.ngf = config.model.ndf = DEMO_WIDTH
    config.model.n_blocks = DEMO_BLOCKS
    config.optimizer.n_epochs = config.optimizer.n_epochs_decay = SCHEDULE_EPOCHS // 2
    config.optimizer.steps_per_epoch = config.total_steps // SCHEDULE_EPOCHS
    if family == "srunit":  # its loss is off for the same share of the run as officially
      config.loss.inact_epochs = SCHEDULE_EPOCHS * config.loss.inact_epochs // official_epochs
  config.data.source = "toy_streets:sim_detail"
  config.data.target = WORLDS[world]
  config.data.preprocess = (f"resize({EVAL_HEIGHT},{EVAL_WIDTH})|random_crop(64,64)|flip_lr|"
                            "value_range(-1,1)")
  evaluation = dict(every_steps=500, source=EVAL_SOURCE, ideal=EVAL_IDEAL, num_images=32,
                    height=EVAL_HEIGHT, width=EVAL_WIDTH)
  config.evals.detail = dict(type="detail", **evaluation)
  config.evals.flips = dict(type="flips", segmenter="", **evaluation)
  return config
