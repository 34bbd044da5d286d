"""toy_streets: procedurally generated street scenes in the styles of two cameras.

The embedded default data set: no download, deterministic from a seed, fast
enough (a few ms per 256x512 image) to render on the fly inside the input
pipeline. Every image comes with a semantic label map in Cityscapes train-id
classes, so a segmenter can measure how well a translator closes the gap, and
with per-object instance annotations (`render_with_instances`).

A style is a camera and a world. The cameras:

  * sim: flat colours, hard edges, no noise (a simulator's frames).
  * real: textures (asphalt grain, windows, foliage), a lighting gradient and
    vignette, car shadows, lens blur, sensor noise and a colour cast (a camera).

The worlds (`World`, what is where and how often):

  * original: the scenes of "sim" and "real", kept bit-identical since the demo.
  * detail: the same streets with traffic lights whose lit lamp shows their
    state (red, amber, green) and signs with a shape and a colour, large enough
    to check at 256x512.
  * mismatch: the detail world laid out the way Cityscapes differs from GTA5:
    more vegetation (front gardens, larger trees), less sky (taller buildings),
    more and parked cars, wider sidewalks.
  * overgrown: the mismatch pushed to its end (almost no sky, vegetation over a
    third of the image), which makes vanilla VSAIT flip at a demo's budget.

  style          camera  train world  val world
  sim            sim     original     original
  real           real    original     original
  sim_detail     sim     detail       detail
  real_detail    real    detail       detail
  real_mismatch  real    mismatch     detail
  real_overgrown real    overgrown    detail

The same seed gives the same scene (layout, object colours, label map) in every
style of the same world; training stays unpaired by drawing the domains from
different seeds (see `split_seeds`). The val seeds are shared by all styles and
always drawn from the style's val world, so sim_detail:val and
real_mismatch:val are the same scenes (real_mismatch:val is real_detail:val):
every evaluation image has an ideal translation, while the train split of
real_mismatch has other semantic statistics than sim_detail, as real data
does. docs/toy_world.md has the class-frequency table and the sizes of the
small objects.

Write a folder tree in the layout expected for your own data with

  python -m i2i_jax.data.toy_streets --out DIR --n 1000 --style both

which writes DIR/<style>/images/00000.png, DIR/<style>/labels/00000.png and
DIR/<style>/instances/00000.{json,png}, and prints the class frequencies of what
it wrote; `--stats` prints the frequencies of every style without writing.
"""

from collections.abc import Sequence
import dataclasses
import io
import json
import os
import sys

from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageFilter
from scipy import ndimage

from i2i_jax import cli
from i2i_jax import storage

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

LIGHT_STATES = ("red", "amber", "green")
SIGN_SHAPES = ("circle", "triangle", "diamond", "square")
SIGN_COLOR_NAMES = ("red", "blue", "yellow")
_SIGN_COLORS = ((200, 30, 30), (30, 70, 180), (230, 200, 30))
# A lit lamp, and the same lens dark (top to bottom: red, amber, green).
_LAMP_LIT = ((230, 40, 30), (240, 190, 20), (40, 220, 90))
_LAMP_DARK = ((70, 32, 30), (70, 60, 28), (28, 60, 40))


@dataclasses.dataclass(frozen=True)
class World:
  """What a family of scenes contains: layout statistics and object detail.

  Ranges are (low, high) of a uniform draw; counts are [low, high). The
  defaults are the original world of "sim" and "real": a field at its default
  value draws exactly what the original code drew, in the same order, which
  keeps those styles bit-identical.
  """
  building_top: tuple[float, float] = (0.05, 0.75)  # roofline row / horizon row
  canyon: tuple[float, float] = (0.05, 0.12)  # open street gap / image width
  sidewalk: tuple[float, float] = (1.35, 1.6)  # sidewalk / road half-width
  front_gardens: float = 0.0  # chance of vegetation in front of a facade
  props: tuple[int, int] = (3, 8)  # trees and poles per scene
  prop_feet: tuple[float, float] = (0.08, 1.05)  # rows: horizon + a*H .. b*H
  prop_offset: tuple[float, float] = (1.2, 1.45)  # off the centre, road units
  tree_share: float = 0.5  # chance that a prop is a tree
  tree_size: float = 1.0  # crown size multiplier
  cars: tuple[int, int] = (1, 6)  # cars per scene
  car_offset: float = 0.75  # cars stand up to this off the centre, road units
  # Poles carry lights with a lamp state and signs with a shape (`_signal`)
  # instead of the original 1-2 px boxes.
  detail: bool = False


