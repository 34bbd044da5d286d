"""No command that writes files can change a user's input files, whatever the flags.

Each test hashes an input tree, runs every output mode of a writer over it (outputs
beside the inputs, on top of them, inside them), scribbles over every output file
in place as a user editing the results would, and hashes the inputs again.
"""

import hashlib
import itertools
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

from i2i_jax.configs import tiny
from i2i_jax import checkpoint, output_tree
from i2i_jax import translator as translator_lib
from i2i_jax.data import sources
from i2i_jax.data import tfds as i2i_tfds
from i2i_jax.data import toy_streets
from i2i_jax.models import torch_layout
from i2i_jax.models import vsait

REPO = pathlib.Path(__file__).resolve().parents[1]


def _hashes(root: pathlib.Path) -> dict[str, str]:
  """{path relative to root: sha256} of every file under root."""
  return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
          for path in sorted(root.rglob("*")) if path.is_file()}


def _scribble(root: pathlib.Path, skip: str = ""):
  """Overwrites every file under root in place (same inode), as an editor would."""
  for path in root.rglob("*"):
    if path.is_file() and not (skip and skip in path.parts):
      with open(path, "r+b") as f:
        f.write(b"edited")


def _data_set(root: pathlib.Path) -> pathlib.Path:
  """root/D/{images,labels}: a png and a jpg with their labels, in a subfolder too."""
  data = root / "D"
  rng = np.random.default_rng(0)
  for relpath in ("a.png", "sub/b.jpg"):
    for folder, array in (("images", rng.integers(0, 256, (20, 24, 3), np.uint8)),
                          ("labels", rng.integers(0, 19, (20, 24), np.uint8))):
      path = data / folder / relpath
      path.parent.mkdir(parents=True, exist_ok=True)
      if folder == "labels":
        path = path.with_suffix(".png")
      Image.fromarray(array).save(path)
  return data


@pytest.fixture(scope="module")
def generator(tiny_workdir):
  return checkpoint.load_generator(tiny_workdir)


def test_translate_in_every_output_mode_leaves_the_inputs_alone(generator, tmp_path):
  data = _data_set(tmp_path)
  before = _hashes(data)
  source = sources.open_source(f"folder:{data}/images", labels=f"{data}/labels")
  translator = translator_lib.Translator(generator, batch_size=1, bucket_multiple=16,
                                    devices=jax.local_devices()[:1])
  modes = itertools.product(("png", "jpg"), (None, (16, 16)), (False, True), (False, True))
  for index, (image_format, resize, link_labels, overwrite) in enumerate(modes):
    settings = output_tree.Settings(format=image_format, resize=resize)
    options = dict(settings=settings, link_labels=link_labels, overwrite=overwrite,
                   progress=False)
    # On, in and inside the inputs: refused before anything is written.
    for output in (data, data / "images", data / "labels", data / "images" / "out"):
      with pytest.raises(output_tree.OutputConflictError):
        translator_lib.translate_dataset(translator, source, str(output), **options)
    # Beside them: written twice (the second run skips or, with overwrite, redoes).
    output = tmp_path / f"out{index}"
    for _ in range(2):
      summary = translator_lib.translate_dataset(translator, source, str(output), **options)
      assert summary.status == "complete", (image_format, resize, link_labels, overwrite)
    # Linked labels are the originals by design (--link_labels says so).
    _scribble(output, skip="labels" if link_labels else "")
    assert _hashes(data) == before, (image_format, resize, link_labels, overwrite)


def test_toy_streets_writer_never_replaces_a_file_it_did_not_write(tmp_path):
  toy_streets.write_folder(str(tmp_path), 2, "sim", height=16, width=32)
  written = _hashes(tmp_path)
  toy_streets.write_folder(str(tmp_path), 2, "sim", height=16, width=32)  # a rerun: no-op
  assert _hashes(tmp_path) == written
  user_file = tmp_path / "sim" / "images" / "00001.png"
  user_file.write_bytes(b"the user's own image")
  before = _hashes(tmp_path)

  result = subprocess.run(
      [sys.executable, "-m", "i2i_jax.data.toy_streets", "--out", str(tmp_path), "--n", "3",
       "--style", "sim", "--height", "16", "--width", "32"],
      cwd=REPO, capture_output=True, text=True, timeout=300)

  assert result.returncode == 2 and "00001.png" in result.stderr
  assert "Traceback" not in result.stderr
  assert {k: v for k, v in _hashes(tmp_path).items() if k in before} == before


def test_tfds_prepare_refuses_to_write_inside_the_manual_folder(tmp_path):
  manual = tmp_path / "manual"
  _data_set(manual)  # manual/D/{images,labels}: split "D" of image_folder
  before = _hashes(manual)

  with pytest.raises(ValueError, match="inside manual_dir"):
    i2i_tfds.prepare("image_folder", str(manual), str(manual))
  builder = i2i_tfds.prepare("image_folder", str(manual), str(tmp_path / "prepared"))

  assert builder.info.splits["D"].num_examples == 2
  assert _hashes(manual) == before


def test_convert_refuses_a_workdir_that_holds_a_run(generator, tmp_path):
  torch = pytest.importorskip("torch")
  config = tiny.get_config()
  modules = vsait.build_modules(config.model)
  variables = jax.tree.map(np.asarray,
                           vsait.init_variables(modules, jax.random.key(3), (32, 32)))
  state = torch_layout.export_state_dict(
      variables, torch_layout.vsait_names(config.model, with_vgg=True))
  ckpt = tmp_path / "vsait.ckpt"
  torch.save({"state_dict": {k: torch.from_numpy(v.copy()) for k, v in state.items()}}, ckpt)
  run = pathlib.Path(generator.path).parent
  before = _hashes(run)

  result = subprocess.run(
      [sys.executable, "-m", "i2i_jax.convert", f"--checkpoint={ckpt}", f"--workdir={run}",
       "--config=configs/tiny.py"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})

  assert result.returncode == 2, result.stderr[-2000:]
  assert "already holds checkpoints" in result.stderr and "Traceback" not in result.stderr
  assert _hashes(run) == before
