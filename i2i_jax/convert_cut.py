"""Official CUT weights (PyTorch state dicts) <-> our CUT parameters (i2i_jax/models/cut.py).

Our modules carry the official module names with "." before an index turned
into "_" (`model.12.conv_block.1` -> `model_12/conv_block_1`, `mlp_0.2` ->
`mlp_0_2`), so every name maps by rule: a 4-D `weight` (OIHW) becomes an HWIO
`kernel`, a 2-D Linear `weight` ([out, in]) an [in, out] `kernel`, a `bias`
stays. The official blur buffers (`*.filt`) are constants of ours (exact
binomial filters) and are checked, not imported.

`load_generator_checkpoint` reads an official `latest_net_G.pth` (as written by
`BaseModel.save_networks`) with `torch.load(weights_only=True)`;
`import_official_network` fits a state dict to a family's module (CUT's
generator, or CycleGAN's, which is CUT's without antialiasing), for
`python -m i2i_jax.convert`.
"""

import os
import re
from typing import Any, Mapping

from flax import linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from i2i_jax.models import cut
from i2i_jax.models import torch_layout

StateDict = Mapping[str, np.ndarray]


def flax_path(torch_name: str) -> tuple[str, ...]:
  """"model.12.conv_block.1.weight" -> ("model_12", "conv_block_1", "kernel")."""
  *modules, leaf = torch_name.split(".")
  path = []
  for part in modules:
    if part.isdigit() and path:
      path[-1] = f"{path[-1]}_{part}"
    else:
      path.append(part)
  return (*path, {"weight": "kernel", "bias": "bias"}[leaf])


def torch_name(path: tuple[str, ...]) -> str:
  """The inverse of `flax_path`: ("mlp_0_2", "kernel") -> "mlp_0.2.weight"."""
  *modules, leaf = path
  return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules]
                  + [{"kernel": "weight", "bias": "bias"}[leaf]])


def _to_ours(value: np.ndarray) -> np.ndarray:
  return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T if value.ndim == 2 else value


def _to_torch(value: np.ndarray) -> np.ndarray:
  return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T if value.ndim == 2 else value


def import_state_dict(state_dict: StateDict, expected: Mapping[str, Any],
                      source: str = "state dict") -> dict[str, Any]:
  """An official network's state dict -> our "params" tree of the same network.

  Args:
    state_dict: official names -> arrays (a "module." prefix of DataParallel is accepted).
    expected: our params tree (arrays or `jax.ShapeDtypeStruct`s) giving names and shapes.
    source: what `state_dict` came from, for error messages.
  Returns:
    A nested dict of float32 numpy arrays shaped like `expected`.
  Raises:
    torch_layout.ConversionError: one line naming `source` and every missing,
      unexpected or misshapen parameter, and blur buffers that differ from ours.
  """
  state_dict = {k.removeprefix("module."): np.asarray(v) for k, v in state_dict.items()}
  wanted = {torch_name(path): (path, tuple(leaf.shape))
            for path, leaf in traverse_util.flatten_dict(expected).items()}
  problems, flat = [], {}
  for name, value in state_dict.items():
    if name.endswith(".filt"):
      size = value.shape[-1]
      factor = 1.0 if size == 3 else 4.0  # Downsample's filter 3; Upsample's 4 (times stride^2)
      if not np.array_equal(value, np.broadcast_to(factor * cut.binomial_filter(size), value.shape)):
        problems.append(f"buffer {name!r} is not the official blur filter our layers use")
    elif name not in wanted:
      problems.append(f"unexpected parameter {name!r} with shape {value.shape}")
  for name, (path, shape) in wanted.items():
    if name not in state_dict:
      problems.append(f"missing parameter {name!r}")
      continue
    value = _to_ours(state_dict[name])
    if value.shape != shape:
      problems.append(f"parameter {name!r} has shape {state_dict[name].shape}, the model "
                      f"expects {_to_torch(np.empty(shape)).shape}")
      continue
    flat[path] = value.astype(np.float32)
  if problems:
    raise torch_layout.ConversionError(f"{source} does not match config.model: "
                                       + "; ".join(problems))
  return traverse_util.unflatten_dict(flat)


def export_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Our params (or gradients) of one network -> official names and PyTorch layouts."""
  return {torch_name(path): _to_torch(np.asarray(value))
          for path, value in traverse_util.flatten_dict(params).items()}


def generator_param_shapes(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Shapes of our generator's params for `config.model` (no computation)."""
  modules = cut.build_modules(model_config)
  images = jnp.zeros((1, 32, 32, model_config.input_nc))
  return jax.eval_shape(lambda: modules.generator.init(jax.random.key(0), images))["params"]


def load_generator_checkpoint(path: str | os.PathLike,
                              model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """An official `latest_net_G.pth` -> our generator params for `config.model` (configs/cut.py).

  Raises:
    FileNotFoundError, ImportError (no torch): from `torch_layout.load_torch_file`.
    torch_layout.ConversionError: the checkpoint does not fit `model_config`.
  """
  return import_state_dict(torch_layout.load_torch_file(path),
                           generator_param_shapes(model_config), str(path))


def import_official_network(module: nn.Module, state_dict: StateDict,
                            source: str = "state dict") -> dict[str, Any]:
  """An official network's state dict -> params of `module`, our module of that network.

  Args:
    module: e.g. a family's `fns.modules.generator` (CUT's `ResnetGenerator`, or
      CycleGAN's, built without antialiasing); it takes [B, H, W, 3] images.
    state_dict: official names -> arrays, e.g. `torch_layout.load_torch_file` of
      a `latest_net_G.pth` (CUT) or `latest_net_G_A.pth` (CycleGAN).
    source: what `state_dict` came from, for error messages.
  Returns:
    A nested dict of float32 numpy arrays: `module`'s "params".
  Raises:
    torch_layout.ConversionError: see `import_state_dict`.
  """
  # Any size the networks take: the parameters' shapes do not depend on it.
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), images)["params"]
  return import_state_dict(state_dict, shapes, source)
