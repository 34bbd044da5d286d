"""PyTorch names and layouts of our variables, and reading PyTorch files.

The only module that knows PyTorch's names and layouts (NCHW, OIHW): every
variable of the VSAIT model, of torchvision's VGG19 and of the FID Inception has
an entry (torch name, our path, transform), and `convert_state_dict` /
`export_state_dict` map a `dict[str, np.ndarray]` in PyTorch names and layouts
to our variables and back, checking every name and shape. Pure numpy apart from
`load_torch_file`, which needs torch (`pip install 'i2i_jax[torch]'`) and never
unpickles arbitrary objects (`torch.load(weights_only=True)`).

Used by `i2i_jax.models.pretrained` (published weights) and the `i2i_jax.convert`
CLI (official checkpoints).
"""

import os
import pathlib
from typing import Any, Callable, Iterator, Mapping

from flax import traverse_util
import ml_collections
import numpy as np

from i2i_jax.models import vgg

StateDict = Mapping[str, np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]
Entry = tuple[str, tuple[str, ...], Transform]  # (torch name, our path, transform)


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


def _conv_entries(torch_prefix: str, path: tuple[str, ...]) -> Iterator[Entry]:
  yield f"{torch_prefix}.weight", (*path, "kernel"), _conv
  yield f"{torch_prefix}.bias", (*path, "bias"), _identity


def generator_names(res_blocks: int) -> Iterator[Entry]:
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


def map_net_names(num_layers: int) -> Iterator[Entry]:
  for i in range(num_layers):
    yield f"g_net_map.0.{i}.conv.weight", ("map_net", "params", f"conv_{i}", "kernel"), _conv1x1_as_dense
    yield f"g_net_map.0.{i}.conv.bias", ("map_net", "params", f"conv_{i}", "bias"), _identity


def discriminator_names(num_layers: int) -> Iterator[Entry]:
  for i in range(num_layers):
    # The reference's MLP wraps all but the last conv in a ConvBlock (".conv").
    torch_prefix = f"d_net.net.0.net.{i}" + (".conv" if i < num_layers - 1 else "")
    path = ("discriminator", "params", f"conv_{i}")
    yield f"{torch_prefix}.weight", (*path, "kernel"), _conv1x1_as_dense
    yield f"{torch_prefix}.bias", (*path, "bias"), _identity


def lsh_names(num_maps: int) -> Iterator[Entry]:
  for i in range(num_maps):
    yield f"lsh_feat.{i}.weight", ("lsh", "constants", f"weight_{i}"), _conv
    yield f"lsh_feat.{i}.ssq_weight", ("lsh", "constants", f"ssq_weight_{i}"), _flatten


def vgg_names(torch_prefix: str = "features") -> Iterator[Entry]:
  """torchvision's `vgg19().features` convs up to conv5_2."""
  for index, _ in vgg.CONV_LAYERS:
    yield from _conv_entries(f"{torch_prefix}.{index}", ("vgg", "params", f"features_{index}"))


def vsait_names(model_config: ml_collections.ConfigDict, *, with_vgg: bool = False
                ) -> list[Entry]:
  """Every variable of a VSAIT model in the reference's state-dict names.

  The VGG is excluded by default: official checkpoints carry torchvision's
  ImageNet weights, which `pretrained.pretrained_vgg19_variables` provides too.
  """
  map_layers = len(tuple(model_config.map_net_channels) or (0, 0))
  names = [*generator_names(model_config.res_blocks), *map_net_names(map_layers),
           *discriminator_names(len(model_config.discriminator_channels)),
           *lsh_names(len(model_config.lsh_kernel_sizes))]
  if with_vgg:
    names += list(vgg_names("feature_extractor.net.features"))
  return names


# torch-fidelity's batch-norm fields for our (collection, leaf).
_BATCH_NORM_FIELDS = {("params", "scale"): "weight", ("params", "bias"): "bias",
                      ("batch_stats", "mean"): "running_mean",
                      ("batch_stats", "var"): "running_var"}


def fid_inception_names(shapes: Mapping[str, Any]) -> list[Entry]:
  """Every variable of the FID Inception in torch-fidelity's state-dict names.

  Our modules carry torch-fidelity's module names (`Mixed_5b.branch1x1.conv`),
  so each entry follows from its path; the classifier (`fc.*`) and
  `num_batches_tracked` have no entry and are ignored by `convert_state_dict`.

  Args:
    shapes: {"params": ..., "batch_stats": ...} of `FIDInceptionV3`, arrays or
      `jax.ShapeDtypeStruct`s (only the paths are read).
  """
  names = []
  for path in traverse_util.flatten_dict(shapes):
    collection, *modules, leaf = path
    prefix = ".".join(modules)
    if leaf == "kernel":
      names.append((f"{prefix}.weight", path, _conv))
    else:
      names.append((f"{prefix}.{_BATCH_NORM_FIELDS[collection, leaf]}", path, _identity))
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
                       names: list[Entry],
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
                      names: list[Entry]
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
