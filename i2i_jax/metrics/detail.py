"""Small-detail retention: do thin, safety-critical objects survive translation?"""

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
import tqdm

from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.metrics import semantic

# Cityscapes train ids of the thin / small classes.
DETAIL_CLASSES = {5: "pole", 6: "traffic light", 7: "traffic sign"}
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def laplacian_energy(image: np.ndarray) -> np.ndarray:
  """Squared Laplacian of the luminance: [H, W, 3] uint8 -> [H, W] float32."""
  gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
  return ndimage.convolve(gray, _LAPLACIAN, mode="nearest") ** 2


class DetailRetentionEvaluator:
  """Per-instance retention and high-frequency energy of thin classes.

  Instances are the connected components (8-connectivity) of each detail class
  in X's reference labels (labels when given, else seg(X)). An instance is
  retained when seg(F(X)) predicts its class on at least `retained_fraction` of
  its pixels. The high-frequency ratio is the mean squared Laplacian inside the
  class mask in F(X) over the same in X (1 = detail kept, < 1 = blurred away).
  """

  def __init__(self, segment_fn: semantic.SegmentFn, source_images: Sequence[np.ndarray],
               source_labels: Sequence[np.ndarray] | None = None, *,
               detail_classes: dict[int, str] | None = None,
               retained_fraction: float = 0.5, min_instance_pixels: int = 4,
               progress: bool = False):
    """Args:
      segment_fn: [B, H, W, 3] uint8 -> [B, H, W] int32.
      source_images: X, a sequence of [H, W, 3] uint8.
      source_labels: X's [H, W] uint8 label maps, or None to use seg(X).
      detail_classes: class id -> name; default pole, traffic light, traffic sign.
      retained_fraction: fraction of an instance's pixels that must keep its class.
      min_instance_pixels: smaller components are label noise and not counted.
      progress: a tqdm bar over the images (ETA).
    """
    self.segment_fn = segment_fn
    self.source_images = source_images
    self.source_labels = source_labels
    self.detail_classes = dict(detail_classes or DETAIL_CLASSES)
    self.retained_fraction = retained_fraction
    self.min_instance_pixels = min_instance_pixels
    self.progress = progress

  def run(self, translated_images: Sequence[np.ndarray]) -> dict[str, float]:
    """Returns, per detail class and overall ("<key>" and "<key>/<class>"):

    "instances" (count), "retention" (retained / instances; absent without
    instances) and "hf_energy_ratio" (F(X) / X inside the class masks).
    """
    if len(translated_images) != len(self.source_images):
      raise ValueError(f"{len(translated_images)} translated images but "
                       f"{len(self.source_images)} source images.")
    class_ids = list(self.detail_classes)
    instances = dict.fromkeys(class_ids, 0)
    retained = dict.fromkeys(class_ids, 0)
    energy_translated = dict.fromkeys(class_ids, 0.0)
    energy_source = dict.fromkeys(class_ids, 0.0)
    structure = np.ones((3, 3), bool)
    with tqdm.trange(len(translated_images), desc="detail: segmenting", unit="img",
                     disable=not self.progress, dynamic_ncols=True, leave=False) as bar:
      for index in bar:
        translated = np.asarray(translated_images[index])
        height, width = translated.shape[:2]
        source = segmenter_lib.resize_image(np.asarray(self.source_images[index]), height, width)
        if self.source_labels is not None:
          reference = segmenter_lib.resize_labels(np.asarray(self.source_labels[index]), height,
                                                  width)
        else:
          reference = self.segment_fn(source[None])[0]
        predicted = self.segment_fn(translated[None])[0]
        translated_energy = laplacian_energy(translated)
        source_energy = laplacian_energy(source)
        for class_id in class_ids:
          mask = reference == class_id
          if not mask.any():
            continue
          energy_translated[class_id] += float(translated_energy[mask].sum())
          energy_source[class_id] += float(source_energy[mask].sum())
          components, count = ndimage.label(mask, structure=structure)
          sizes = np.bincount(components.ravel(), minlength=count + 1)
          kept = np.bincount(components.ravel(), weights=(predicted == class_id).ravel(),
                             minlength=count + 1)
          large = sizes[1:] >= self.min_instance_pixels
          instances[class_id] += int(large.sum())
          retained[class_id] += int(
              (large & (kept[1:] >= self.retained_fraction * sizes[1:])).sum())

    metrics = {"instances": float(sum(instances.values()))}
    if metrics["instances"]:
      metrics["retention"] = sum(retained.values()) / metrics["instances"]
    if sum(energy_source.values()) > 0:
      metrics["hf_energy_ratio"] = sum(energy_translated.values()) / sum(energy_source.values())
    for class_id, name in self.detail_classes.items():
      metrics[f"instances/{name}"] = float(instances[class_id])
      if instances[class_id]:
        metrics[f"retention/{name}"] = retained[class_id] / instances[class_id]
      if energy_source[class_id] > 0:
        metrics[f"hf_energy_ratio/{name}"] = energy_translated[class_id] / energy_source[class_id]
    return metrics
