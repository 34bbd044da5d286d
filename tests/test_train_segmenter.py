"""`python -m i2i_jax.train_segmenter`: trains, saves a checkpoint that loads, refuses bad input."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from i2i_jax.data import toy_streets
from i2i_jax.metrics import segmenter as segmenter_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
  # One CPU device, as a user's machine has (the test session fakes 8).
  return subprocess.run([sys.executable, "-m", "i2i_jax.train_segmenter", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu",
                             "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})


def assert_usage_error(result, *expected):
  """Exit 2, one line, no traceback, naming every `expected` string."""
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  for text in expected:
    assert text in lines[0], lines[0]


def test_trains_a_folder_and_a_toy_source_into_a_checkpoint_that_segments(tmp_path):
  toy_streets.write_folder(str(tmp_path / "data"), 3, style="real", split="train", height=32,
                           width=64)
  out = tmp_path / "segmenter"

  result = run_cli("--data=toy_streets:real_detail", f"--data=folder:{tmp_path}/data/real/images",
                   f"--labels={tmp_path}/data/real/labels", "--num_images=3", "--size=32x64",
                   "--steps=3", "--val_images=2", f"--out={out}")

  assert result.returncode == 0, result.stderr
  assert "wrote" in result.stdout and "6 training images" in result.stdout
  assert "toy_streets:real_detail val (2 images): pixel accuracy" in result.stdout
  assert not (tmp_path / ("segmenter" + ".tmp")).exists()
  segmenter = segmenter_lib.load_segmenter(str(out))
  predicted = segmenter(np.zeros((2, 32, 64, 3), np.uint8))
  assert predicted.shape == (2, 32, 64)
  assert predicted.max() < len(toy_streets.CLASS_NAMES)

  # A second run into the same folder is refused (nothing is replaced) ...
  before = sorted(p.name for p in out.rglob("*"))
  assert_usage_error(run_cli("--data=toy_streets:real_detail", "--num_images=2",
                             "--size=32x64", "--steps=1", f"--out={out}"), "--out", "exists")
  assert sorted(p.name for p in out.rglob("*")) == before


@pytest.mark.parametrize("args, expected", [
    (["--data=toy_streets:real_detail", "--size=32"], ("--size=",)),
    (["--data=toy_streets:nowhere"], ("--data=toy_streets:nowhere",)),
    (["--data=folder:/no/such/folder"], ("--data=folder:/no/such/folder",)),
    (["--data=toy_streets:real_detail", "--steps=0"], ("--steps=0",)),
])
def test_bad_flags_are_one_line_naming_them(tmp_path, args, expected):
  assert_usage_error(run_cli(*args, f"--out={tmp_path}/seg"), *expected)
  assert not (tmp_path / "seg").exists()


def test_a_folder_without_labels_is_refused(tmp_path):
  toy_streets.write_folder(str(tmp_path / "data"), 2, style="real", split="train", height=32,
                           width=64)
  assert_usage_error(run_cli(f"--data=folder:{tmp_path}/data/real/images", "--size=32x64",
                             f"--out={tmp_path}/seg"), "has no labels")


def _hashes(folder):
  return {path: hashlib.sha256(path.read_bytes()).hexdigest()
          for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("out", ["data/real/images", "data/real/labels/seg", "data"])
def test_an_out_over_an_input_or_label_folder_is_refused_even_with_overwrite(tmp_path, out):
  toy_streets.write_folder(str(tmp_path / "data"), 2, style="real", split="train", height=32,
                           width=64)
  before = _hashes(tmp_path / "data")
  assert_usage_error(run_cli(f"--data=folder:{tmp_path}/data/real/images",
                             f"--labels={tmp_path}/data/real/labels", "--size=32x64",
                             "--steps=1", "--overwrite", f"--out={tmp_path / out}"),
                     "overlaps the input folder")
  assert _hashes(tmp_path / "data") == before
