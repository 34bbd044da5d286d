"""Published pretrained weights: downloaded once, checksummed, cached, loaded as our variables.

Two PyTorch files are used: torchvision's ImageNet VGG19 (`VGG19`, the VSA
loss's feature extractor) and torch-fidelity's FID Inception
(`i2i_jax.metrics.inception.FID_WEIGHTS`). `fetch` is the one way to get
either: it downloads into `cache_dir()` ($XDG_CACHE_HOME/i2i_jax, default
~/.cache/i2i_jax), accepts a file only if its sha256 starts with the digits in
its name (the torch.hub convention), and, offline, says where to put a copy.
`cached_state_dict` keeps the arrays a model uses in a `.npz` beside the
PyTorch file, so that only the first use needs torch.
"""

import dataclasses
import hashlib
import os
import pathlib
from typing import IO, Any, Collection
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax import storage
from i2i_jax.models import torch_layout
from i2i_jax.models import vgg


@dataclasses.dataclass(frozen=True)
class WeightsFile:
  """A published weights file: where it is downloaded from and how it is checked.

  Attributes:
    description: what the file is, for messages ("torchvision's VGG19 ImageNet weights").
    url: where it is downloaded from.
    filename: its name in the cache folder.
    sha256_prefix: the first hex digits of its sha256 (those in its published name).
    offline_hint: a sentence on what else to do when it cannot be downloaded.
  """
  description: str
  url: str
  filename: str
  sha256_prefix: str
  offline_hint: str = ""


VGG19 = WeightsFile(
    description="torchvision's VGG19 ImageNet weights",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    filename="vgg19-dcbb9e9d.pth",
    sha256_prefix="dcbb9e9d",
    offline_hint="Or set config.model.vgg_weights to the path of a copy (.pth or .npz).")
# The arrays of vgg19-dcbb9e9d.pth that VGG19Features uses (features.0 to features.30).
_VGG19_ARRAYS_TAG = "features30"


def cache_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME/i2i_jax (default ~/.cache/i2i_jax)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(root) / "i2i_jax"


def _sha256(source: IO[bytes], copy_to: IO[bytes] | None = None) -> str:
  """The sha256 hex digest of the rest of `source`, copied to `copy_to` on the way if given."""
  digest = hashlib.sha256()
  for chunk in iter(lambda: source.read(1 << 20), b""):
    digest.update(chunk)
    if copy_to is not None:
      copy_to.write(chunk)
  return digest.hexdigest()


def fetch(weights: WeightsFile, directory: pathlib.Path | None = None) -> pathlib.Path:
  """The path of `weights` in `directory` (default `cache_dir()`), downloaded the first time.

  The download is written under a temporary name beside its target and renamed
  only when its checksum matches, so an interrupted or wrong download never has
  the final name. A file already there (a copy put in place by hand on an
  offline machine, too) is checked before it is used.

  Raises:
    FileNotFoundError: not in `directory` and the download failed; names the
      URL and the path to put a copy at.
    ValueError: checksum mismatch, of the download (which is not kept) or of
      the file in `directory`; names both and the expected sha256 prefix.
  """
  target = pathlib.Path(directory or cache_dir()) / weights.filename
  expected = f"expected a sha256 starting with {weights.sha256_prefix}"
  if target.is_file():
    with target.open("rb") as f:
      digest = _sha256(f)
    if not digest.startswith(weights.sha256_prefix):
      raise ValueError(
          f"checksum mismatch: {target} has sha256 {digest}, {expected}; it is damaged or "
          f"not {weights.filename}. Delete it and download {weights.url} again.")
    return target
  try:
    with (storage.atomic_write(target) as f,
          urllib.request.urlopen(weights.url, timeout=60) as response):
      digest = _sha256(response, copy_to=f)
      if not digest.startswith(weights.sha256_prefix):
        raise ValueError(
            f"checksum mismatch for {weights.url}: the download has sha256 {digest}, "
            f"{expected}; it was not kept. Put a good copy of {weights.filename} at {target}.")
  except OSError as e:
    raise FileNotFoundError(
        f"could not download {weights.description} from {weights.url} ({e}). Download that "
        f"file on a machine with internet access and put it at {target}. "
        f"{weights.offline_hint}".rstrip()) from e
  return target


