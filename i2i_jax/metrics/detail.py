"""Small-detail retention: do poles, traffic lights and signs, and the lights' states, survive?

Every instance of a small class annotated in X (`instances.py`) is checked in
F(X) at the same place, three ways; the first and the last need no segmenter,
so a weak segmenter cannot hide a lost object:

contrast (segmenter-free). X and F(X) are smoothed (Gaussian, sigma 1 px,
  against sensor noise). For the instance's mask M and its ring R (pixels 2 to 3
  px outside M), d(I) = mean colour of I on M - mean colour of I on R
  ([3] RGB). The contrast ratio is

    c = d(F(X)) . (g * d(X)) / |g * d(X)|^2

  with g [3] the photometric gain of the image (per channel, the least-squares
  slope of F(X) on X over all pixels), so that a global colour cast, gamma or
  contrast change of the camera is not counted as lost detail. c is about 1
  when the object stands out from its surroundings in F(X) as in X, about 0
  when it was painted over with its surroundings, and small when it was blurred
  into them. An instance is *checked* when it covers at least MIN_AREA pixels
  and |d(X)| >= MIN_CONTRAST (an object of nearly its background's colour
  cannot be judged this way), and *retained* when c >= RETAINED_CONTRAST.

  retention/<class> = retained / checked instances of the class; "retention"
  pools the classes.

segmenter. An instance of at least MIN_AREA pixels is retained_seg when the
  segmenter's class map of F(X) holds the instance's class on at least
  RETAINED_SEG_FRACTION of its mask; retention_seg = retained_seg / instances.

light state (segmenter-free). A traffic light whose lit lamp shows at least
  MIN_LAMP_PIXELS pixels in X is checked: in F(X), a window of the lamp's size
  slides over the light's box; the window brightest on average over the light's
  pixels is the lit lamp, and the hue of the mean colour of its brighter half
  names the state (the nearest of STATE_HUES). A red light read as green is a
  state error, as is a lamp moved to another lens. light_state_accuracy =
  correctly read / checked lights.

With an ideal translation (the real-style render of the same scenes), every
number is reported for it too ("ideal/..."): the top a translation can reach
with these checks and this segmenter.
"""

import colorsys
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from i2i_jax.metrics import semantic

DETAIL_CLASSES = ("pole", "traffic light", "traffic sign")
MIN_AREA = 25  # pixels: a 5x5 patch
MIN_CONTRAST = 20.0  # |d(X)|, RGB levels
RETAINED_CONTRAST = 0.5
RETAINED_SEG_FRACTION = 0.5
MIN_LAMP_PIXELS = 9
STATE_HUES = {"red": 0.0, "amber": 45.0, "green": 140.0}  # degrees
SMOOTHING_SIGMA = 1.0
RING_GAP, RING_WIDTH = 1, 2  # the ring starts RING_GAP px outside the mask, RING_WIDTH px wide


def photometric_gain(source: np.ndarray, translated: np.ndarray) -> np.ndarray:
  """[3] least-squares slope of translated on source per channel (1 where source is flat).

  Args:
    source, translated: [H, W, 3] images of the same size.
  """
  source = source.reshape(-1, 3).astype(np.float64)
  translated = translated.reshape(-1, 3).astype(np.float64)
  source = source - source.mean(axis=0)
  translated = translated - translated.mean(axis=0)
  variance = (source * source).sum(axis=0)
  covariance = (source * translated).sum(axis=0)
  return np.where(variance > 0, covariance / np.maximum(variance, 1e-9), 1.0)


def _window(box: Sequence[int], margin: int, height: int, width: int) -> tuple[slice, slice]:
  y0, x0, y1, x1 = box
  return (slice(max(0, y0 - margin), min(height, y1 + margin)),
          slice(max(0, x0 - margin), min(width, x1 + margin)))