ORIGINAL = World()
# Poles stand at the kerb and no nearer than 0.85 H, where their heads stay
# inside the image; a few more props, so that a scene has ~3 lights and signs.
DETAIL = World(props=(4, 10), prop_feet=(0.05, 0.85), prop_offset=(1.05, 1.3),
               tree_share=0.4, detail=True)
# Other semantic statistics, as Cityscapes has next to GTA5: taller buildings
# and a narrower canyon (less sky), front gardens and larger trees (more
# vegetation), more cars, parked ones half on the kerb, wider sidewalks.
MISMATCH = dataclasses.replace(
    DETAIL, building_top=(0.0, 0.4), canyon=(0.03, 0.08), sidewalk=(1.9, 2.3),
    front_gardens=0.25, props=(5, 10), tree_share=0.5, tree_size=1.2,
    cars=(2, 8), car_offset=0.95)
# The mismatch pushed to its end, for provoking flipping at a small budget: the
# buildings reach the top of the image and the canyon nearly closes (almost no
# sky), hedges in front of most facades and large trees on both kerbs.
OVERGROWN = dataclasses.replace(
    MISMATCH, building_top=(0.0, 0.05), canyon=(0.01, 0.03), front_gardens=0.8,
    props=(6, 11), tree_share=0.8, tree_size=1.6)


@dataclasses.dataclass(frozen=True)
class _Style:
  camera: str  # "sim" or "real"
  train_world: World  # the world of every seed but the val seeds
  val_world: World
  first_train_seed: int


_STYLES = {
    "sim": _Style("sim", ORIGINAL, ORIGINAL, 0),
    "real": _Style("real", ORIGINAL, ORIGINAL, 1_000_000),
    "sim_detail": _Style("sim", DETAIL, DETAIL, 0),
    "real_detail": _Style("real", DETAIL, DETAIL, 1_000_000),
    "real_mismatch": _Style("real", MISMATCH, DETAIL, 3_000_000),
    "real_overgrown": _Style("real", OVERGROWN, DETAIL, 4_000_000),
}
STYLES = tuple(_STYLES)
# --style groups of the CLI: the demo's pair, and the worlds of issue 13.
STYLE_GROUPS = {"both": ("sim", "real"),
                "detail": ("sim_detail", "real_detail", "real_mismatch")}
# Train seeds differ per style (unpaired domains); val seeds are shared by all
# styles, so val images of one world are the same scenes in every camera.
_TRAIN_SIZE = 10_000
_FIRST_VAL_SEED, _VAL_SIZE = 2_000_000, 500
SPLITS = ("train", "val")


def _style(style: str) -> _Style:
  if style not in _STYLES:
    raise ValueError(f"toy_streets: unknown style {style!r}; use one of {STYLES}")
  return _STYLES[style]


def split_seeds(style: str, split: str = "train") -> range:
  """Returns the seeds of toy_streets:<style>:<split> ("train" or "val")."""
  first_train_seed = _style(style).first_train_seed
  if split == "train":
    return range(first_train_seed, first_train_seed + _TRAIN_SIZE)
  if split == "val":
    return range(_FIRST_VAL_SEED, _FIRST_VAL_SEED + _VAL_SIZE)
  raise ValueError(f"toy_streets: unknown split {split!r}; use one of {SPLITS}")


