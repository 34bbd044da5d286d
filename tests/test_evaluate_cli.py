"""python -m i2i_jax.evaluate on toy_streets folders."""

import json
import logging
import os
import shutil
import subprocess
import sys

from etils import epath
import numpy as np
from PIL import Image
import pytest

from i2i_jax import cli
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
  # One CPU device, as a user's machine has (the test session fakes 8).
  return subprocess.run([sys.executable, "-m", "i2i_jax.evaluate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu",
                             "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})


def assert_usage_error(result, *expected, only_line=True):
  """Exit 2, no traceback, and an error line (stderr's only line) naming every `expected` string."""
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 or not only_line, result.stderr
  assert lines[-1].startswith("python -m i2i_jax.evaluate: error: "), result.stderr
  for text in expected:
    assert text in lines[-1], (text, lines[-1])


def test_help_explains_every_flag_on_stdout_and_exits_0():
  result = run_cli("--help")
  assert result.returncode == 0, result.stderr
  assert "Traceback" not in result.stderr
  for flag in ("source", "labels", "translated", "target", "target_labels", "ideal", "instances",
               "out", "fd_network",
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
  assert_usage_error(result, "--translated", "00002.png", "stray.jpg", "missing 1",
                              "1 extra")
  assert not (tmp_path / "out" / "report.json").exists()


def test_a_missing_source_folder_is_one_line_and_exit_2(folders, tmp_path):
  missing = tmp_path / "no_such_folder"
  result = run_cli(f"--source={missing}", f"--translated={folders / 'val' / 'real' / 'images'}",
                   f"--target={folders / 'train' / 'real' / 'images'}", f"--out={tmp_path / 'out'}")
  assert_usage_error(result, "--source", str(missing))


@pytest.mark.parametrize("out_in", ["source", "labels"])
def test_a_report_inside_an_input_folder_is_refused_and_nothing_is_written(folders, tmp_path,
                                                                            out_in):
  data = tmp_path / "data"
  shutil.copytree(folders / "val" / "sim", data)
  before = sorted(p.relative_to(data) for p in data.rglob("*"))
  inside = {"source": data / "images" / "report", "labels": data / "labels"}[out_in]

  with pytest.raises(cli.UsageError, match=f"inside --{out_in}="):
    evaluate.evaluate(source=f"folder:{data / 'images'}", labels=str(data / "labels"),
                      translated=str(folders / "val" / "real" / "images"),
                      target=str(folders / "train" / "real" / "images"), out=str(inside),
                      fd_network="none", downstream_steps=0, progress=False)

  assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


@pytest.mark.parametrize("flag, expected", [
    ("--segmenter_size=wide", "--segmenter_size='wide': expected HEIGHTxWIDTH"),
    ("--worst_k=-1", "--worst_k=-1: must be at least 0"),
    ("--batch_size=0", "--batch_size=0: must be at least 1"),
    ("--fd_network=fid", "--fd_network"),
    ("--fid_resize=bilinear", "--fid_resize"),
    ("--segmenter=/no/such/model.onnx", "--segmenter=/no/such/model.onnx: no such file"),
])
def test_a_bad_flag_value_is_one_line_and_exit_2(folders, tmp_path, flag, expected):
  result = run_cli(f"--source={folders / 'val' / 'sim' / 'images'}",
                   f"--translated={folders / 'val' / 'real' / 'images'}",
                   f"--target={folders / 'train' / 'real' / 'images'}",
                   f"--out={tmp_path / 'out'}", flag)
  assert_usage_error(result, expected)
  assert not (tmp_path / "out").exists()


def test_an_unreadable_image_is_named_in_one_line_and_exit_2(folders, tmp_path):
  target = tmp_path / "target"
  shutil.copytree(folders / "train" / "real", target)
  (target / "images" / "00001.png").write_bytes(b"not a png")
  result = run_cli(f"--source={folders / 'val' / 'sim' / 'images'}",
                   f"--translated={folders / 'val' / 'real' / 'images'}",
                   f"--target={target / 'images'}", f"--target_labels={target / 'labels'}",
                   f"--out={tmp_path / 'out'}", "--fd_network=none", "--segmenter_steps=1",
                   "--downstream_steps=0")
  # Stage lines and bars come before it; the error is the last line.
  assert_usage_error(result, "--target", "00001.png", only_line=False)


def test_an_output_that_cannot_be_a_folder_is_one_line_and_exit_3(folders, tmp_path):
  out = tmp_path / "report"
  out.write_text("a file where the report folder should go")
  result = run_cli(f"--source={folders / 'val' / 'sim' / 'images'}",
                   f"--translated={folders / 'val' / 'real' / 'images'}",
                   f"--target={folders / 'train' / 'real' / 'images'}", f"--out={out}")
  assert result.returncode == 3, result.stderr
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith(f"python -m i2i_jax.evaluate: error: --out={out}: ")


def test_label_ids_beyond_the_classes_name_the_label_file_and_exit_2(folders, tmp_path):
  target = tmp_path / "target"
  shutil.copytree(folders / "train" / "real", target)
  label_path = target / "labels" / "00002.png"
  label = np.asarray(Image.open(label_path)).copy()
  label[0, 0] = 33  # a Cityscapes label id (license plate), not a train id
  Image.fromarray(label).save(label_path)
  result = run_cli(f"--source={folders / 'val' / 'sim' / 'images'}",
                   f"--translated={folders / 'val' / 'real' / 'images'}",
                   f"--target={target / 'images'}", f"--target_labels={target / 'labels'}",
                   f"--out={tmp_path / 'out'}", "--fd_network=none", "--segmenter_steps=1",
                   "--downstream_steps=0")
  assert_usage_error(result, "--target_labels", "00002.png", "class ids 33", "train ids",
                     only_line=False)


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
  # Each stage says when it starts and how long it took.
  for stage in ("[1/5] segmenter: training a small U-Net on Y's labels (20 steps) ...",
                "[2/5] segmenting F(X), X once", "[3/5] flips:", "[4/5] detail:",
                "[5/5] report:"):
    assert stage in result.stderr, stage
  assert result.stderr.count(": done in ") == 5
  report = json.loads((out / "report.json").read_text())
  assert set(report["metrics"]) == {"flips", "detail"}  # no labels for X: no semantic section
  assert any("seg(X)" in note for note in report["notes"])
  markdown = (out / "report.md").read_text()
  assert "| flip_rate |" in markdown and "| instances |" in markdown
  assert (out / "flips_worst_0.png").exists()


@pytest.mark.slow
def test_offline_report_labels_the_random_feature_network_and_has_flips_and_detail(
    folders, tmp_path, caplog):
  caplog.set_level(logging.INFO)
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
                                 "KD_inception_random_init_std",
                                 "KD_inception_random_init_mean_x1e3",
                                 "KD_inception_random_init_std_x1e3", "kid_subset_size"}
  assert metrics["fid"]["kid_subset_size"] == 4
  assert "FD_inception_random_init(X,Y)" in metrics["domain_gap"]
  assert 0.0 <= metrics["flips"]["flip_rate"] <= 1.0
  assert {"instances", "instances/pole", "instances/traffic sign"} <= set(metrics["detail"])
  assert 0.0 <= metrics["semantic"]["mIoU"] <= 1.0
  assert set(metrics["downstream"]) == {"mIoU_trained_on_X", "mIoU_trained_on_F(X)", "mIoU_gain"}
  assert any("NOT FID" in note for note in report["notes"])
  # The resize mode is named, as papers' FIDs differ by it (clean-fid's modes).
  assert report["inputs"]["fid_resize_mode"] == "legacy_tensorflow"
  assert any("fid_resize_mode=legacy_tensorflow" in note for note in report["notes"])
  markdown = (out / "report.md").read_text()
  assert "| flip_rate |" in markdown and "| instances |" in markdown
  assert "FD_inception_random_init" in markdown and "| FID |" not in markdown
  for pictures in report["pictures"].values():
    for picture in pictures:
      assert (out / picture).exists() and f"]({picture})" in markdown
  assert report["pictures"]["flips"] == ["flip_matrix.png", "flips_worst_0.png",
                                         "flips_worst_1.png"]
  # Every section announces itself, numbered, and says how long it took.
  stages = [message for message in caplog.messages if message.startswith("evaluate [")]
  for number, section in enumerate(["feature network", "fid", "domain_gap", "segmenter",
                                    "segmenting", "semantic", "flips", "detail", "downstream",
                                    "report"], 1):
    assert any(message.startswith(f"evaluate [{number}/10] {section}") and "done in" in message
               for message in stages), (section, stages)


@pytest.fixture(scope="module")
def detail_folders(tmp_path_factory):
  """The detail world's val scenes: sim_detail (X), real_detail and real_mismatch (= ideal)."""
  root = tmp_path_factory.mktemp("toy_detail")
  toy_streets.write_folder(str(root), 3, style="detail", split="val", height=64, width=128)
  return root


def test_report_goes_to_a_bucket_with_excess_flips_and_detail_beside_the_ideal(
    detail_folders, memory_bucket):
  out = epath.Path(memory_bucket) / "eval"
  sim, real = detail_folders / "sim_detail", detail_folders / "real_detail"
  written = evaluate.evaluate(
      source=f"folder:{sim / 'images'}", labels=str(sim / "labels"),
      translated=str(real / "images"), target=str(real / "images"),
      target_labels=str(real / "labels"),
      ideal=f"folder:{detail_folders / 'real_mismatch' / 'images'}", out=str(out),
      fd_network="none", segmenter_steps=5, downstream_steps=0, worst_k=1, batch_size=2,
      progress=False)
  report = json.loads((out / "report.json").read_text())
  assert report == written
  flip_metrics, detail_metrics = report["metrics"]["flips"], report["metrics"]["detail"]
  # F(X) is the ideal translation, image for image: nothing in excess.
  assert flip_metrics["excess_flip_rate"] == 0.0
  assert flip_metrics["ideal/flip_rate"] == flip_metrics["flip_rate"]
  assert all(value == 0.0 for name, value in flip_metrics.items()
             if name.startswith("excess_flip/"))
  # Instances came from sim_detail/instances, beside the labels: lights have states.
  assert any(f"{sim / 'instances'}" in note for note in report["notes"])
  assert detail_metrics["instances"] > 0 and "lights_checked" in detail_metrics
  assert detail_metrics["ideal/instances"] == detail_metrics["instances"]
  markdown = (out / "report.md").read_text()
  assert "excess_flip/a->b" in markdown and "| excess_flip_rate | 0 |" in markdown
  for picture in report["pictures"]["flips"]:
    assert (out / picture).exists()
  assert report["pictures"]["detail"] == ["detail_crops.png"]
  assert (out / "detail_crops.png").exists() and "](detail_crops.png)" in markdown
  assert not [path.name for path in out.iterdir() if path.name.startswith(".")]


def test_an_ideal_that_does_not_match_the_source_is_named(detail_folders, tmp_path):
  ideal = tmp_path / "ideal"
  shutil.copytree(detail_folders / "real_mismatch" / "images", ideal)
  os.remove(ideal / "00001.png")
  sim = detail_folders / "sim_detail"
  result = run_cli(f"--source={sim / 'images'}", f"--translated={sim / 'images'}",
                   f"--target={sim / 'images'}", f"--ideal={ideal}", f"--out={tmp_path / 'out'}")
  assert_usage_error(result, f"--ideal={ideal}", "00001.png", "missing 1")
