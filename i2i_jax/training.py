"""What every model family's train step shares: optimizers from config, micro-batches.

The families themselves (their train state, losses and pure step) live in
`i2i_jax/families/` (docs/model_families.md); the trainer (`i2i_jax/train.py`)
drives whichever one `config.model.family` names.
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(opt_config: ml_collections.ConfigDict, decay_steps: int,
                           decay_factor: float) -> optax.Schedule:
  """`torch.optim.lr_scheduler.StepLR`: lr * factor ** (step // decay_steps).

  Written out rather than `optax.exponential_decay(staircase=True)` because that
  returns float32 for an int32 step count even under `jax_enable_x64`, which
  moves a float64 Adam step by ~1e-12 (outside the reference parity tolerance).
  """
  learning_rate = opt_config.learning_rate

  def schedule(count: jax.Array) -> jax.Array:
    exponent = (count // decay_steps).astype(jnp.result_type(float))
    return learning_rate * decay_factor**exponent

  return schedule


def make_optimizer(opt_config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """`torch.optim.Adam(weight_decay=wd)` with a learning-rate schedule, from optax pieces.

  PyTorch's Adam adds `wd * param` to the gradient *before* the moment
  estimates (L2 regularisation, not AdamW's decoupled decay), hence the order.
  """
  return optax.chain(
      optax.add_decayed_weights(opt_config.weight_decay),
      optax.scale_by_adam(b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps),
      optax.scale_by_learning_rate(schedule),
  )


def micro_batches(images: jax.Array, count: int) -> jax.Array:
  """[B, ...] -> [count, B / count, ...]; micro-batch j holds images j, j + count, ...

  `count` is `config.grad_accum_steps`: k micro-batches of b images take the
  same step as one batch of k*b when every loss is a batch mean and gradients
  are averaged over the micro-batches (`mean_over_micro_batches`).

  Interleaved rather than contiguous so that, with B split over devices in
  contiguous blocks, every micro-batch is spread over all devices.
  """
  if images.shape[0] % count:
    raise ValueError(f"batch of {images.shape[0]} images does not split into "
                     f"config.grad_accum_steps={count} micro-batches")
  return jnp.swapaxes(images.reshape(images.shape[0] // count, count, *images.shape[1:]), 0, 1)


def mean_over_micro_batches(fn, init_tree, xs, count: int):
  """Runs `fn(x) -> (tree, out)` over the leading axis of `xs`.

  Returns (mean of the trees, stacked outs). `init_tree` gives the trees'
  structure (its values are ignored). A single micro-batch is run directly:
  inside a `lax.scan` loop XLA:CPU runs the convolutions ~25x slower (measured
  on the paper config: 100 s vs 3.6 s per step), and most runs do not
  accumulate.
  """
  if count == 1:
    tree, out = fn(jax.tree.map(lambda x: x[0], xs))
    return tree, jax.tree.map(lambda o: o[None], out)

  def body(total, x):
    tree, out = fn(x)
    return jax.tree.map(jnp.add, total, tree), out

  zeros = jax.tree.map(jnp.zeros_like, init_tree)
  total, outs = jax.lax.scan(body, zeros, xs)
  return jax.tree.map(lambda t: t / count, total), outs
