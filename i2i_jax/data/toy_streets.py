"""toy_streets: procedurally generated street scenes in two styles.

The embedded default data set: no download, deterministic from a seed, fast
enough (a few ms per 256x512 image) to render on the fly inside the input
pipeline. Every image comes with a semantic label map in Cityscapes train-id
classes, so a segmenter can measure how well a translator closes the gap.

  * "sim": flat colours, hard edges, no noise (a simulator's frames).
  * "real": textures (asphalt grain, windows, foliage), a lighting gradient and
    vignette, car shadows, lens blur, sensor noise and a colour cast (a camera).

The same seed gives the same scene (layout, object colours, label map) in both
styles; training stays unpaired by drawing the two domains from different
seeds (see `split_seeds`).

Write a folder tree in the layout expected for your own data with

  python -m i2i_jax.data.toy_streets --out DIR --n 1000 --style both

which writes DIR/<style>/images/00000.png and DIR/<style>/labels/00000.png.
"""

import argparse
import io
import os
import sys

import numpy as np
from PIL import Image
from PIL import ImageFilter

# Cityscapes train ids (index = train id); 255 is "ignore".
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle")
IGNORE_LABEL = 255
# The official Cityscapes colour of each train id, for visualising label maps.
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32)], dtype=np.uint8)

ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, CAR = (
    0, 1, 2, 5, 6, 7, 8, 9, 10, 13)
STYLES = ("sim", "real")

# Seeds of each split. Train seeds differ per style (unpaired domains); val
# seeds are shared, so val "sim" and "real" images are the same scenes.
_SPLITS = {
    "train": {"sim": 0, "real": 1_000_000, "size": 10_000},
    "val": {"sim": 2_000_000, "real": 2_000_000, "size": 500},
}


def split_seeds(style: str, split: str = "train") -> range:
  """Returns the seeds of toy_streets:<style>:<split> ("train" or "val")."""
  if style not in STYLES:
    raise ValueError(f"toy_streets: unknown style {style!r}; use one of {STYLES}")
  if split not in _SPLITS:
    raise ValueError(
        f"toy_streets: unknown split {split!r}; use one of {tuple(_SPLITS)}")
  first = _SPLITS[split][style]
  return range(first, first + _SPLITS[split]["size"])


def colorize(label: np.ndarray) -> np.ndarray:
  """Colours a label map with the Cityscapes palette.

  Args:
    label: [H, W] uint8 train ids, 255 = ignore.

  Returns:
    [H, W, 3] uint8; ignored pixels are black.
  """
  palette = np.zeros((256, 3), np.uint8)
  palette[:len(PALETTE)] = PALETTE
  return palette[label]


class _Canvas:
  """A label map and a per-pixel base colour, painted back to front."""

  def __init__(self, height: int, width: int):
    self.label = np.full((height, width), SKY, np.uint8)
    self.color = np.zeros((height, width, 3), np.float32)
    self.ys = np.arange(height, dtype=np.float32)[:, None]
    self.xs = np.arange(width, dtype=np.float32)[None, :]

  def paint(self, mask, label, color):
    self.label[mask] = label
    self.color[mask] = color

  def box(self, y0, y1, x0, x1, label, color):
    h, w = self.label.shape
    y0, y1 = max(int(round(y0)), 0), min(int(round(y1)), h)
    x0, x1 = max(int(round(x0)), 0), min(int(round(x1)), w)
    if y1 > y0 and x1 > x0:
      self.label[y0:y1, x0:x1] = label
      self.color[y0:y1, x0:x1] = color

  def ellipse(self, cy, cx, ry, rx, label, color):
    h, w = self.label.shape
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, h)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, w)
    if y1 <= y0 or x1 <= x0:
      return
    inside = (((self.ys[y0:y1] - cy) / ry) ** 2
              + ((self.xs[:, x0:x1] - cx) / rx) ** 2) <= 1.0
    self.label[y0:y1, x0:x1][inside] = label
    self.color[y0:y1, x0:x1][inside] = color


def _jitter(rng, rgb, amount):
  return np.clip(np.asarray(rgb, np.float32)
                 + rng.uniform(-amount, amount, 3), 0, 255)