def world_of(seed: int, style: str) -> World:
  """The world a scene is drawn from: the val world for val seeds."""
  spec = _style(style)
  if _FIRST_VAL_SEED <= seed < _FIRST_VAL_SEED + _VAL_SIZE:
    return spec.val_world
  return spec.train_world


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
  """The label, base-colour and (optional) instance maps of a scene, painted back to front.

  Instances are numbered from 1 in the order they are started
  (`new_instance`); every paint call writes its `instance` (0 = none) where it
  writes the label, so a nearer object hides a farther one in both maps. An
  object is painted by consecutive calls; when a call for another instance (or
  none) follows, the object's record gets its "drawn_area", the pixels it
  covered before anything nearer hid part of it.
  """

  def __init__(self, height: int, width: int, track_instances: bool):
    self.label = np.full((height, width), SKY, np.uint8)
    self.color = np.zeros((height, width, 3), np.float32)
    self.instance = np.zeros((height, width), np.uint16) if track_instances else None
    self.instances = []  # one dict per instance id - 1
    self._painting = 0  # the instance of the last paint call
    self.ys = np.arange(height, dtype=np.float32)[:, None]
    self.xs = np.arange(width, dtype=np.float32)[None, :]

  def new_instance(self, class_name: str, **attributes) -> int:
    self.instances.append({"class": class_name, **attributes})
    return len(self.instances)

  def finish_instance(self, next_instance=0):
    """Notes the drawn area of the object painted last, unless it goes on."""
    if self._painting and next_instance != self._painting:
      self.instances[self._painting - 1]["drawn_area"] = int(
          np.count_nonzero(self.instance == self._painting))
    self._painting = next_instance

  def paint(self, mask, label, color, instance=0):
    if self.instance is not None:
      self.finish_instance(instance)
    self.label[mask] = label
    self.color[mask] = color
    if self.instance is not None:
      self.instance[mask] = instance

  def box(self, y0, y1, x0, x1, label, color, instance=0):
    h, w = self.label.shape
    y0, y1 = max(int(round(y0)), 0), min(int(round(y1)), h)
    x0, x1 = max(int(round(x0)), 0), min(int(round(x1)), w)
    if self.instance is not None:
      self.finish_instance(instance)
    if y1 > y0 and x1 > x0:
      self.label[y0:y1, x0:x1] = label
      self.color[y0:y1, x0:x1] = color
      if self.instance is not None:
        self.instance[y0:y1, x0:x1] = instance

  def shape_mask(self, shape, cy, cx, ry, rx):
    """(window slices, [h, w] bool) of a shape centred at (cy, cx).

    "ellipse" has radii (ry, rx); "circle", "diamond", "square" and the
    upward "triangle" are inscribed in the same 2ry x 2rx box.
    """
    h, w = self.label.shape
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, h)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, w)
    window = (slice(y0, y1), slice(x0, x1))
    if y1 <= y0 or x1 <= x0:
      return window, None
    dy, dx = (self.ys[y0:y1] - cy) / ry, (self.xs[:, x0:x1] - cx) / rx
    if shape in ("ellipse", "circle"):
      inside = dy ** 2 + dx ** 2 <= 1.0
    elif shape == "diamond":
      inside = np.abs(dy) + np.abs(dx) <= 1.0
    elif shape == "square":
      inside = (np.abs(dy) <= 1.0) & (np.abs(dx) <= 1.0)
    elif shape == "triangle":
      inside = (np.abs(dy) <= 1.0) & (np.abs(dx) <= (dy + 1.0) / 2)
    else:
      raise ValueError(f"toy_streets: unknown shape {shape!r}")
    return window, inside

  def shape(self, shape, cy, cx, ry, rx, label, color, instance=0):
    if self.instance is not None:
      self.finish_instance(instance)
    window, inside = self.shape_mask(shape, cy, cx, ry, rx)
    if inside is None:
      return
    self.label[window][inside] = label
    self.color[window][inside] = color
    if self.instance is not None:
      self.instance[window][inside] = instance

  def ellipse(self, cy, cx, ry, rx, label, color, instance=0):
    self.shape("ellipse", cy, cx, ry, rx, label, color, instance)


