"""Import PyTorch weights: official VSAIT checkpoints and torchvision's VGG19.

The core works on `dict[str, np.ndarray]` in PyTorch names and layouts (NCHW,
OIHW) and is the only place that knows them; reading `.ckpt`/`.pth` files needs
torch (`pip install 'i2i_jax[torch]'`) and never unpickles arbitrary objects
(`torch.load(weights_only=True)`).

CLI (writes an Orbax checkpoint that `i2i_jax.translate --workdir` and
`i2i_jax.train` can start from):

  python -m i2i_jax.convert --checkpoint=vsait.ckpt --config=configs/vsait.py \
      --workdir=/tmp/imported
"""

import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from i2i_jax.models import vgg, vsait

StateDict = Mapping[str, np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
VGG19_SHA256_PREFIX = "dcbb9e9d"  # torchvision names files after their sha256


class ConversionError(ValueError):
  """A checkpoint does not fit the model: names the parameter and both shapes."""


def _conv(w: np.ndarray) -> np.ndarray:
  """OIHW (also depthwise [C, 1, k, k]) -> HWIO."""
  return w.transpose(2, 3, 1, 0)


def _conv1x1_as_dense(w: np.ndarray) -> np.ndarray:
  """[out, in, 1, 1] -> [in, out]."""
  return w[:, :, 0, 0].T


def _flatten(w: np.ndarray) -> np.ndarray:
  return w.reshape(-1)


def _identity(w: np.ndarray) -> np.ndarray:
  return w


# Inverse of each transform (our layout -> PyTorch's).
_TO_TORCH: dict[Transform, Transform] = {
    _conv: lambda w: w.transpose(3, 2, 0, 1),
    _conv1x1_as_dense: lambda w: w.T[:, :, None, None],
    _flatten: lambda w: w.reshape(1, -1, 1, 1),
    _identity: lambda w: w,
}


def _torch_shape(shape: tuple[int, ...], transform: Transform) -> tuple[int, ...]:
  return _TO_TORCH[transform](np.empty(shape, np.bool_)).shape


def _conv_entries(torch_prefix: str, path: tuple[str, ...]) -> Iterator[tuple]:
  yield f"{torch_prefix}.weight", (*path, "kernel"), _conv
  yield f"{torch_prefix}.bias", (*path, "bias"), _identity


def generator_names(res_blocks: int) -> Iterator[tuple[str, tuple[str, ...], Transform]]:
  """(torch name, our path, transform) for every variable of the ResNet generator."""
  encoder_blocks = res_blocks - res_blocks // 2
  decoder_blocks = res_blocks // 2
  params, constants = ("generator", "params"), ("generator", "constants")
  yield from _conv_entries("g_net.encoder.net.0.conv", (*params, "encoder_in", "conv"))
  yield from _conv_entries("g_net.encoder.net.1.conv", (*params, "encoder_down_0", "conv"))
  yield "g_net.encoder.net.2.weight", (*constants, "encoder_blur_0", "kernel"), _conv
  yield from _conv_entries("g_net.encoder.net.3.conv", (*params, "encoder_down_1", "conv"))
  yield "g_net.encoder.net.4.weight", (*constants, "encoder_blur_1", "kernel"), _conv
  blocks = [(f"g_net.encoder.net.{5 + i}", f"encoder_res_{i}") for i in range(encoder_blocks)]
  blocks += [(f"g_net.decoder.net.{i}", f"decoder_res_{i}") for i in range(decoder_blocks)]
  for torch_prefix, name in blocks:
    yield from _conv_entries(f"{torch_prefix}.net.0.conv", (*params, name, "conv_0", "conv"))
    yield from _conv_entries(f"{torch_prefix}.net.1.conv", (*params, name, "conv_1"))
  d = decoder_blocks
  yield f"g_net.decoder.net.{d}.weight", (*constants, "decoder_blur_0", "kernel"), _conv
  yield from _conv_entries(f"g_net.decoder.net.{d + 1}.conv", (*params, "decoder_up_0", "conv"))
  yield f"g_net.decoder.net.{d + 2}.weight", (*constants, "decoder_blur_1", "kernel"), _conv
  yield from _conv_entries(f"g_net.decoder.net.{d + 3}.conv", (*params, "decoder_up_1", "conv"))
  yield from _conv_entries(f"g_net.decoder.net.{d + 4}.conv", (*params, "decoder_out"))


def map_net_names(num_layers: int) -> Iterator[tuple[str, tuple[str, ...], Transform]]:
  for i in range(num_layers):
    yield f"g_net_map.0.{i}.conv.weight", ("map_net", "params", f"conv_{i}", "kernel"), _conv1x1_as_dense
    yield f"g_net_map.0.{i}.conv.bias", ("map_net", "params", f"conv_{i}", "bias"), _identity


def discriminator_names(num_layers: int) -> Iterator[tuple[str, tuple[str, ...], Transform]]:
  for i in range(num_layers):
    # The reference's MLP wraps all but the last conv in a ConvBlock (".conv").
    torch_prefix = f"d_net.net.0.net.{i}" + (".conv" if i < num_layers - 1 else "")
    path = ("discriminator", "params", f"conv_{i}")
    yield f"{torch_prefix}.weight", (*path, "kernel"), _conv1x1_as_dense
    yield f"{torch_prefix}.bias", (*path, "bias"), _identity


def lsh_names(num_maps: int) -> Iterator[tuple[str, tuple[str, ...], Transform]]:
  for i in range(num_maps):
    yield f"lsh_feat.{i}.weight", ("lsh", "constants", f"weight_{i}"), _conv
    yield f"lsh_feat.{i}.ssq_weight", ("lsh", "constants", f"ssq_weight_{i}"), _flatten


def vgg_names(torch_prefix: str = "features") -> Iterator[tuple[str, tuple[str, ...], Transform]]:
  """torchvision's `vgg19().features` convs up to conv5_2."""
  for index, _ in vgg.CONV_LAYERS:
    yield from _conv_entries(f"{torch_prefix}.{index}", ("vgg", "params", f"features_{index}"))


def vsait_names(model_config: ml_collections.ConfigDict, *, with_vgg: bool = False
                ) -> list[tuple[str, tuple[str, ...], Transform]]:
  """Every variable of a VSAIT model in the reference's state-dict names.

  The VGG is excluded by default: official checkpoints carry torchvision's
  ImageNet weights, which `pretrained_vgg19_variables` provides too.
  """
  map_layers = len(tuple(model_config.map_net_channels) or (0, 0))
  names = [*generator_names(model_config.res_blocks), *map_net_names(map_layers),
           *discriminator_names(len(model_config.discriminator_channels)),
           *lsh_names(len(model_config.lsh_kernel_sizes))]
  if with_vgg:
    names += list(vgg_names("feature_extractor.net.features"))
  return names


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def convert_state_dict(state_dict: StateDict,
                       names: list[tuple[str, tuple[str, ...], Transform]],
                       expected: Mapping[str, Any]) -> dict[str, Any]:
  """Converts PyTorch tensors to our variables, checking every name and shape.

  Args:
    state_dict: PyTorch names -> arrays (a "model." prefix, as in Lightning
      checkpoints, is accepted).
    names: (torch name, our path, transform) entries, e.g. from `vsait_names`.
    expected: a variables tree (arrays or `jax.ShapeDtypeStruct`s) with the
      shapes the model needs, e.g. `jax.eval_shape` of `init_variables`.
  Returns:
    A nested dict of float32 numpy arrays with the paths of `names`.
  Raises:
    ConversionError: naming each missing parameter, or the parameter whose
      shape differs, with the shape found and the shape expected (PyTorch layout).
  """
  state_dict = {k.removeprefix("model."): v for k, v in state_dict.items()}
  converted, problems = {}, []
  for torch_name, path, transform in names:
    want = tuple(_get(expected, path).shape)
    want_torch = _torch_shape(want, transform)
    if torch_name not in state_dict:
      problems.append(f"missing parameter {torch_name!r} (expected shape {want_torch})")
      continue
    value = np.asarray(state_dict[torch_name])
    if tuple(value.shape) != want_torch:
      problems.append(f"parameter {torch_name!r} has shape {tuple(value.shape)}, "
                      f"the model expects {want_torch}")
      continue
    _set(converted, path, transform(value).astype(np.float32))
  if problems:
    raise ConversionError("checkpoint does not match the model config:\n  "
                          + "\n  ".join(problems))
  return converted


def export_state_dict(tree: Mapping[str, Any],
                      names: list[tuple[str, tuple[str, ...], Transform]]
                      ) -> dict[str, np.ndarray]:
  """The inverse of `convert_state_dict`: our variables (or gradients) in PyTorch names and layouts."""
  return {torch_name: np.asarray(_TO_TORCH[transform](np.asarray(_get(tree, path))))
          for torch_name, path, transform in names}


def load_torch_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `.ckpt` (Lightning) or `.pth` file into numpy arrays, safely.

  Raises:
    ImportError: torch is not installed (says how to install it).
    FileNotFoundError: naming the file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"no such checkpoint file: {path}")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"reading {path} needs PyTorch: pip install 'i2i_jax[torch]' "
        "(or convert it on a machine that has torch and copy the result)") from e
  loaded = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(loaded, dict) and "state_dict" in loaded:
    loaded = loaded["state_dict"]
  return {k: v.detach().cpu().numpy() for k, v in loaded.items() if hasattr(v, "detach")}


