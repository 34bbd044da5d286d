"""Model families: the registry the trainer, checkpoints, translate and evaluators use.

`config.model.family` names an entry of FAMILIES (a config without the key, as
older runs saved it, is "vsait"). A family is usually a module of this package
(docs/model_families.md says how to add one); anything with the attributes of
`Family` works, so a test can register a family of its own.
"""

from collections.abc import Callable, Hashable
from typing import Any, Protocol

import jax
import ml_collections

from i2i_jax.families import cut
from i2i_jax.families import cyclegan
from i2i_jax.families import srunit
from i2i_jax.families import vsait

# The family of configs that do not name one (every run before the key existed).
DEFAULT_FAMILY = "vsait"


class Family(Protocol):
  """What the shared code needs of a model family.

  `fns` is the family's static step object (hashable: jit's static argument).
  A train state is a `flax.struct.dataclass` with at least `step` (int32
  scalar, optimisation steps done) and `variables` ({network name: its
  variable collections}); its other fields (optimizer states, ...) are the
  family's, and it is checkpointed whole.
  """

  make_step_functions: Callable[[ml_collections.ConfigDict], Hashable]
  """config -> fns: modules, optimizers, loss settings; ValueError naming a bad key."""

  init_state: Callable[[Any, jax.Array], Any]
  """(fns, rng) -> a fresh train state; pure and jittable."""

  pretrained_variables: Callable[[ml_collections.ConfigDict, Any], dict[str, Any]]
  """(config, fns) -> {network: variables} read from files the config names, which
  replace `init_state`'s; checks the config around the model (ValueError or
  FileNotFoundError naming the key) before anything is written."""

  train_step: Callable[..., tuple[Any, dict[str, jax.Array]]]
  """(state, batch, fns) -> (state, scalar metrics); pure. Metrics named
  `*_total` show in the progress line, those named `*_lr` are not losses."""

  batch_keys: Callable[[Any], tuple[str, ...]]
  """fns -> the batch entries `train_step` reads ("source", "target", "source_label")."""

  translate: Callable[..., jax.Array]
  """(variables, images [B, H, W, 3] in [-1, 1], fns, source_label=None) -> the
  translations, same shape; `source_label` [B, H, W] when the batch has it."""

  trained_generator: Callable[[ml_collections.ConfigDict, dict[str, Any], Any],
                              tuple[Any, Any]]
  """(saved config, state.variables, compute dtype) -> (module, variables) with
  `module.apply(variables, images)` translating; ValueError when it cannot."""

  is_fsdp_leaf: Callable[[str], bool]
  """a state leaf's path ("variables/lsh/constants/weight_0") -> whether
  config.sharding.fsdp may split it over the devices."""

  parameter_groups: Callable[[dict[str, Any]], dict[str, Any]]
  """state.variables -> {network: trained parameters}, for the parameter table."""


FAMILIES: dict[str, Family] = {"vsait": vsait, "cut": cut, "cyclegan": cyclegan,
                               "srunit": srunit}


def family_name(config: ml_collections.ConfigDict) -> str:
  """config.model.family, or DEFAULT_FAMILY for a config without the key."""
  return config.model.get("family", DEFAULT_FAMILY)


def get(config: ml_collections.ConfigDict) -> Family:
  """The family config.model.family names.

  Raises:
    ValueError: naming the key and the known families.
  """
  name = family_name(config)
  if name not in FAMILIES:
    raise ValueError(f"config.model.family={name!r} is not one of {sorted(FAMILIES)}")
  return FAMILIES[name]