def _jitter(rng, rgb, amount):
  return np.clip(np.asarray(rgb, np.float32)
                 + rng.uniform(-amount, amount, 3), 0, 255)


def _signal(canvas, rng, foot, x, scale):
  """A pole carrying a traffic light or a sign, in the detail world.

  The pole is one scale tall, so its head stays inside the image at every
  depth; heads are drawn larger than life (a light is 0.13 scale wide, a sign
  0.24 scale) so that most are tens of pixels at 256x512.
  """
  pole_w = max(1.5, 0.03 * scale)
  top = foot - scale
  canvas.box(top, foot, x - pole_w / 2, x + pole_w / 2, POLE,
             _jitter(rng, (130, 130, 135), 10), canvas.new_instance("pole"))
  if rng.random() < 0.5:
    box_w = 0.13 * scale
    lit = int(rng.integers(len(LIGHT_STATES)))
    lamp_r = 0.36 * box_w
    lamp_cy = top + (0.5 + lit) * box_w
    light = canvas.new_instance("traffic light", state=LIGHT_STATES[lit],
                                lamp=(lamp_cy, x, lamp_r))
    canvas.box(top, top + 3 * box_w, x - box_w / 2, x + box_w / 2, LIGHT,
               _jitter(rng, (40, 40, 35), 8), light)
    for lamp in range(len(LIGHT_STATES)):
      canvas.ellipse(top + (0.5 + lamp) * box_w, x, lamp_r, lamp_r, LIGHT,
                     (_LAMP_LIT if lamp == lit else _LAMP_DARK)[lamp], light)
  else:
    radius = 0.12 * scale
    shape = SIGN_SHAPES[rng.integers(len(SIGN_SHAPES))]
    color = int(rng.integers(len(_SIGN_COLORS)))
    canvas.shape(shape, top + radius, x, radius, radius, SIGN,
                 _jitter(rng, _SIGN_COLORS[color], 15),
                 canvas.new_instance("traffic sign", shape=shape,
                                     color=SIGN_COLOR_NAMES[color]))


def _original_signal(canvas, rng, foot, x, scale):
  """A pole with a small square sign or a light, as the original world has."""
  pole_w = max(1.5, 0.03 * scale)
  top = foot - 1.2 * scale
  canvas.box(top, foot, x - pole_w / 2, x + pole_w / 2, POLE,
             _jitter(rng, (130, 130, 135), 10), canvas.new_instance("pole"))
  if rng.random() < 0.5:
    size = 0.12 * scale
    color = rng.choice(len(_SIGN_COLORS))
    canvas.box(top, top + size, x - size / 2, x + size / 2, SIGN,
               _jitter(rng, _SIGN_COLORS[color], 15),
               canvas.new_instance("traffic sign", shape="square",
                                   color=SIGN_COLOR_NAMES[color]))
  else:
    box_w = 0.08 * scale
    color = _jitter(rng, (40, 40, 35), 8)
    lamp = rng.integers(3)
    lamp_cy, lamp_r = top + (0.45 + 0.85 * lamp) * box_w, 0.3 * box_w
    light = canvas.new_instance("traffic light", state=LIGHT_STATES[lamp],
                                lamp=(lamp_cy, x, lamp_r))
    canvas.box(top, top + 2.6 * box_w, x - box_w / 2, x + box_w / 2, LIGHT,
               color, light)
    canvas.ellipse(lamp_cy, x, lamp_r, lamp_r, LIGHT, _LAMP_LIT[lamp], light)


_FACADE_COLORS = ((120, 110, 100), (150, 140, 125), (95, 95, 105), (170, 120, 95))
_CAR_COLORS = ((180, 30, 30), (30, 40, 130), (200, 200, 205), (40, 40, 45),
               (60, 110, 60), (210, 170, 40))