def _layout(seed: int, height: int, width: int):
  """Paints one scene: returns (label [H,W] uint8, colour [H,W,3] float32, cars).

  `cars` lists (y_bottom, x0, x1, height) boxes for the real style's shadows.
  """
  rng = np.random.default_rng([seed, 0])
  canvas = _Canvas(height, width)
  ys, xs = canvas.ys, canvas.xs
  horizon = height * rng.uniform(0.38, 0.5)
  vanish_x = width * rng.uniform(0.35, 0.65)
  # Perspective: a ground point at row y is at "depth" (y - horizon) / (H - horizon).
  depth = np.clip((ys - horizon) / (height - horizon), 0.0, None)
  road_half = width * rng.uniform(0.45, 0.75) * depth + 2.0
  walk_half = road_half * rng.uniform(1.35, 1.6)

  sky_top, sky_bottom = _jitter(rng, (90, 140, 200), 15), _jitter(rng, (190, 210, 230), 15)
  t = np.clip(ys / max(horizon, 1.0), 0, 1)[..., None]
  canvas.color[:] = sky_top * (1 - t) + sky_bottom * t

  # Buildings: a row of facades on each side, from their roofline to the
  # ground; the street canyon around the vanishing point stays open.
  canyon = width * rng.uniform(0.05, 0.12)
  for side in (-1, 1):
    x = vanish_x + side * canyon
    while (x < width) if side > 0 else (x > 0):
      facade = width * rng.uniform(0.08, 0.22)
      x_next = x + side * facade
      top = horizon * rng.uniform(0.05, 0.75)
      x0, x1 = sorted((x, x_next))
      canvas.box(top, height, x0, x1, BUILDING,
                 _jitter(rng, rng.choice([(120, 110, 100), (150, 140, 125),
                                          (95, 95, 105), (170, 120, 95)]), 12))
      x = x_next
  # Ground below the horizon: terrain verge, sidewalks, road.
  ground = ys >= horizon
  verge = ground & (np.abs(xs - vanish_x) < walk_half * rng.uniform(1.05, 1.2))
  canvas.paint(verge, TERRAIN, _jitter(rng, (120, 150, 80), 10))
  canvas.paint(ground & (np.abs(xs - vanish_x) < walk_half), SIDEWALK,
               _jitter(rng, (175, 165, 170), 10))
  canvas.paint(ground & (np.abs(xs - vanish_x) < road_half), ROAD,
               _jitter(rng, (85, 80, 88), 8))

  def ground_x(y, offset):
    """Column at row y of a point `offset` road half-widths off the centre."""
    d = max((y - horizon) / (height - horizon), 0.0)
    return vanish_x + offset * (width * 0.6 * d + 2.0)

  # Trees and poles with signs/lights stand on the sidewalks, far to near.
  props = sorted(rng.uniform(horizon + 0.08 * height, height * 1.05,
                             rng.integers(3, 8)))
  for foot in props:
    d = (foot - horizon) / (height - horizon)
    side = rng.choice((-1, 1))
    x = ground_x(foot, side * rng.uniform(1.2, 1.45))
    scale = height * d
    if rng.random() < 0.5:
      trunk = max(1.5, 0.04 * scale)
      canvas.box(foot - 0.9 * scale, foot, x - trunk / 2, x + trunk / 2,
                 VEGETATION, _jitter(rng, (90, 70, 45), 10))
      canvas.ellipse(foot - 1.1 * scale, x, 0.45 * scale, 0.35 * scale,
                     VEGETATION, _jitter(rng, (60, 120, 50), 15))
    else:
      pole_w = max(1.5, 0.03 * scale)
      top = foot - 1.2 * scale
      canvas.box(top, foot, x - pole_w / 2, x + pole_w / 2, POLE,
                 _jitter(rng, (130, 130, 135), 10))
      if rng.random() < 0.5:
        size = 0.12 * scale
        canvas.box(top, top + size, x - size / 2, x + size / 2, SIGN,
                   _jitter(rng, rng.choice([(200, 30, 30), (30, 70, 180),
                                            (230, 200, 30)]), 15))
      else:
        box_w = 0.08 * scale
        canvas.box(top, top + 2.6 * box_w, x - box_w / 2, x + box_w / 2, LIGHT,
                   _jitter(rng, (40, 40, 35), 8))
        lamp = rng.integers(3)
        canvas.ellipse(top + (0.45 + 0.85 * lamp) * box_w, x, 0.3 * box_w,
                       0.3 * box_w, LIGHT,
                       ((230, 40, 30), (240, 190, 20), (40, 220, 90))[lamp])

  # Cars on the road, far to near so that near ones occlude far ones.
  cars = []
  for foot in sorted(rng.uniform(horizon + 0.05 * height, height * 1.1,
                                 rng.integers(1, 6))):
    d = (foot - horizon) / (height - horizon)
    x = ground_x(foot, rng.uniform(-0.75, 0.75))
    car_w, car_h = width * 0.45 * d + 4, height * 0.3 * d + 3
    body = _jitter(rng, rng.choice([(180, 30, 30), (30, 40, 130), (200, 200, 205),
                                    (40, 40, 45), (60, 110, 60), (210, 170, 40)]), 20)
    canvas.box(foot - car_h * 0.65, foot - car_h * 0.1, x - car_w / 2, x + car_w / 2,
               CAR, body)
    canvas.box(foot - car_h, foot - car_h * 0.6, x - car_w * 0.35, x + car_w * 0.35,
               CAR, body * 0.9)
    canvas.box(foot - car_h * 0.93, foot - car_h * 0.65, x - car_w * 0.3,
               x + car_w * 0.3, CAR, (60, 75, 90))  # windows are car too
    for wheel in (-0.32, 0.32):
      canvas.ellipse(foot - car_h * 0.12, x + wheel * car_w, car_h * 0.13,
                     car_w * 0.08, CAR, (20, 20, 20))
    cars.append((foot, x - car_w / 2, x + car_w / 2, car_h))
  return canvas.label, canvas.color, cars


