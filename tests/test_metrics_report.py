"""The domain-gap evaluator and the report writer."""

import json

import numpy as np
import pytest

from i2i_jax.metrics import domain_gap
from i2i_jax.metrics import report


def colour_statistics(images):
  """A small real feature function: per-channel mean and std of each image, [N, 6]."""
  images = np.stack([np.asarray(image, np.float32) for image in images])
  return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))], axis=1)


def images(seed, n, brightness):
  rng = np.random.RandomState(seed)
  return [np.clip(rng.normal(brightness, 30, size=(8, 8, 3)), 0, 255).astype(np.uint8)
          for _ in range(n)]


def test_pca_finds_the_direction_of_largest_variance():
  points = np.random.RandomState(0).randn(200, 3) * np.array([10.0, 1.0, 0.1])
  projected = domain_gap.pca_2d(points)
  assert projected.shape == (200, 2)
  assert np.std(projected[:, 0]) == pytest.approx(np.std(points[:, 0]), rel=0.05)


def test_domain_gap_closes_when_translated_images_look_like_the_target(tmp_path):
  sim, real = images(0, 20, 60), images(1, 20, 180)
  evaluator = domain_gap.DomainGapEvaluator(colour_statistics, sim, real, "FD_colour",
                                            out_dir=str(tmp_path))
  metrics = evaluator.run(images(2, 20, 180))
  assert metrics["FD_colour(F(X),Y)"] < 0.1 * metrics["FD_colour(X,Y)"]
  assert metrics["FD_colour_gap_closed"] > 0.9
  assert list(evaluator.pictures) == ["domain_gap.png"]
  assert (tmp_path / "domain_gap.png").stat().st_size > 1000
  untranslated = domain_gap.DomainGapEvaluator(colour_statistics, sim, real, "FD_colour").run(sim)
  assert untranslated["FD_colour_gap_closed"] == pytest.approx(0.0)


def test_domain_gap_scatter_is_titled_labelled_and_captioned(tmp_path):
  evaluator = domain_gap.DomainGapEvaluator(colour_statistics, images(0, 12, 60),
                                            images(1, 12, 180), "FD_colour",
                                            out_dir=str(tmp_path))
  metrics = evaluator.run(images(2, 12, 170))
  caption = evaluator.pictures["domain_gap.png"]
  assert f"FD_colour(X,Y) = {metrics['FD_colour(X,Y)']:.4g}" in caption
  assert "blue = X" in caption and "green = Y" in caption and "orange = F(X)" in caption
  figure, methods = evaluator.scatter_figure(colour_statistics(images(2, 12, 170)), 2.0, 1.0)
  assert methods[0] == "PCA"
  assert "FD_colour(X,Y) = 2, FD_colour(F(X),Y) = 1" in figure.texts[0].get_text()  # the title
  for axis in figure.axes:
    assert axis.get_xlabel() and axis.get_ylabel() and axis.get_legend() is not None


def test_report_writes_json_and_markdown_with_captioned_pictures(tmp_path):
  caption = "Flip matrix: row = a class in X, column = its class in F(X)."
  written = report.write_report(
      str(tmp_path), {"flips": {"flip_rate": 0.25, "flip_rate/sky": float("nan")}},
      {"flips": {"flip_matrix.png": caption}}, ["a note"], {"source": "folder:x"})
  on_disk = json.loads((tmp_path / "report.json").read_text())
  assert on_disk == written
  assert on_disk["metrics"]["flips"] == {"flip_rate": 0.25, "flip_rate/sky": None}
  assert on_disk["pictures"] == {"flips": ["flip_matrix.png"]}
  assert on_disk["captions"] == {"flip_matrix.png": caption}
  markdown = (tmp_path / "report.md").read_text()
  assert "| flip_rate | 0.25 |" in markdown and "| flip_rate/sky | n/a |" in markdown
  assert f"*flip_matrix.png*: {caption}\n\n![flip_matrix.png](flip_matrix.png)" in markdown
  assert "- a note" in markdown
  assert not [path for path in tmp_path.iterdir() if "tmp" in path.name]