def _layout(seed: int, height: int, width: int, world: World,
            track_instances: bool = False):
  """Paints one scene of `world`: returns (canvas, cars).

  `canvas` holds the label [H, W] uint8, colour [H, W, 3] float32 and, with
  `track_instances`, the instance map [H, W] uint16 and the instances' records;
  `cars` lists (y_bottom, x0, x1, height) boxes for the real style's shadows.
  """
  rng = np.random.default_rng([seed, 0])
  canvas = _Canvas(height, width, track_instances)
  ys, xs = canvas.ys, canvas.xs
  horizon = height * rng.uniform(0.38, 0.5)
  vanish_x = width * rng.uniform(0.35, 0.65)
  # Perspective: a ground point at row y is at "depth" (y - horizon) / (H - horizon).
  depth = np.clip((ys - horizon) / (height - horizon), 0.0, None)
  road_half = width * rng.uniform(0.45, 0.75) * depth + 2.0
  walk_half = road_half * rng.uniform(*world.sidewalk)

  sky_top, sky_bottom = _jitter(rng, (90, 140, 200), 15), _jitter(rng, (190, 210, 230), 15)
  t = np.clip(ys / max(horizon, 1.0), 0, 1)[..., None]
  canvas.color[:] = sky_top * (1 - t) + sky_bottom * t

  # Buildings: a row of facades on each side, from their roofline to the
  # ground; the street canyon around the vanishing point stays open.
  canyon = width * rng.uniform(*world.canyon)
  for side in (-1, 1):
    x = vanish_x + side * canyon
    while (x < width) if side > 0 else (x > 0):
      facade = width * rng.uniform(0.08, 0.22)
      x_next = x + side * facade
      top = horizon * rng.uniform(*world.building_top)
      x0, x1 = sorted((x, x_next))
      canvas.box(top, height, x0, x1, BUILDING,
                 _jitter(rng, _FACADE_COLORS[rng.choice(len(_FACADE_COLORS))], 12))
      if world.front_gardens and rng.random() < world.front_gardens:
        # Hedges and shrubs up to the ground floor's windows.
        canvas.box(horizon * rng.uniform(0.6, 0.9), height, x0, x1, VEGETATION,
                   _jitter(rng, (70, 115, 50), 15))
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
  near, far = world.prop_feet
  props = sorted(rng.uniform(horizon + near * height, height * far,
                             rng.integers(*world.props)))
  for foot in props:
    d = (foot - horizon) / (height - horizon)
    side = rng.choice((-1, 1))
    x = ground_x(foot, side * rng.uniform(*world.prop_offset))
    scale = height * d
    if rng.random() < world.tree_share:
      trunk = max(1.5, 0.04 * scale)
      crown = world.tree_size * scale
      canvas.box(foot - 0.9 * scale, foot, x - trunk / 2, x + trunk / 2,
                 VEGETATION, _jitter(rng, (90, 70, 45), 10))
      canvas.ellipse(foot - 1.1 * scale, x, 0.45 * crown, 0.35 * crown,
                     VEGETATION, _jitter(rng, (60, 120, 50), 15))
    elif world.detail:
      _signal(canvas, rng, foot, x, scale)
    else:
      _original_signal(canvas, rng, foot, x, scale)

  # Cars on the road, far to near so that near ones occlude far ones.
  cars = []
  for foot in sorted(rng.uniform(horizon + 0.05 * height, height * 1.1,
                                 rng.integers(*world.cars))):
    d = (foot - horizon) / (height - horizon)
    x = ground_x(foot, rng.uniform(-world.car_offset, world.car_offset))
    car_w, car_h = width * 0.45 * d + 4, height * 0.3 * d + 3
    body = _jitter(rng, _CAR_COLORS[rng.choice(len(_CAR_COLORS))], 20)
    car = canvas.new_instance("car")
    canvas.box(foot - car_h * 0.65, foot - car_h * 0.1, x - car_w / 2, x + car_w / 2,
               CAR, body, car)
    canvas.box(foot - car_h, foot - car_h * 0.6, x - car_w * 0.35, x + car_w * 0.35,
               CAR, body * 0.9, car)
    canvas.box(foot - car_h * 0.93, foot - car_h * 0.65, x - car_w * 0.3,
               x + car_w * 0.3, CAR, (60, 75, 90), car)  # windows are car too
    for wheel in (-0.32, 0.32):
      canvas.ellipse(foot - car_h * 0.12, x + wheel * car_w, car_h * 0.13,
                     car_w * 0.08, CAR, (20, 20, 20), car)
    cars.append((foot, x - car_w / 2, x + car_w / 2, car_h))
  return canvas, cars


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


