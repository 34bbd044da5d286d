"""python -m i2i_jax.evaluate on toy_streets folders."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from i2i_jax import evaluate
from i2i_jax.data import toy_streets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """val sim/real show the same scenes (X and a perfect F(X)); train real is Y."""
  root = tmp_path_factory.mktemp("toy")
  toy_streets.write_folder(str(root / "val"), 4, split="val", height=32, width=64)
  toy_streets.write_folder(str(root / "train"), 4, style="real", split="train", height=32,
                           width=64)
  return root


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "i2i_jax.evaluate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_help_explains_every_flag():
  result = run_cli("--help")
  assert "Traceback" not in result.stderr
  for flag in ("source", "labels", "translated", "target", "target_labels", "out", "fd_network",
               "inception_weights", "segmenter", "segmenter_steps", "segmenter_size",
               "downstream_steps", "kid_subsets", "kid_subset_size", "worst_k", "batch_size",
               "seed"):
    assert f"--{flag}:" in result.stdout, flag


def test_missing_and_extra_translated_files_are_named(folders, tmp_path):
  translated = tmp_path / "translated"
  shutil.copytree(folders / "val" / "real" / "images", translated)
  os.remove(translated / "00002.png")
  shutil.copy(translated / "00001.png", translated / "stray.jpg")
  result = run_cli(f"--source={folders / 'val' / 'sim' / 'images'}", f"--translated={translated}",
                   f"--target={folders / 'train' / 'real' / 'images'}", f"--out={tmp_path / 'out'}")
  assert result.returncode != 0
  assert "00002.png" in result.stderr and "stray.jpg" in result.stderr
  assert "missing 1" in result.stderr and "1 extra" in result.stderr
  assert not (tmp_path / "out" / "report.json").exists()


def test_matching_ignores_the_extension_and_reorders():
  assert evaluate.match_translated(["a/x.jpg", "b.png"], ["b.png", "a/x.png"], "t") == [1, 0]


def test_report_without_feature_network_has_flips_and_detail_from_seg_of_x(folders, tmp_path):
  out = tmp_path / "out"
  result = run_cli(f"--source={folders / 'val' / 'sim' / 'images'}",
                   f"--translated={folders / 'val' / 'real' / 'images'}",
                   f"--target={folders / 'train' / 'real' / 'images'}",
                   f"--target_labels={folders / 'train' / 'real' / 'labels'}", f"--out={out}",
                   "--fd_network=none", "--segmenter_steps=20", "--downstream_steps=0",
                   "--worst_k=1")
  assert result.returncode == 0, result.stderr
  report = json.loads((out / "report.json").read_text())
  assert set(report["metrics"]) == {"flips", "detail"}  # no labels for X: no semantic section
  assert any("seg(X)" in note for note in report["notes"])
  markdown = (out / "report.md").read_text()
  assert "| flip_rate |" in markdown and "| instances |" in markdown
  assert (out / "flips_worst_0.png").exists()


@pytest.mark.slow
def test_offline_report_labels_the_random_feature_network_and_has_flips_and_detail(
    folders, tmp_path):
  out = tmp_path / "out"
  # No weights given and none downloadable from a missing file: auto falls back.
  written = evaluate.evaluate(
      source=f"folder:{folders / 'val' / 'sim' / 'images'}",
      labels=str(folders / "val" / "sim" / "labels"),
      translated=str(folders / "val" / "real" / "images"),
      target=str(folders / "train" / "real" / "images"),
      target_labels=str(folders / "train" / "real" / "labels"), out=str(out),
      fd_network="auto", inception_weights=str(tmp_path / "absent.pth"), segmenter_steps=30,
      downstream_steps=10, kid_subsets=5, worst_k=2, batch_size=4)
  report = json.loads((out / "report.json").read_text())
  assert report == written
  metrics = report["metrics"]
  assert "FID" not in metrics["fid"] and "KID_mean" not in metrics["fid"]
  assert set(metrics["fid"]) == {"FD_inception_random_init", "KD_inception_random_init_mean",
                                 "KD_inception_random_init_std", "kid_subset_size"}
  assert metrics["fid"]["kid_subset_size"] == 4
  assert "FD_inception_random_init(X,Y)" in metrics["domain_gap"]
  assert 0.0 <= metrics["flips"]["flip_rate"] <= 1.0
  assert {"instances", "instances/pole", "instances/traffic sign"} <= set(metrics["detail"])
  assert 0.0 <= metrics["semantic"]["mIoU"] <= 1.0
  assert set(metrics["downstream"]) == {"mIoU_trained_on_X", "mIoU_trained_on_F(X)", "mIoU_gain"}
  assert any("NOT FID" in note for note in report["notes"])
  markdown = (out / "report.md").read_text()
  assert "| flip_rate |" in markdown and "| instances |" in markdown
  assert "FD_inception_random_init" in markdown and "| FID |" not in markdown
  for pictures in report["pictures"].values():
    for picture in pictures:
      assert (out / picture).exists() and f"]({picture})" in markdown
  assert report["pictures"]["flips"] == ["flip_matrix.png", "flips_worst_0.png",
                                         "flips_worst_1.png"]
