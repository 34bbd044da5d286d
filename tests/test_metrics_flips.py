"""The flip evaluator's pictures: captions that name the file, a colour scale on the matrix."""

import numpy as np
from matplotlib import colormaps
from PIL import Image

from i2i_jax.data import toy_streets
from i2i_jax.metrics import flips
from i2i_jax.metrics import pictures
from i2i_jax.metrics import sensitivity

HEIGHT, WIDTH = 16, 32


def segment_by_brightness(images):
  """A real (if simple) segmenter: class 0 (road) where dark, 10 (sky) where bright, [B, H, W]."""
  return np.where(np.asarray(images).mean(axis=-1) > 127, 10, 0).astype(np.int32)


def scenes():
  """Two sources, their labels and translations; the second translation turns dark to bright."""
  dark_top = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
  dark_top[HEIGHT // 2:] = 200
  sources = [dark_top, dark_top.copy()]
  labels = [segment_by_brightness(image[None])[0].astype(np.uint8) for image in sources]
  translated = [dark_top.copy(), np.full((HEIGHT, WIDTH, 3), 220, np.uint8)]
  return sources, labels, translated


def run_evaluator(tmp_path):
  sources, labels, translated = scenes()
  evaluator = flips.FlipEvaluator(sources, labels, out_dir=str(tmp_path), worst_k=1,
                                  source_names=["city/a.png", "city/b.png"])
  metrics = evaluator.run(translated, list(segment_by_brightness(np.stack(translated))))
  return evaluator, metrics


def test_worst_flip_picture_names_the_file_and_says_what_the_panels_and_magenta_are(tmp_path):
  evaluator, metrics = run_evaluator(tmp_path)
  assert metrics["flip_rate"] == 0.25  # the dark half of b.png turned bright
  assert list(evaluator.pictures) == ["flip_matrix.png", "flips_worst_0.png"]
  caption = evaluator.pictures["flips_worst_0.png"]
  assert "city/b.png" in caption and "magenta" in caption and "50.0%" in caption
  lines = flips.flip_caption(0, "city/b.png", 0.5, "X's labels")
  assert "city/b.png" in lines[0] and "magenta" in lines[1] and "50.0%" in lines[1]

  picture = np.asarray(Image.open(tmp_path / "flips_worst_0.png").convert("RGB"))
  scale = -(-flips.MIN_PANEL_WIDTH // WIDTH)  # small panels are enlarged so the titles fit
  assert picture.shape[1] == 3 * WIDTH * scale
  text_height = picture.shape[0] - HEIGHT * scale
  assert text_height > 3 * pictures.FONT_SIZE  # two caption lines and the panel titles
  band = picture[:text_height]
  assert (band < 100).all(axis=-1).sum() > 200  # dark text drawn on the white band
  panels = picture[text_height:]
  magenta = (panels[..., 0] > 150) & (panels[..., 1] < 120) & (panels[..., 2] > 150)
  assert magenta[:, 2 * WIDTH * scale:].any() and not magenta[:, :2 * WIDTH * scale].any()


def test_captioned_panels_wraps_long_captions_inside_the_picture():
  panels = np.zeros((10, 3 * 100, 3), np.uint8)
  short = flips.captioned_panels(panels, ["one line"])
  long = flips.captioned_panels(panels, ["word " * 200])
  assert short.shape[1] == long.shape[1] == 3 * 100 * 3  # 100-pixel panels enlarged 3 times
  assert long.shape[0] > short.shape[0] + 5 * pictures.FONT_SIZE


def test_flip_matrix_has_a_colour_bar_spanning_the_colormap(tmp_path):
  sources, labels, translated = scenes()
  evaluator = flips.FlipEvaluator(sources, labels, out_dir=str(tmp_path), worst_k=0)
  evaluator.run(translated, list(segment_by_brightness(np.stack(translated))))
  picture = np.asarray(Image.open(tmp_path / "flip_matrix.png").convert("RGB")).astype(np.int32)
  viridis = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.int32)
  # For each pixel, the nearest colormap entry and how far it is (per distinct colour).
  colours, pixel_colour = np.unique(picture.reshape(-1, 3), axis=0, return_inverse=True)
  distances = np.abs(colours[:, None, :] - viridis[None]).sum(axis=-1)
  entry = distances.argmin(axis=-1)[pixel_colour].reshape(picture.shape[:2])
  on_colormap = (distances.min(axis=-1) <= 6)[pixel_colour].reshape(picture.shape[:2])
  # A colour bar is a column holding (nearly) every colour of the map, from its
  # minimum to its maximum; the matrix's cells give a column a handful of colours.
  scale_columns = [x for x in range(picture.shape[1])
                   if len(set(entry[on_colormap[:, x], x])) > 200]
  assert scale_columns, "no column of flip_matrix.png spans the colormap"
  column_entries = entry[on_colormap[:, scale_columns[0]], scale_columns[0]]
  assert column_entries.min() <= 3 and column_entries.max() >= 252
  assert "scale on the right, 0 to 1" in evaluator.pictures["flip_matrix.png"]


def test_sky_repainted_as_vegetation_raises_that_pair_in_excess_of_the_ideal():
  sky, vegetation = toy_streets.SKY, toy_streets.VEGETATION
  scenes = [toy_streets.render_with_instances(seed, "sim_detail", 128, 256)
            for seed in toy_streets.split_seeds("sim_detail", "val")[:4]]
  sources = [image for image, *_ in scenes]
  labels = [label for _, label, *_ in scenes]
  ideal = [toy_streets.render(seed, "real_mismatch", 128, 256)[0]
           for seed in toy_streets.split_seeds("real_mismatch", "val")[:4]]
  segment = sensitivity.nearest_colour_segmenter(ideal, labels)
  # Repaint the sky as foliage: each sky pixel takes the colour of a vegetation pixel.
  repainted = sensitivity.repaint_class(ideal, labels, painted=sky, painter=vegetation)
  evaluator = flips.FlipEvaluator(sources, labels)
  ideal_predicted = list(segment(np.stack(ideal)))
  as_ideal = evaluator.run(ideal, ideal_predicted, ideal_predicted)
  flipped = evaluator.run(repainted, list(segment(np.stack(repainted))), ideal_predicted)
  assert as_ideal["excess_flip_rate"] == 0.0
  assert flipped["excess_flip/sky->vegetation"] >= 0.6
  assert flipped["flip/sky->vegetation"] >= as_ideal.get("flip/sky->vegetation", 0.0) + 0.6
  assert flipped["excess_flip_rate/sky"] >= 0.6
  assert abs(flipped["excess_flip_rate/road"]) < 0.01  # the other classes are as in the ideal