def contrast_ratio(source: np.ndarray, translated: np.ndarray, instance_map: np.ndarray,
                   instance: dict, gain: np.ndarray) -> tuple[float, float]:
  """(c, |d(X)|) of one instance (see the module docstring).

  Args:
    source, translated: [H, W, 3] float32, X and F(X) already smoothed.
    instance_map: [H, W] uint16.
    instance: its "mask_id" and "box".
    gain: [3] photometric gain of the image.

  Returns:
    (contrast ratio, |d(X)| in RGB levels); (nan, 0) when the instance has no
    ring inside the image.
  """
  window = _window(instance["box"], RING_GAP + RING_WIDTH + 1, *instance_map.shape)
  mask = instance_map[window] == instance["mask_id"]
  near = ndimage.binary_dilation(mask, iterations=RING_GAP)
  ring = ndimage.binary_dilation(mask, iterations=RING_GAP + RING_WIDTH) & ~near
  if not mask.any() or not ring.any():
    return float("nan"), 0.0
  source_difference = source[window][mask].mean(0) - source[window][ring].mean(0)
  translated_difference = translated[window][mask].mean(0) - translated[window][ring].mean(0)
  expected = gain * source_difference
  ratio = float(translated_difference @ expected / max(expected @ expected, 1e-9))
  return ratio, float(np.linalg.norm(source_difference))