def _smooth_noise(rng, height, width, cells_y, cells_x):
  """[H, W] float32 noise in about [-1, 1], smooth over H/cells_y pixels."""
  coarse = rng.standard_normal((cells_y, cells_x)).astype(np.float32)
  return np.asarray(Image.fromarray(coarse, "F").resize((width, height),
                                                        Image.BICUBIC))


def _render_real(seed, label, color, cars):
  """The camera style: textures, light, shadows, blur, noise, colour cast."""
  rng = np.random.default_rng([seed, 1])
  height, width = label.shape
  ys = np.arange(height, dtype=np.float32)[:, None]
  xs = np.arange(width, dtype=np.float32)[None, :]
  image = color.copy()

  # Textures: fine grain everywhere, blotches on foliage/terrain, windows on
  # facades, darker lane-free asphalt patches.
  grain = rng.standard_normal((height, width)).astype(np.float32)
  blotch = _smooth_noise(rng, height, width, height // 16, width // 16)
  amount = np.select(
      [label == ROAD, label == SIDEWALK, label == VEGETATION, label == TERRAIN,
       label == BUILDING],
      [10.0, 7.0, 6.0, 6.0, 5.0], 2.0)
  image += (grain * amount)[..., None]
  leafy = (label == VEGETATION) | (label == TERRAIN)
  image += (blotch * np.where(leafy, 22.0, 8.0))[..., None]
  period_y, period_x = rng.uniform(9, 16), rng.uniform(8, 14)
  windows = ((ys % period_y) < 0.5 * period_y) & ((xs % period_x) < 0.55 * period_x)
  image[(label == BUILDING) & windows] *= 0.6
  # Light: a sun from one side, brighter sky near the horizon, a vignette.
  sun = rng.uniform(-1, 1)
  light = 1.0 + 0.25 * sun * (xs / width - 0.5) * 2 - 0.15 * (ys / height)
  light = light * (1.0 - 0.35 * (((xs / width - 0.5) * 1.2) ** 2
                                 + ((ys / height - 0.5) * 1.2) ** 2))
  image *= light[..., None]
  for foot, x0, x1, car_h in cars:
    y0, y1 = int(foot - 0.12 * car_h), int(min(foot + 0.08 * car_h, height))
    x0, x1 = int(max(x0 + sun * 0.2 * car_h, 0)), int(min(x1 + sun * 0.2 * car_h, width))
    if y1 > y0 and x1 > x0:
      shade = image[y0:y1, x0:x1]
      road = label[y0:y1, x0:x1] == ROAD
      shade[road] *= 0.55
  # Optics and sensor: blur, colour cast, gamma, noise.
  cast = np.array([1.0 + rng.uniform(0.02, 0.12), 1.0 + rng.uniform(-0.03, 0.03),
                   1.0 - rng.uniform(0.05, 0.18)], np.float32)
  if rng.random() < 0.5:
    cast = cast[::-1]  # a cool cast instead of a warm one
  image = np.clip(image * cast, 0, 255).astype(np.uint8)
  image = np.asarray(Image.fromarray(image).filter(
      ImageFilter.GaussianBlur(rng.uniform(0.8, 1.4))), np.float32)
  image = 255.0 * (image / 255.0) ** rng.uniform(0.85, 1.0)
  image += rng.normal(0.0, rng.uniform(3.0, 6.0), image.shape).astype(np.float32)
  return np.clip(image, 0, 255).astype(np.uint8)


def render(seed: int, style: str, height: int = 256, width: int = 512):
  """Renders one street scene.

  Args:
    seed: scene seed; the same seed gives the same scene and label in both styles.
    style: "sim" (flat colours, hard edges, no noise) or "real" (textured, lit,
      blurred, noisy, colour cast).
    height: image height in pixels.
    width: image width in pixels.

  Returns:
    (image [height, width, 3] uint8, label [height, width] uint8 Cityscapes
    train ids, 255 = ignore).
  """
  if style not in STYLES:
    raise ValueError(f"toy_streets.render: unknown style {style!r}; use one of {STYLES}")
  label, color, cars = _layout(seed, height, width)
  if style == "sim":
    image = np.clip(color, 0, 255).astype(np.uint8)
  else:
    image = _render_real(seed, label, color, cars)
  return image, label


def _write_png(array: np.ndarray, path: str):
  """Writes a PNG atomically: a half-written file never has the final name.

  A file already at `path` is kept when it holds exactly these bytes (a rerun of
  the same command) and refused otherwise: the writer never replaces a file it
  did not write.

  Raises:
    FileExistsError: naming the file that differs.
  """
  encoded = io.BytesIO()
  Image.fromarray(array).save(encoded, format="PNG")
  if os.path.lexists(path):
    with open(path, "rb") as existing:
      if existing.read() == encoded.getvalue():
        return
    raise FileExistsError(f"toy_streets: {path} exists and differs from the scene it would "
                          "write; choose an empty --out (existing files are never replaced)")
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(encoded.getvalue())
  os.replace(tmp, path)


def write_folder(out: str, n: int, style: str = "both", split: str = "train",
                 height: int = 256, width: int = 512):
  """Writes n scenes per style to out/<style>/{images,labels}/xxxxx.png."""
  styles = STYLES if style == "both" else (style,)
  for s in styles:
    seeds = split_seeds(s, split)
    if n > len(seeds):
      raise ValueError(f"toy_streets: --n {n} exceeds the {len(seeds)} scenes of {split!r}")
    for sub in ("images", "labels"):
      os.makedirs(os.path.join(out, s, sub), exist_ok=True)
    for i in range(n):
      image, label = render(seeds[i], s, height, width)
      _write_png(image, os.path.join(out, s, "images", f"{i:05d}.png"))
      _write_png(label, os.path.join(out, s, "labels", f"{i:05d}.png"))


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m i2i_jax.data.toy_streets", description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--n", type=int, default=1000, help="images per style")
  parser.add_argument("--style", default="both", choices=(*STYLES, "both"))
  parser.add_argument("--split", default="train", choices=tuple(_SPLITS))
  parser.add_argument("--height", type=int, default=256)
  parser.add_argument("--width", type=int, default=512)
  args = parser.parse_args(argv)
  try:
    write_folder(args.out, args.n, args.style, args.split, args.height, args.width)
  except (OSError, ValueError) as e:
    parser.error(str(e))  # one line, exit 2
  print(f"wrote {args.n} scenes per style to {args.out}", file=sys.stderr)


if __name__ == "__main__":
  main()
