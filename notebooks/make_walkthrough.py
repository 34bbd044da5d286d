"""Writes notebooks/walkthrough.ipynb from the cells below (run after editing them).

Keeping the source as Python keeps reviews readable; the .ipynb is committed
without outputs and `tests/test_notebook.py` executes it.
"""

import pathlib

import nbformat

CELLS = [
    ("markdown", """\
# i2i_jax walkthrough: sim → real on the embedded toy world

The whole user story on `toy_streets`, the procedurally generated street scenes that ship with
i2i_jax (nothing to download):

1. look at the two domains,
2. train the demo VSAIT model (`configs/demo.py`),
3. translate a labelled "synthetic" data set into the "real" style,
4. evaluate: did the domain gap shrink, did the semantics survive (flips, small details)?

Set `I2I_WALKTHROUGH_STEPS` to train for fewer steps (the test suite runs this notebook with a handful)."""),
    ("code", """\
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from absl import flags
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from i2i_jax.configs import demo
from i2i_jax import evaluate, train
from i2i_jax.data import toy_streets

flags.FLAGS.mark_as_parsed()  # we call the library, not the absl entry points
STEPS = int(os.environ.get("I2I_WALKTHROUGH_STEPS", demo.get_config().total_steps))
EVAL_IMAGES = int(os.environ.get("I2I_WALKTHROUGH_IMAGES", 48))
ANALYSIS_STEPS = int(os.environ.get("I2I_WALKTHROUGH_ANALYSIS_STEPS", 300))
WORK = pathlib.Path(os.environ.get("I2I_WALKTHROUGH_DIR") or tempfile.mkdtemp(prefix="i2i_walkthrough_"))
print("working in", WORK)"""),
    ("markdown", """\
## 1. The two domains

The same scene rendered as "sim" (flat colours, hard edges) and as "real" (textures, lighting,
blur, sensor noise, a colour cast), with its Cityscapes train-id label map. Training never sees
such pairs: the two domains are sampled from different seeds."""),
    ("code", """\
fig, axes = plt.subplots(3, 3, figsize=(12, 5))
for column, seed in enumerate(toy_streets.split_seeds("sim", "val")[:3]):
  sim, label = toy_streets.render(seed, "sim")
  real, _ = toy_streets.render(seed, "real")
  for row, picture in enumerate([sim, real, toy_streets.colorize(label)]):
    axes[row, column].imshow(picture)
    axes[row, column].axis("off")
for row, name in enumerate(["sim", "real", "labels"]):
  axes[row, 0].set_title(name, loc="left")
plt.tight_layout()"""),
    ("markdown", """\
## 2. Train the demo model

Exactly what `python -m i2i_jax.train --config=configs/demo.py --workdir=...` runs, called as a
library. Checkpoints, TensorBoard events and sample grids land in the workdir; running it again
resumes."""),
    ("code", """\
config = demo.get_config()
config.total_steps = STEPS
config.log_images_every = max(1, min(config.log_images_every, STEPS))
config.checkpoint.every_steps = max(1, min(config.checkpoint.every_steps, STEPS))
workdir = WORK / "train"
state = train.train_and_evaluate(config, str(workdir))
samples = sorted((workdir / "samples").glob("*.png"))
plt.figure(figsize=(9, 3))
plt.imshow(Image.open(samples[-1]))
plt.title(f"source | translated | target after {int(state.step)} steps")
plt.axis("off");"""),
    ("markdown", """\
## 3. Translate a labelled data set

A "synthetic" data set with labels (here: held-out toy scenes written to folders, the layout your
own data would have), translated by the CLI users run. The output is a drop-in replacement:
`images/` and `labels/` under the same relative paths."""),
    ("code", """\
data = WORK / "data"
toy_streets.write_folder(str(data), EVAL_IMAGES, "both", "val", height=128, width=256)
translated = WORK / "translated"
subprocess.run([sys.executable, "-m", "i2i_jax.translate", f"--workdir={workdir}",
                f"--input=folder:{data / 'sim' / 'images'}", f"--labels={data / 'sim' / 'labels'}",
                f"--output={translated}"], check=True)
names = sorted(p.name for p in (translated / "images").iterdir())[:3]
fig, axes = plt.subplots(2, 3, figsize=(12, 3.5))
for column, name in enumerate(names):
  axes[0, column].imshow(Image.open(data / "sim" / "images" / name))
  axes[1, column].imshow(Image.open(translated / "images" / name))
  axes[0, column].axis("off"); axes[1, column].axis("off")
axes[0, 0].set_title("sim", loc="left"); axes[1, 0].set_title("translated", loc="left")
plt.tight_layout()"""),
    ("markdown", """\
## 4. Evaluate

Distance to the real style before and after translation, semantic consistency, semantic flips,
small-detail retention and the downstream gain of a segmenter trained on the translations. Offline
the Fréchet distance uses an Inception with *random* weights: it is labelled
`FD_inception_random_init` and is not the standard FID (install the FID weights for that)."""),
    ("code", """\
report = evaluate.evaluate(
    source=f"folder:{data / 'sim' / 'images'}", labels=str(data / "sim" / "labels"),
    translated=f"folder:{translated / 'images'}",
    target=f"folder:{data / 'real' / 'images'}", target_labels=str(data / "real" / "labels"),
    out=str(WORK / "eval"), fd_network="inception_random_init",
    segmenter_steps=ANALYSIS_STEPS, downstream_steps=ANALYSIS_STEPS,
    kid_subset_size=min(16, EVAL_IMAGES), kid_subsets=10)
print((WORK / "eval" / "report.md").read_text())"""),
    ("code", """\
from IPython.display import Image as ShowImage, display

for picture in sorted((WORK / "eval").glob("*.png")):
  print(picture.name)
  display(ShowImage(filename=str(picture)))"""),
]


def main():
  notebook = nbformat.v4.new_notebook()
  notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
  notebook.cells = [nbformat.v4.new_markdown_cell(text) if kind == "markdown"
                    else nbformat.v4.new_code_cell(text) for kind, text in CELLS]
  path = pathlib.Path(__file__).with_name("walkthrough.ipynb")
  nbformat.write(notebook, path)
  print("wrote", path)


if __name__ == "__main__":
  main()