def lamp_state(image: np.ndarray, instance_map: np.ndarray, instance: dict) -> str:
  """The state ("red", "amber", "green") a traffic light shows in `image`.

  Args:
    image: [H, W, 3] uint8.
    instance_map: [H, W] uint16.
    instance: a traffic light with "mask_id", "box" and "lamp_box" (its lit
      lamp in X, whose size sets the search window).
  """
  y0, x0, y1, x1 = instance["box"]
  lamp_y0, lamp_x0, lamp_y1, lamp_x1 = instance["lamp_box"]
  lamp_height, lamp_width = lamp_y1 - lamp_y0, lamp_x1 - lamp_x0
  light = image[y0:y1, x0:x1].astype(np.float32)
  inside = (instance_map[y0:y1, x0:x1] == instance["mask_id"]).astype(np.float32)
  brightness = light.sum(axis=-1) * inside
  # Mean brightness over the light's pixels of each lamp-sized window.
  total = ndimage.uniform_filter(brightness, (lamp_height, lamp_width), mode="constant")
  share = ndimage.uniform_filter(inside, (lamp_height, lamp_width), mode="constant")
  score = np.where(share >= 0.75 * share.max(), total / np.maximum(share, 1e-9), -1.0)
  centre_y, centre_x = np.unravel_index(np.argmax(score), score.shape)
  top, left = max(0, centre_y - lamp_height // 2), max(0, centre_x - lamp_width // 2)
  lamp = (slice(top, top + lamp_height), slice(left, left + lamp_width))
  pixels = light[lamp][inside[lamp] > 0]
  pixel_brightness = pixels.sum(axis=-1)
  colour = pixels[pixel_brightness >= np.median(pixel_brightness)].mean(axis=0) / 255.0
  hue = 360.0 * colorsys.rgb_to_hsv(*colour)[0]
  return min(STATE_HUES, key=lambda state: 180.0 - abs(abs(hue - STATE_HUES[state]) - 180.0))


def _image_records(source: np.ndarray, translated: np.ndarray, instance_map: np.ndarray,
                   instances: Sequence[dict], predicted: np.ndarray | None,
                   class_names: Sequence[str]) -> list[dict]:
  """One record per instance of a detail class: what each check found.

  A record holds "class", "checked", "contrast", "box" ([y0, x0, y1, x1] in X),
  a sign's "shape", with a segmenter "retained_seg", and for a light with a
  visible lamp "state" (in X) and "state_read" (in the translation).
  """
  gain = photometric_gain(source, translated)
  sigma = (SMOOTHING_SIGMA, SMOOTHING_SIGMA, 0)
  smooth_source = ndimage.gaussian_filter(source.astype(np.float32), sigma)
  smooth_translated = ndimage.gaussian_filter(translated.astype(np.float32), sigma)
  records = []
  for instance in instances:
    if instance["class"] not in class_names or instance["area"] < MIN_AREA:
      continue
    ratio, source_contrast = contrast_ratio(smooth_source, smooth_translated, instance_map,
                                            instance, gain)
    record = {"class": instance["class"], "checked": source_contrast >= MIN_CONTRAST,
              "contrast": ratio, "box": instance["box"]}
    if "shape" in instance:
      record["shape"] = instance["shape"]
    if predicted is not None:
      class_id = semantic.CITYSCAPES_CLASSES.index(instance["class"])
      mask = instance_map == instance["mask_id"]
      record["retained_seg"] = bool(
          (predicted[mask] == class_id).mean() >= RETAINED_SEG_FRACTION)
    if (instance["class"] == "traffic light" and instance.get("lamp_box")
        and instance.get("lamp_area", 0) >= MIN_LAMP_PIXELS):
      record["state"] = instance["state"]
      record["state_read"] = lamp_state(translated, instance_map, instance)
    records.append(record)
  return records


def _summary(records: list[dict], class_names: Sequence[str]) -> dict[str, float]:
  metrics = {}
  for suffix, chosen in [("", records)] + [
      (f"/{name}", [r for r in records if r["class"] == name]) for name in class_names]:
    checked = [r for r in chosen if r["checked"]]
    metrics[f"instances{suffix}"] = float(len(chosen))
    metrics[f"checked{suffix}"] = float(len(checked))
    if checked:
      metrics[f"retention{suffix}"] = float(np.mean(
          [r["contrast"] >= RETAINED_CONTRAST for r in checked]))
      metrics[f"contrast{suffix}"] = float(np.mean(
          [np.clip(r["contrast"], 0.0, 1.0) for r in checked]))
    segmented = [r for r in chosen if "retained_seg" in r]
    if segmented:
      metrics[f"retention_seg{suffix}"] = float(np.mean([r["retained_seg"] for r in segmented]))
  lights = [r for r in records if "state" in r]
  metrics["lights_checked"] = float(len(lights))
  if lights:
    metrics["light_state_accuracy"] = float(np.mean([r["state"] == r["state_read"]
                                                     for r in lights]))
    for state in STATE_HUES:
      for read in STATE_HUES:
        errors = sum(r["state"] == state and r["state_read"] == read for r in lights)
        if state != read and errors:
          metrics[f"light_state_errors/{state}->{read}"] = float(errors)
  return metrics


class DetailRetentionEvaluator:
  """Contrast, segmenter and light-state retention of X's small instances in F(X).

  See the module docstring for the definitions. `records` keeps what the last
  `run` found for each instance of F(X) (its image "index" in X and the fields
  of `_image_records`), for `detail_pictures.write_detail_crops`.
  """

  def __init__(self, source_images: Sequence[np.ndarray], source_instances: Sequence, *,
               class_names: Sequence[str] = DETAIL_CLASSES):
    """Args:
      source_images: X, a sequence of [H, W, 3] uint8.
      source_instances: X's instances, [index] -> (instance map [H, W] uint16,
        list of instance dicts), see `instances.py`.
      class_names: the classes checked.
    """
    self.source_images = source_images
    self.source_instances = source_instances
    self.class_names = tuple(class_names)
    self.records: list[dict] = []

  def _records(self, images, predicted) -> list[dict]:
    if len(images) != len(self.source_images):
      raise ValueError(f"{len(images)} translated images but {len(self.source_images)} "
                       "source images.")
    records = []
    for index in range(len(images)):
      image = np.asarray(images[index])
      instance_map, instances = self.source_instances[index]
      if instance_map.shape != image.shape[:2]:
        raise ValueError(f"image {index}: the instance map is {instance_map.shape[1]}x"
                         f"{instance_map.shape[0]} but the image {image.shape[1]}x"
                         f"{image.shape[0]} (WxH); translate at the size of X.")
      records += [{"index": index, **record} for record in _image_records(
          np.asarray(self.source_images[index]), image, instance_map, instances,
          None if predicted is None else np.asarray(predicted[index]), self.class_names)]
    return records

  def run(self, translated_images: Sequence[np.ndarray],
          predicted: Sequence[np.ndarray] | None = None,
          ideal_images: Sequence[np.ndarray] | None = None,
          ideal_predicted: Sequence[np.ndarray] | None = None) -> dict[str, float]:
    """The detail metrics of F(X) and, with `ideal_images`, of the ideal translation.

    Args:
      translated_images: F(X), [H, W, 3] uint8 each, the size of X.
      predicted: seg(F(X)), [H, W] class maps, or None (no retention_seg).
      ideal_images: the ideal translation of each X, or None.
      ideal_predicted: seg of the ideal translation, or None.

    Returns:
      "instances", "checked", "retention", "contrast", "retention_seg" (each
      pooled and "/<class>"), "lights_checked", "light_state_accuracy",
      "light_state_errors/<state>-><read>"; the same under "ideal/".
    """
    self.records = self._records(translated_images, predicted)
    metrics = _summary(self.records, self.class_names)
    if ideal_images is not None:
      ideal = _summary(self._records(ideal_images, ideal_predicted), self.class_names)
      metrics.update({f"ideal/{name}": value for name, value in ideal.items()})
    return metrics