def _render(seed, style, height, width, track_instances):
  camera = _style(style).camera
  canvas, cars = _layout(seed, height, width, world_of(seed, style), track_instances)
  if camera == "sim":
    image = np.clip(canvas.color, 0, 255).astype(np.uint8)
  else:
    image = _render_real(seed, canvas.label, canvas.color, cars)
  return image, canvas


def render(seed: int, style: str, height: int = 256, width: int = 512):
  """Renders one street scene.

  Args:
    seed: scene seed; the same seed gives the same scene and label in every
      style of the same world (see the module docstring).
    style: one of STYLES: "sim", "real", "sim_detail", "real_detail",
      "real_mismatch".
    height: image height in pixels.
    width: image width in pixels.

  Returns:
    (image [height, width, 3] uint8, label [height, width] uint8 Cityscapes
    train ids, 255 = ignore).
  """
  image, canvas = _render(seed, style, height, width, track_instances=False)
  return image, canvas.label


def _visible_lamp(canvas, instance_id, lamp):
  """(pixels, [y0, x0, y1, x1] or None) of a light's lit lamp left visible.

  The light's state can only be checked where its lit lamp is not hidden.
  """
  cy, cx, radius = lamp
  window, inside = canvas.shape_mask("ellipse", cy, cx, radius, radius)
  if inside is None:
    return 0, None
  rows, cols = np.nonzero(inside & (canvas.instance[window] == instance_id))
  if not rows.size:
    return 0, None
  y0, x0 = window[0].start, window[1].start
  return int(rows.size), [int(y0 + rows.min()), int(x0 + cols.min()),
                          int(y0 + rows.max() + 1), int(x0 + cols.max() + 1)]


def _instance_annotations(canvas):
  """Drops hidden instances, numbers the rest 1..N and describes each.

  Returns (instance map [H, W] uint16, list of dicts, see
  `render_with_instances`).
  """
  canvas.finish_instance()
  old_map = canvas.instance
  areas = np.bincount(old_map.ravel(), minlength=len(canvas.instances) + 1)
  renumber = np.zeros(len(areas), np.uint16)
  objects = ndimage.find_objects(old_map)
  annotations = []
  for old_id, record in enumerate(canvas.instances, start=1):
    if not areas[old_id]:
      continue  # behind nearer objects or outside the image
    new_id = len(annotations) + 1
    renumber[old_id] = new_id
    rows, cols = objects[old_id - 1]
    annotation = {"id": new_id, "mask_id": new_id, "class": record["class"],
                  "box": [rows.start, cols.start, rows.stop, cols.stop],
                  "area": int(areas[old_id]),
                  "visible": round(int(areas[old_id]) / record["drawn_area"], 3)}
    if record["class"] == "traffic light":
      annotation["state"] = record["state"]
      annotation["lamp_area"], annotation["lamp_box"] = _visible_lamp(
          canvas, old_id, record["lamp"])
    if record["class"] == "traffic sign":
      annotation["shape"], annotation["color"] = record["shape"], record["color"]
    annotations.append(annotation)
  return renumber[old_map], annotations