def cache_dir() -> pathlib.Path:
  """$XDG_CACHE_HOME/i2i_jax (default ~/.cache/i2i_jax)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(root) / "i2i_jax"


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def download_vgg19(directory: pathlib.Path | None = None, url: str = VGG19_URL) -> pathlib.Path:
  """Returns torchvision's `vgg19-dcbb9e9d.pth`, downloading and checksumming it once.

  Raises:
    RuntimeError: offline or checksum mismatch, saying where to put the file.
  """
  directory = directory or cache_dir()
  target = directory / url.rsplit("/", 1)[-1]
  if target.is_file():
    return target
  directory.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=directory, suffix=".part", delete=False) as tmp:
    partial = pathlib.Path(tmp.name)
    try:
      with urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, tmp)
    except OSError as e:
      partial.unlink(missing_ok=True)
      raise RuntimeError(
          f"could not download the VGG19 weights from {url} ({e}). Download that file "
          f"on a machine with internet access and put it at {target}") from e
  if not _sha256(partial).startswith(VGG19_SHA256_PREFIX):
    partial.unlink()
    raise RuntimeError(f"checksum mismatch for {url}: expected a sha256 starting with "
                       f"{VGG19_SHA256_PREFIX}; put a good copy at {target}")
  partial.rename(target)
  return target


def pretrained_vgg19_variables(directory: pathlib.Path | None = None) -> dict[str, Any]:
  """torchvision's ImageNet VGG19 as our `vgg` variables ({"params": ...}, up to conv5_2).

  Converted once and cached next to the download as `.npz` (needs torch only the
  first time).
  """
  directory = directory or cache_dir()
  converted = directory / "vgg19-dcbb9e9d-features30.npz"
  names = list(vgg_names())
  if not converted.is_file():
    state_dict = load_torch_file(download_vgg19(directory))
    arrays = {torch_name: state_dict[torch_name] for torch_name, _, _ in names}
    tmp = converted.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.rename(converted)
  with np.load(converted) as stored:
    state_dict = dict(stored)
  expected = vgg_shapes()
  return convert_state_dict(state_dict, names, expected)["vgg"]


def load_vgg_variables(spec: str, seeded: dict[str, Any]) -> dict[str, Any]:
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
  if path.suffix == ".npz":
    with np.load(path) as stored:
      state_dict = dict(stored)
  else:
    state_dict = load_torch_file(path)
  return convert_state_dict(state_dict, list(vgg_names()), vgg_shapes())["vgg"]


def vgg_shapes() -> dict[str, Any]:
  """{"vgg": {"params": ...}} as `jax.ShapeDtypeStruct`s (traced, nothing allocated)."""
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  return {"vgg": jax.eval_shape(vgg.VGG19Features().init, jax.random.key(0), images)}


def import_official_checkpoint(state_dict: StateDict, config: ml_collections.ConfigDict,
                               vgg_from_checkpoint: bool = True) -> dict[str, Any]:
  """An official VSAIT state dict -> our variables for `config.model`.

  Args:
    state_dict: the `state_dict` of an official Lightning checkpoint (names with
      or without the "model." prefix).
    config: our config; `config.model` must describe the same architecture.
    vgg_from_checkpoint: take the VGG from the checkpoint's feature extractor
      (official checkpoints carry it) rather than from `config.model.vgg_weights`.
  """
  modules = vsait.build_modules(config.model)
  hw = (256, 256)  # any size the five LSH kernels fit; only shapes are traced
  shapes = jax.eval_shape(lambda: vsait.init_variables(modules, jax.random.key(0), hw))
  variables = convert_state_dict(
      state_dict, vsait_names(config.model, with_vgg=vgg_from_checkpoint), shapes)
  if not vgg_from_checkpoint:
    variables["vgg"] = load_vgg_variables(config.model.vgg_weights, None)
  return variables


def main(argv: list[str]) -> None:
  from i2i_jax import checkpoint, cli, training  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  checkpoint.quiet_orbax_logs()
  config = _CONFIG.value
  existing = checkpoint.checkpoint_dir(_WORKDIR.value)
  if existing.exists() and any(existing.iterdir()):
    # Never mix an imported step 0 into a run (or another import): its keep policy
    # could delete the run's own checkpoints, and resuming would be ambiguous.
    raise cli.UsageError(f"--workdir={_WORKDIR.value} already holds checkpoints in "
                         f"{existing}; import into a new, empty --workdir")
  try:
    state_dict = load_torch_file(_CHECKPOINT.value)
  except (FileNotFoundError, ImportError) as e:
    raise cli.UsageError(str(e)) from e
  except Exception as e:  # pylint: disable=broad-except
    # torch raises RuntimeError, UnpicklingError, ... for a file that is not a checkpoint.
    raise cli.UsageError(f"--checkpoint={_CHECKPOINT.value} cannot be read as a PyTorch "
                         f"checkpoint: {type(e).__name__}: {e}") from e
  try:
    variables = import_official_checkpoint(state_dict, config, _VGG.value == "checkpoint")
  except (ConversionError, FileNotFoundError, RuntimeError, ValueError) as e:
    raise cli.UsageError(f"--checkpoint={_CHECKPOINT.value}: {e}") from e
  fns = training.make_step_functions(config)
  state = training.create_train_state(fns, jax.tree.map(jnp.asarray, variables))
  try:
    manager = checkpoint.make_manager(_WORKDIR.value, config.checkpoint)
    checkpoint.save(manager, 0, state, None, config, force=True)
    manager.wait_until_finished()
  except OSError as e:
    raise cli.RunError(f"--workdir={_WORKDIR.value}: cannot write the checkpoint: {e}") from e
  print(f"wrote {checkpoint.checkpoint_dir(_WORKDIR.value)}/0 from {_CHECKPOINT.value} "
        "(optimizer states start fresh)")


if __name__ == "__main__":
  # Flags are defined only when run as a program, so that importing the
  # converter (train and translate do) does not claim --config or --workdir.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from i2i_jax import cli  # pylint: disable=g-import-not-at-top

  _CHECKPOINT = flags.DEFINE_string(
      "checkpoint", None, "Official VSAIT Lightning checkpoint (.ckpt) to import.",
      required=True)
  _WORKDIR = flags.DEFINE_string(
      "workdir", None, "A new directory to write the Orbax checkpoint to (a workdir that "
      "`i2i_jax.translate --workdir` and `i2i_jax.train --workdir` accept); one that "
      "already holds checkpoints is refused.", required=True)
  _VGG = flags.DEFINE_enum(
      "vgg", "checkpoint", ["checkpoint", "config"],
      "Take the VGG19 weights from the checkpoint's feature extractor, or from "
      "config.model.vgg_weights.")
  _CONFIG = config_flags.DEFINE_config_file(
      "config", "configs/vsait.py",
      "Config whose `model` block matches the checkpoint's architecture.")
  cli.run(main)
