"""Source labels in VSAIT: class maps on the hypervector grid, the frozen segmenter, and the maths.

Synthetic source data comes with per-pixel labels for free. Four options of
config.model / config.loss use them (all off by default; docs/label_guided.md):

  semantic consistency   loss.semantic_coef * CE(seg(G(x)), y_x), seg a frozen
                         `SmallUNet` trained on source images and labels
                         (model.semantic_segmenter, `python -m i2i_jax.train_segmenter`).
  label-conditioned G    SPADE in the decoder (`generator.SpatialLabelModulation`).
  class-aware D          a projection discriminator on hypervectors conditioned
                         on each cell's class fractions
                         (`discriminator.ClassProjectionDiscriminator`).
  label-bound D input    the discriminator sees `h * l`, the hypervector bound
                         with its cell's class hypervector (below).

The class-conditioned discriminators also need the *target* cells' classes: with
no target labels in the pipeline, they are the frozen segmenter's predictions on
the target images (pseudo-labels).

Label-bound hypervectors
------------------------
Let h in R^D be a cell's hypervector (LSH of VGG features, 16x16 pixels at the
paper kernels), C in {-1, +1}^{K x D} a fixed random codebook (one bipolar code
per class, `vsa.class_codebook`), and p in [0, 1]^K the fractions of the cell's
pixels of each class (`class_fractions`: one-hot labels averaged over the cell;
ignore pixels count for no class). The cell's class hypervector is the bundle

    l = sum_c p_c C_c + (1 - sum_c p_c) 1                    (`vsa.label_hypervectors`)

and the discriminator sees b = h * l (binding, element-wise) instead of h:
bound with the source labels for both fakes (h(G(x)) and h(x) * key), with the
target pseudo-labels for the real h(y).

Recovery by unbinding. For a cell of one class c, l = C_c and C_c * C_c = 1, so
unbind(b, C_c) = h exactly, while for another class c', unbind(b, C_c') =
h * C_c * C_c' is h under a random sign pattern, with cosine ~ N(0, 1/D) to h.
For a mixed cell, l . C_c / D = p_c + O(1/sqrt(D)) (the codes and the ones
vector are quasi-orthogonal), so the class fractions are read back from l by
projection on the codebook. The discriminator's first layer is linear in b, so
it can implement these unbindings: it sees, in effect, which class each
hypervector claims to be.

Why it should stop flipping. VSAIT's per-cell discriminator only sees h; when
the target domain has more vegetation than the source has sky, repainting sky
cells as vegetation moves fake cells toward where real cells are denser, and the
VSA loss cannot forbid it because the learned key can map a sky hypervector onto
a vegetation one. With bound inputs, a repainted cell is b = h_veg * C_sky:
real cells bound with C_sky carry sky hypervectors, and h_veg * C_sky equals
h' * C_c only for h' = h_veg * C_sky * C_c, a random-sign image of h_veg that no
real cell has. So the repainted cell sits where no real cell lies and the
discriminator can reject it; the only way to look real is to look like a *real
cell of the same class*. The class proportions themselves (more C_veg-bound
cells in the target) are fixed by the labels and cannot be changed by G, so
they exert no pressure on it. The projection discriminator reaches the same end
with a learned class embedding instead of a fixed code.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.metrics import segmenter as segmenter_lib

IGNORE_LABEL = segmenter_lib.IGNORE_LABEL


def class_fractions(labels: jax.Array, num_classes: int, grid: tuple[int, int]) -> jax.Array:
  """Fraction of each class's pixels in each cell of a coarser grid.

  Args:
    labels: [B, H, W] integer class ids; IGNORE_LABEL and ids >= K count for no class.
    num_classes: K.
    grid: (h, w) with H and W multiples of h and w (the hypervector grid).
  Returns:
    [B, h, w, K] float32; each cell sums to the fraction of its labelled pixels.
  """
  batch, height, width = labels.shape
  rows, cols = grid
  if height % rows or width % cols:
    raise ValueError(f"label maps of {height}x{width} do not split into the {rows}x{cols} "
                     "hypervector grid")
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  cells = one_hot.reshape(batch, rows, height // rows, cols, width // cols, num_classes)
  return jnp.mean(cells, axis=(2, 4))


def segmenter_images(images: jax.Array) -> jax.Array:
  """Images in [-1, 1] -> [0, 255] float32, what `SmallUNet` takes (differentiable)."""
  return (images.astype(jnp.float32) + 1.0) * 127.5


def pseudo_labels(segmenter: segmenter_lib.SmallUNet, variables: dict[str, Any],
                  images: jax.Array) -> jax.Array:
  """The frozen segmenter's classes for images [B, H, W, 3] in [-1, 1]: [B, H, W] int32."""
  logits = segmenter.apply(variables, segmenter_images(images))
  return jax.lax.stop_gradient(jnp.argmax(logits, axis=-1).astype(jnp.int32))


def restore_segmenter_params(path: str, num_classes: int,
                             features: tuple[int, ...]) -> dict[str, Any]:
  """The parameters of the FlaxSegmenter folder named by config.model.semantic_segmenter.

  Raises:
    ValueError: naming the key, when the folder is not a segmenter or its
      classes or widths differ from config.model.label_classes and `features`.
  """
  try:
    restored = segmenter_lib.FlaxSegmenter.restore(path)
  except (FileNotFoundError, ValueError) as e:
    raise ValueError(f"config.model.semantic_segmenter={path!r}: {e}") from e
  found = (restored.model.num_classes, tuple(restored.model.features))
  if found != (num_classes, tuple(features)):
    raise ValueError(
        f"config.model.semantic_segmenter={path!r} has {found[0]} classes and widths "
        f"{found[1]}; expected config.model.label_classes={num_classes} and widths "
        f"{tuple(features)}")
  return jax.tree.map(np.asarray, restored.params)


@dataclasses.dataclass(frozen=True)
class PseudoLabelledGenerator:
  """A label-conditioned generator, fed the frozen segmenter's classes of its input
  unless it is given the input's own class map.

  What translates with such a generator outside training (`checkpoint.load_generator`,
  `python -m i2i_jax.translate`): `apply(variables, images)` like a plain
  generator, with variables {"generator": ..., "segmenter": ...}. The segmenter
  was trained on the source domain, whose images are what is translated. A
  simulator's own labels, where the source has them, are what the generator
  was trained with: `apply(variables, images, labels)`.
  """
  generator: nn.Module
  segmenter: segmenter_lib.SmallUNet
  takes_labels = True  # translator.takes_labels

  def apply(self, variables: dict[str, Any], images: jax.Array,
            labels: jax.Array | None = None) -> jax.Array:
    """images [B, H, W, 3] in [-1, 1], labels [B, H, W] int or None -> G(images, labels or
    seg(images)), [B, H, W, 3]."""
    if labels is None:
      labels = pseudo_labels(self.segmenter, variables["segmenter"], images)
    return self.generator.apply(variables["generator"], images, labels)