def render_with_instances(seed: int, style: str, height: int = 256, width: int = 512):
  """Renders one street scene with its object instances.

  Args: as `render`.

  Returns:
    (image [H, W, 3] uint8, label [H, W] uint8, instance map [H, W] uint16,
    instances). The image and label are those of `render`. The instance map
    holds each visible object's `mask_id` on its visible pixels, 0 elsewhere.
    `instances` lists, in drawing order (poles, lights and signs far to near,
    then cars far to near), a dict per visible car, pole, traffic light and
    traffic sign: "id" and "mask_id" (the same number, 1..N), "class" (a
    CLASS_NAMES entry, which the label map holds on every pixel of the mask),
    "box" [y0, x0, y1, x1] (the mask's bounds, y1 and x1 exclusive), "area"
    (visible pixels), "visible" (area over the pixels the object covered
    inside the image before nearer objects hid part of it; 1.0 = not
    occluded); lights add "state" ("red", "amber" or "green": the lit lamp),
    "lamp_box" (bounds of the lit lamp's visible pixels, None when hidden) and
    "lamp_area"; signs add "shape" ("circle", "triangle", "diamond", "square")
    and "color" ("red", "blue", "yellow").
  """
  image, canvas = _render(seed, style, height, width, track_instances=True)
  instance_map, instances = _instance_annotations(canvas)
  return image, canvas.label, instance_map, instances


def class_frequencies(style: str, split: str = "train", n: int = 100,
                      height: int = 128, width: int = 256) -> np.ndarray:
  """Per-class pixel frequency of the first n scenes of <style>:<split>.

  Returns:
    [len(CLASS_NAMES)] float64 summing to 1: the share of all pixels of the n
    label maps that carries each train id. Only layouts are drawn (the camera
    does not change labels), so this is fast.
  """
  seeds = split_seeds(style, split)
  if not 0 < n <= len(seeds):
    raise ValueError(f"toy_streets: n={n} outside 1..{len(seeds)}, the scenes of "
                     f"{style}:{split}")
  counts = np.zeros(256, np.int64)
  for seed in seeds[:n]:
    canvas, _ = _layout(seed, height, width, world_of(seed, style))
    counts += np.bincount(canvas.label.ravel(), minlength=256)
  return counts[:len(CLASS_NAMES)] / counts.sum()


