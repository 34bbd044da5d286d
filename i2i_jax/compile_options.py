"""XLA compile options of a run's config: what the train step and the translator compile with."""

from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np


def cpu_compiler_options(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The options of config.cpu_compiler_options that this XLA takes, on CPU; else None.

  XLA options for compiling the train step and the translator's generator
  (`Lowered.compile(compiler_options=)`), e.g. the demo's choice of kernels for
  its small convolutions; GPU and TPU compiles never get them, nor do config
  files written before the key existed. They choose how, not what, XLA
  computes, so an option this jaxlib refuses (a name or value of another
  version) is logged as a warning naming the key and left out rather than
  failing the run.
  """
  options = dict(config.get("cpu_compiler_options", None) or {})
  if not options or jax.default_backend() != "cpu":
    return None
  trivial = jax.jit(lambda x: x).lower(np.zeros((), np.float32))
  usable = {}
  for name, value in options.items():
    try:
      trivial.compile(compiler_options={name: value})
      usable[name] = value
    except jax.errors.JaxRuntimeError as e:
      logging.warning("config.cpu_compiler_options.%s=%r left out: this XLA refuses it (%s)",
                      name, value, str(e).split(": ", 1)[-1])
  return usable or None
