"""Known ways to damage a translation, for checking that the metrics see them.

Each degradation takes a translated image and the source's instance annotations
(`toy_streets.render_with_instances`: an instance-id map and the instance
list) and returns the image damaged in one known way. The tests of the detail
and flip metrics, and `benchmarks/metric_sensitivity.py`, apply them to the
ideal translation and check that each metric falls by as much as it should.

  image: [H, W, 3] uint8; instance_map: [H, W] uint16 (0 = none).

`nearest_colour_segmenter` is a weak but real segmenter that needs no training,
for flip checks where a trained one would cost minutes.
"""

from typing import Any

import numpy as np
from scipy import ndimage

from i2i_jax.metrics import detail

# The lit lamp colours of toy_streets' sim camera, and the state each is swapped to.
LIT_LAMPS = {"red": (230, 40, 30), "amber": (240, 190, 20), "green": (40, 220, 90)}
SWAPPED_STATES = {"red": "green", "green": "red", "amber": "green"}


def erase_small_objects(image: np.ndarray, instance_map: np.ndarray,
                        instances: list[dict[str, Any]]) -> np.ndarray:
  """Poles, lights and signs painted over with the nearest background pixel."""
  small = np.isin(instance_map, [i["mask_id"] for i in instances
                                 if i["class"] in detail.DETAIL_CLASSES])
  _, (rows, cols) = ndimage.distance_transform_edt(small, return_indices=True)
  return image[rows, cols]


def blur(image: np.ndarray, instance_map: np.ndarray,
         instances: list[dict[str, Any]], sigma: float = 3.0) -> np.ndarray:
  """The whole image blurred (Gaussian, `sigma` pixels): fine detail washed out."""
  del instance_map, instances
  blurred = ndimage.gaussian_filter(image.astype(np.float32), (sigma, sigma, 0))
  return blurred.round().astype(np.uint8)


def swap_light_states(image: np.ndarray, instance_map: np.ndarray,
                      instances: list[dict[str, Any]]) -> np.ndarray:
  """Each lit lamp recoloured as another state's (red <-> green, amber -> green)."""
  image = image.astype(np.float32)
  for instance in instances:
    if instance["class"] == "traffic light" and instance["lamp_box"]:
      y0, x0, y1, x1 = instance["lamp_box"]
      lamp = image[y0:y1, x0:x1]
      mask = instance_map[y0:y1, x0:x1] == instance["mask_id"]
      lamp[mask] *= (np.array(LIT_LAMPS[SWAPPED_STATES[instance["state"]]], np.float32)
                     / np.array(LIT_LAMPS[instance["state"]], np.float32))
  return np.clip(image, 0, 255).astype(np.uint8)


def repaint_class(images: list[np.ndarray], labels: list[np.ndarray], painted: int,
                  painter: int, seed: int = 0) -> list[np.ndarray]:
  """Every `painted` pixel takes the colour of a random `painter` pixel of the set.

  E.g. sky repainted as vegetation, the flip a discriminator asks for when the
  real domain has more trees and less sky than the simulator.
  """
  rng = np.random.default_rng(seed)
  palette = np.concatenate([image[label == painter] for image, label in zip(images, labels)])
  repainted = []
  for image, label in zip(images, labels):
    image = image.copy()
    where = label == painted
    image[where] = palette[rng.integers(len(palette), size=where.sum())]
    repainted.append(image)
  return repainted


def nearest_colour_segmenter(images: list[np.ndarray], labels: list[np.ndarray]):
  """A segmenter fitted without training: each pixel gets the class of the nearest mean colour.

  Args:
    images: [H, W, 3] uint8 images whose `labels` ([H, W] uint8, 255 = ignore)
      define each class's mean colour.
  Returns:
    segment: [B, H, W, 3] uint8 -> [B, H, W] int32 class ids.
  """
  pixels = np.concatenate([image.reshape(-1, 3) for image in images]).astype(np.float32)
  classes = np.concatenate([label.ravel() for label in labels])
  present = [c for c in np.unique(classes) if c != 255]
  means = np.stack([pixels[classes == c].mean(0) for c in present])

  def segment(batch: np.ndarray) -> np.ndarray:
    distances = ((batch[..., None, :].astype(np.float32) - means) ** 2).sum(-1)
    return np.asarray(present, np.int32)[distances.argmin(-1)]
  return segment
