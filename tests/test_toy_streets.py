"""toy_streets: determinism, a real domain gap, matching label distributions."""

import os

import numpy as np
from PIL import Image

from i2i_jax.data import sources
from i2i_jax.data import toy_streets


def test_render_is_deterministic_and_shares_the_scene_across_styles():
  sim_image, sim_label = toy_streets.render(11, "sim", 128, 256)
  real_image, real_label = toy_streets.render(11, "real", 128, 256)
  again_image, again_label = toy_streets.render(11, "real", 128, 256)
  assert sim_image.shape == real_image.shape == (128, 256, 3)
  assert sim_image.dtype == real_image.dtype == np.uint8
  assert sim_label.shape == (128, 256) and sim_label.dtype == np.uint8
  np.testing.assert_array_equal(sim_label, real_label)
  np.testing.assert_array_equal(real_image, again_image)
  np.testing.assert_array_equal(real_label, again_label)
  assert not np.array_equal(sim_label, toy_streets.render(12, "sim", 128, 256)[1])


def test_scenes_contain_the_street_classes():
  seen = set()
  for seed in range(16):
    seen |= set(np.unique(toy_streets.render(seed, "sim", 128, 256)[1]).tolist())
  names = {toy_streets.CLASS_NAMES[i] for i in seen}
  assert {"road", "sidewalk", "building", "sky", "vegetation", "car",
          "traffic sign", "traffic light", "pole"} <= names
  assert seen <= set(range(len(toy_streets.CLASS_NAMES)))


def _high_frequency_energy(image):
  gray = image.astype(np.float32).mean(-1)
  return np.abs(np.diff(gray, axis=1)).mean()


def _texture(image, label):
  """Mean colour change between horizontal neighbours of the same class."""
  same_class = label[:, 1:] == label[:, :-1]
  change = np.abs(np.diff(image.astype(np.float32), axis=1)).mean(-1)
  return float(change[same_class].mean())


def test_styles_differ_in_image_statistics_but_not_in_labels():
  sim_seeds = toy_streets.split_seeds("sim")[:24]
  real_seeds = toy_streets.split_seeds("real")[:24]
  sim = [toy_streets.render(s, "sim", 128, 256) for s in sim_seeds]
  real = [toy_streets.render(s, "real", 128, 256) for s in real_seeds]

  # Appearance: flat sim regions vs textured, noisy real ones.
  sim_texture = np.mean([_texture(i, l) for i, l in sim])
  real_texture = np.mean([_texture(i, l) for i, l in real])
  assert real_texture > 5 * sim_texture
  # Flat colours have few but hard edges; noise and texture make many small ones.
  assert (np.mean([_high_frequency_energy(i) for i, _ in real])
          > 1.5 * np.mean([_high_frequency_energy(i) for i, _ in sim]))
  # The colour cast moves the channel balance of the same scene.
  same_real = toy_streets.render(sim_seeds[0], "real", 128, 256)[0]
  assert np.abs(same_real.astype(float).mean((0, 1))
                - sim[0][0].astype(float).mean((0, 1))).max() > 3

  # Content: class frequencies of the two (unpaired) domains agree.
  def class_frequencies(pairs):
    counts = sum(np.bincount(l.ravel(), minlength=256) for _, l in pairs)
    return counts / counts.sum()
  sim_freq, real_freq = class_frequencies(sim), class_frequencies(real)
  assert 0.5 * np.abs(sim_freq - real_freq).sum() < 0.08  # total variation


def test_cli_writes_the_folder_layout_that_folder_sources_read(tmp_path):
  toy_streets.main(["--out", str(tmp_path), "--n", "3", "--style", "both",
                    "--height", "64", "--width", "128"])
  for style in toy_streets.STYLES:
    images = sorted(os.listdir(tmp_path / style / "images"))
    assert images == ["00000.png", "00001.png", "00002.png"]
    assert sorted(os.listdir(tmp_path / style / "labels")) == images
  source = sources.open_source(f"folder:{tmp_path / 'real' / 'images'}",
                               labels=str(tmp_path / "real" / "labels"))
  image, label = toy_streets.render(toy_streets.split_seeds("real")[1], "real",
                                    64, 128)
  np.testing.assert_array_equal(source[1]["image"], image)
  np.testing.assert_array_equal(source[1]["label"], label)
  assert Image.open(tmp_path / "sim" / "labels" / "00000.png").mode == "L"


def test_colorize_uses_the_cityscapes_palette():
  label = np.array([[0, 13], [10, 255]], np.uint8)
  colors = toy_streets.colorize(label)
  np.testing.assert_array_equal(colors[0, 0], (128, 64, 128))
  np.testing.assert_array_equal(colors[0, 1], (0, 0, 142))
  np.testing.assert_array_equal(colors[1, 1], (0, 0, 0))