def frequency_table(frequencies: dict[str, np.ndarray]) -> str:
  """A Markdown table, a row per class and a column per variant, in percent.

  Args:
    frequencies: variant name (e.g. "real_mismatch:train") -> the
      [len(CLASS_NAMES)] frequencies of `class_frequencies`.

  Classes with no pixels in any variant are left out.
  """
  names = list(frequencies)
  lines = ["| class | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
  for class_id, class_name in enumerate(CLASS_NAMES):
    shares = [frequencies[name][class_id] for name in names]
    if any(shares):
      lines.append(f"| {class_name} | " + " | ".join(f"{100 * s:.1f}" for s in shares)
                   + " |")
  return "\n".join(lines)


def _write_file(data: bytes, path: str):
  """Writes a file through `storage.atomic_write`: never half-written under its name.

  A file already at `path` is kept when it holds exactly these bytes (a rerun of
  the same command) and refused otherwise: the writer never replaces a file it
  did not write.

  Raises:
    FileExistsError: naming the file that differs.
  """
  if os.path.lexists(path):
    with open(path, "rb") as existing:
      if existing.read() == data:
        return
    raise FileExistsError(f"toy_streets: {path} exists and differs from the scene it would "
                          "write; choose an empty --out (existing files are never replaced)")
  with storage.atomic_write(path) as f:
    f.write(data)


def _png_bytes(array: np.ndarray) -> bytes:
  """PNG of [H, W, 3] uint8 (RGB), [H, W] uint8 (L) or [H, W] uint16 (I;16)."""
  encoded = io.BytesIO()
  Image.fromarray(array).save(encoded, format="PNG")
  return encoded.getvalue()


def write_folder(out: str, n: int, style: str = "both", split: str = "train",
                 height: int = 256, width: int = 512) -> dict[str, np.ndarray]:
  """Writes n scenes per style to out/<style>/{images,labels,instances}/.

  Each scene i is images/<i:05d>.png, labels/<i:05d>.png (uint8 train ids),
  instances/<i:05d>.png (the uint16 instance map) and instances/<i:05d>.json
  (the list of `render_with_instances`).

  Args:
    style: a style, or a group of STYLE_GROUPS ("both": sim and real;
      "detail": sim_detail, real_detail, real_mismatch).

  Returns:
    "<style>:<split>" -> the class frequencies of the written label maps (as
    `class_frequencies`).
  """
  styles = STYLE_GROUPS.get(style, (style,))
  frequencies = {}
  for s in styles:
    seeds = split_seeds(s, split)
    if not 0 < n <= len(seeds):
      raise ValueError(f"toy_streets: --n {n} outside 1..{len(seeds)}, the scenes of {split!r}")
    for sub in ("images", "labels", "instances"):
      os.makedirs(os.path.join(out, s, sub), exist_ok=True)
    counts = np.zeros(256, np.int64)
    for i in range(n):
      image, label, instance_map, instances = render_with_instances(
          seeds[i], s, height, width)
      _write_file(_png_bytes(image), os.path.join(out, s, "images", f"{i:05d}.png"))
      _write_file(_png_bytes(label), os.path.join(out, s, "labels", f"{i:05d}.png"))
      _write_file(_png_bytes(instance_map),
                  os.path.join(out, s, "instances", f"{i:05d}.png"))
      # One instance per line: readable, and diffs of two runs line up.
      _write_file(("[\n" + ",\n".join(json.dumps(a) for a in instances) + "\n]\n").encode(),
                  os.path.join(out, s, "instances", f"{i:05d}.json"))
      counts += np.bincount(label.ravel(), minlength=256)
    frequencies[f"{s}:{split}"] = counts[:len(CLASS_NAMES)] / counts.sum()
  return frequencies


def _stats(n: int, height: int, width: int) -> dict[str, np.ndarray]:
  """Class frequencies of every style's train split and the shared detail val."""
  variants = [(s, "train") for s in STYLES] + [("real_mismatch", "val")]
  return {f"{s}:{split}": class_frequencies(s, split, n, height, width)
          for s, split in variants}


# The command's own flags (not absl's global FLAGS), so that every entry point
# imports next to the others although their flag names overlap (cli.py).
FLAGS = flags.FlagValues()
_OUT = flags.DEFINE_string("out", None, "Output folder (required unless --stats).",
                           flag_values=FLAGS)
_STATS = flags.DEFINE_bool("stats", False, "Print the class frequencies of every style, "
                           "write nothing.", flag_values=FLAGS)
_N = flags.DEFINE_integer("n", 1000, "Images per style.", flag_values=FLAGS)
_STYLE = flags.DEFINE_enum(
    "style", "both", [*STYLES, *STYLE_GROUPS], "A style, 'both' (sim, real) or 'detail' "
    "(sim_detail, real_detail, real_mismatch); --stats prints every style.", flag_values=FLAGS)
_SPLIT = flags.DEFINE_enum("split", "train", list(SPLITS), "Which seeds to render.",
                           flag_values=FLAGS)
_HEIGHT = flags.DEFINE_integer("height", 256, "Image height in pixels.", flag_values=FLAGS)
_WIDTH = flags.DEFINE_integer("width", 512, "Image width in pixels.", flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.data.toy_streets` in this process: `argv` as sys.argv; returns 0.

  Raises:
    cli.HelpRequested: --help.
    cli.UsageError: a bad flag, no --out, or a file in --out that differs from
      the scene it would write.
  """
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments {arguments[1:]}")
  if not _STATS.value and not _OUT.value:
    raise cli.UsageError("--out is required (or --stats to print class frequencies only)")
  try:
    if _STATS.value:
      frequencies = _stats(_N.value, _HEIGHT.value, _WIDTH.value)
    else:
      frequencies = write_folder(_OUT.value, _N.value, _STYLE.value, _SPLIT.value,
                                 _HEIGHT.value, _WIDTH.value)
  except (OSError, ValueError) as e:
    raise cli.UsageError(str(e)) from e
  print(f"Pixel share per class (%), {_N.value} scenes per variant at "
        f"{_HEIGHT.value}x{_WIDTH.value}:\n{frequency_table(frequencies)}")
  if not _STATS.value:
    print(f"wrote {_N.value} scenes per style to {_OUT.value}", file=sys.stderr)
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