def load_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Torch-named arrays from a `.npz` of them, or from a PyTorch file (needs torch)."""
  if path.suffix == ".npz":
    with np.load(path) as stored:
      return dict(stored)
  return torch_layout.load_torch_file(path)


def cached_state_dict(path: pathlib.Path, torch_names: Collection[str], tag: str
                      ) -> dict[str, np.ndarray]:
  """The arrays `torch_names` of a PyTorch file, read with torch only the first time.

  `<stem>.pth` is read once and the named arrays it holds are written to
  `<stem>-<tag>.npz` beside it; later calls (and machines without torch) read
  that. A `.npz` path is read as it is. Names the file lacks are left out, for
  `torch_layout.convert_state_dict` to report.
  """
  if path.suffix == ".npz":
    return load_state_dict(path)
  cached = path.with_name(f"{path.stem}-{tag}.npz")
  if not cached.is_file():
    state_dict = torch_layout.load_torch_file(path)
    with storage.atomic_write(cached) as f:
      np.savez(f, **{name: state_dict[name] for name in torch_names if name in state_dict})
  return load_state_dict(cached)


def vgg_shapes() -> dict[str, Any]:
  """{"vgg": {"params": ...}} as `jax.ShapeDtypeStruct`s (traced, nothing allocated)."""
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return {"vgg": jax.eval_shape(vgg.VGG19Features().init, jax.random.key(0), images)}


def _vgg_variables(state_dict: torch_layout.StateDict) -> dict[str, Any]:
  return torch_layout.convert_state_dict(
      state_dict, list(torch_layout.vgg_names()), vgg_shapes())["vgg"]


def pretrained_vgg19_variables(directory: pathlib.Path | None = None) -> dict[str, Any]:
  """torchvision's ImageNet VGG19 as our `vgg` variables ({"params": ...}, up to conv5_2).

  Downloaded into `directory` (default `cache_dir()`) and converted once; the
  `.npz` of the arrays used (`vgg19-dcbb9e9d-features30.npz`) is enough later on.
  """
  directory = pathlib.Path(directory or cache_dir())
  cached = directory / f"{pathlib.Path(VGG19.filename).stem}-{_VGG19_ARRAYS_TAG}.npz"
  torch_names = [torch_name for torch_name, _, _ in torch_layout.vgg_names()]
  path = cached if cached.is_file() else fetch(VGG19, directory)
  return _vgg_variables(cached_state_dict(path, torch_names, _VGG19_ARRAYS_TAG))


def load_vgg_variables(spec: str, seeded: dict[str, Any] | None) -> dict[str, Any]:
  """The VGG variables named by `config.model.vgg_weights`.

  Args:
    spec: "imagenet" (torchvision's weights, downloaded and cached), "random"
      (keep `seeded`), or a path to torchvision's `.pth` or to a `.npz` of
      torchvision-named arrays ("features.<i>.weight", OIHW).
    seeded: the seeded variables from `init_variables`, returned for "random".
  """
  if spec == "random":
    if seeded is None:
      raise ValueError("config.model.vgg_weights='random' has no seeded weights here; "
                       "name real weights ('imagenet' or a file)")
    return seeded
  if spec == "imagenet":
    return pretrained_vgg19_variables()
  path = pathlib.Path(spec)
  if not path.is_file():
    raise FileNotFoundError(
        f"config.model.vgg_weights={spec!r}: no such file (use 'imagenet', 'random' or a "
        "path to a .pth/.npz of torchvision VGG19 weights)")
  return _vgg_variables(load_state_dict(path))
