"""Published weights: one checked, cached download for every file, and the VGG19 loader."""

import ast
import dataclasses
import hashlib
import pathlib

import jax
import numpy as np
import pytest

import i2i_jax
from i2i_jax.metrics import inception
from i2i_jax.models import pretrained
from i2i_jax.models import torch_layout

WEIGHTS_FILES = [pytest.param(pretrained.VGG19, id="vgg19"),
                 pytest.param(inception.FID_WEIGHTS, id="fid_inception")]
NOBODY_LISTENS = "http://127.0.0.1:9"  # the discard port: connection refused at once


def _offline(weights: pretrained.WeightsFile, **changes) -> pretrained.WeightsFile:
  return dataclasses.replace(weights, url=f"{NOBODY_LISTENS}/{weights.filename}", **changes)


def _sha256_prefix(content: bytes) -> str:
  return hashlib.sha256(content).hexdigest()[:8]


def _serve(tmp_path: pathlib.Path, weights: pretrained.WeightsFile, content: bytes
           ) -> pathlib.Path:
  """A file with the published file name holding `content`, to download from its file:// URL."""
  served = tmp_path / "served" / weights.url.rsplit("/", 1)[-1]
  served.parent.mkdir()
  served.write_bytes(content)
  return served


@pytest.mark.parametrize("weights", WEIGHTS_FILES)
def test_offline_download_says_where_to_put_the_file(tmp_path, weights):
  offline = _offline(weights)
  with pytest.raises(FileNotFoundError) as error:
    pretrained.fetch(offline, tmp_path)
  message = str(error.value)
  assert str(tmp_path / weights.filename) in message
  assert offline.url in message and weights.offline_hint in message
  assert not list(tmp_path.iterdir())  # no partial file left behind


@pytest.mark.parametrize("weights", WEIGHTS_FILES)
def test_cached_file_is_used_without_network(tmp_path, monkeypatch, weights):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  cached = tmp_path / "i2i_jax" / weights.filename
  cached.parent.mkdir()
  cached.write_bytes(b"weights")
  assert pretrained.fetch(_offline(weights, sha256_prefix=_sha256_prefix(b"weights"))) == cached


@pytest.mark.parametrize("weights", WEIGHTS_FILES)
def test_download_is_checked_then_cached(tmp_path, weights):
  content = b"the published weights"
  served = _serve(tmp_path, weights, content)
  published = dataclasses.replace(weights, url=served.as_uri(),
                                  sha256_prefix=_sha256_prefix(content))
  cache = tmp_path / "cache"
  path = pretrained.fetch(published, cache)
  assert path == cache / weights.filename and path.read_bytes() == content
  assert [p.name for p in cache.iterdir()] == [weights.filename]
  served.unlink()
  assert pretrained.fetch(published, cache) == path  # from the cache, the URL is gone


@pytest.mark.parametrize("weights", WEIGHTS_FILES)
def test_download_with_a_checksum_mismatch_is_rejected_and_not_kept(tmp_path, weights):
  served = _serve(tmp_path, weights, b"not the real weights")
  cache = tmp_path / "cache"
  with pytest.raises(ValueError, match="checksum mismatch") as error:
    pretrained.fetch(dataclasses.replace(weights, url=served.as_uri()), cache)
  message = str(error.value)
  assert f"sha256 starting with {weights.sha256_prefix}" in message
  assert str(cache / weights.filename) in message
  assert not list(cache.iterdir())  # neither the target nor a partial file


@pytest.mark.parametrize("weights", WEIGHTS_FILES)
def test_cached_file_with_a_checksum_mismatch_is_rejected(tmp_path, weights):
  cached = tmp_path / weights.filename
  cached.write_bytes(b"not the weights")
  with pytest.raises(ValueError, match="checksum mismatch") as error:
    pretrained.fetch(_offline(weights), tmp_path)
  assert str(cached) in str(error.value) and weights.sha256_prefix in str(error.value)


@pytest.fixture(scope="module")
def vgg_variables():
  """Random {"params": ...} of the VGG19 features, as numpy."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32),
                      pretrained.vgg_shapes()["vgg"])


def _vgg_state_dict(vgg_variables):
  """torchvision's names and layouts for `vgg_variables`."""
  return torch_layout.export_state_dict({"vgg": vgg_variables}, list(torch_layout.vgg_names()))


def test_vgg_from_an_npz_file_and_a_missing_file(tmp_path, vgg_variables):
  npz = tmp_path / "vgg.npz"
  np.savez(npz, **_vgg_state_dict(vgg_variables))
  loaded = pretrained.load_vgg_variables(str(npz), None)
  jax.tree.map(np.testing.assert_array_equal, loaded, vgg_variables)
  with pytest.raises(FileNotFoundError, match="nope.pth"):
    pretrained.load_vgg_variables(str(tmp_path / "nope.pth"), None)
  with pytest.raises(ValueError, match="vgg_weights='random'"):
    pretrained.load_vgg_variables("random", None)


def test_imagenet_vgg_is_downloaded_converted_once_then_read_without_torch(
    tmp_path, monkeypatch, vgg_variables):
  torch = pytest.importorskip("torch")
  served = tmp_path / "served" / "vgg19-dcbb9e9d.pth"
  served.parent.mkdir()
  # torchvision's file also holds the classifier, which is left out of the cache.
  state_dict = {**_vgg_state_dict(vgg_variables), "classifier.0.bias": np.ones(4, np.float32)}
  torch.save({name: torch.from_numpy(array) for name, array in state_dict.items()}, served)
  monkeypatch.setattr(pretrained, "VGG19", dataclasses.replace(
      pretrained.VGG19, url=served.as_uri(), sha256_prefix=_sha256_prefix(served.read_bytes())))
  cache = tmp_path / "cache"
  jax.tree.map(np.testing.assert_array_equal,
               pretrained.pretrained_vgg19_variables(cache), vgg_variables)
  with np.load(cache / "vgg19-dcbb9e9d-features30.npz") as converted:
    assert "classifier.0.bias" not in converted.files
  (cache / "vgg19-dcbb9e9d.pth").unlink()
  served.unlink()
  monkeypatch.setattr(torch_layout, "load_torch_file",
                      lambda path: pytest.fail(f"{path} was read with torch again"))
  jax.tree.map(np.testing.assert_array_equal,
               pretrained.pretrained_vgg19_variables(cache), vgg_variables)


def _imported_modules(path: pathlib.Path, package_root: pathlib.Path) -> list[tuple[int, str]]:
  """(line, dotted name) of every module `path` imports, relative imports resolved."""
  package = list(path.relative_to(package_root).parent.parts)
  imported = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      imported += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = package[:len(package) - node.level + 1] if node.level else []
      module = ".".join(base + ([node.module] if node.module else []))
      imported += [(node.lineno, module)]
      imported += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
  return imported


def test_no_module_of_the_package_imports_the_converter_cli():
  """`i2i_jax.convert` is a command line on top; training and evaluation sit below it."""
  package_dir = pathlib.Path(i2i_jax.__file__).parent
  importers = [
      f"{path.relative_to(package_dir.parent)}:{line}"
      for path in sorted(package_dir.rglob("*.py")) if path != package_dir / "convert.py"
      for line, module in _imported_modules(path, package_dir.parent)
      if module == "i2i_jax.convert"]
  assert not importers, f"these import i2i_jax.convert: {importers}"
