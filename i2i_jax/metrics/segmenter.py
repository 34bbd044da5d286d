"""Segmentation models for the semantic metrics: a small Flax U-Net and ONNX files.

Every model here is a callable `images [B, H, W, 3] uint8 -> class ids [B, H, W]
int32`, which is all the evaluators need.
"""

import json
from collections.abc import Sequence

from etils import epath

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from PIL import Image
import tqdm

from i2i_jax import storage

IGNORE_LABEL = 255


class SmallUNet(nn.Module):
  """A two-level U-Net (about 0.1 M parameters with the default widths)."""
  num_classes: int
  features: tuple[int, ...] = (16, 32, 64)

  @nn.compact
  def __call__(self, images):
    """Per-pixel class logits.

    Args:
      images: [B, H, W, 3] uint8 or float32 in [0, 255]; H and W divisible by
        2 ** (len(features) - 1).

    Returns:
      [B, H, W, num_classes] float32 logits.
    """
    x = images.astype(jnp.float32) / 127.5 - 1.0
    skips = []
    for level, width in enumerate(self.features):
      if level:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      skips.append(x)
    for width, skip in zip(reversed(self.features[:-1]), reversed(skips[:-1])):
      x = jax.image.resize(x, (*skip.shape[:3], x.shape[-1]), "nearest")
      x = jnp.concatenate([x, skip], axis=-1)
      x = nn.relu(nn.Conv(width, (3, 3))(x))
    return nn.Conv(self.num_classes, (1, 1))(x)


class FlaxSegmenter:
  """A trained `SmallUNet`: predicts, saves to and restores from an Orbax checkpoint."""

  def __init__(self, num_classes: int, params, features: Sequence[int] = (16, 32, 64)):
    self.model = SmallUNet(num_classes, tuple(features))
    self.params = params
    self._predict = jax.jit(lambda params, images: jnp.argmax(
        self.model.apply({"params": params}, images), axis=-1).astype(jnp.int32))

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """images: [B, H, W, 3] uint8 -> [B, H, W] int32 class ids."""
    multiple = 2 ** (len(self.model.features) - 1)
    height, width = images.shape[1:3]
    pad = ((0, 0), (0, -height % multiple), (0, -width % multiple), (0, 0))
    labels = self._predict(self.params, np.pad(images, pad, mode="edge"))
    return np.asarray(labels)[:, :height, :width]

  def save(self, directory: epath.PathLike) -> None:
    """Writes `directory/config.json` and the Orbax checkpoint `directory/params`."""
    directory = epath.Path(directory)
    if storage.is_local(directory):
      directory = directory.resolve()  # Orbax wants absolute paths
    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / "params", self.params, force=True)
    checkpointer.wait_until_finished()
    with storage.atomic_write(directory / "config.json", "w") as f:
      json.dump({"num_classes": self.model.num_classes,
                 "features": list(self.model.features)}, f)

  @classmethod
  def restore(cls, directory: epath.PathLike) -> "FlaxSegmenter":
    directory = epath.Path(directory)
    if storage.is_local(directory):
      directory = directory.resolve()
    config_path = directory / "config.json"
    if not config_path.exists():
      raise FileNotFoundError(f"{config_path} not found: {directory} is not a FlaxSegmenter "
                              "checkpoint (written by FlaxSegmenter.save).")
    config = json.loads(config_path.read_text())
    params = ocp.StandardCheckpointer().restore(directory / "params")
    return cls(config["num_classes"], params, config["features"])


class InvalidLabelsError(ValueError):
  """A label map holds class ids beyond the classes; `index` is its position in the sequence."""

  def __init__(self, index: int, message: str):
    super().__init__(message)
    self.index = index


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[h, w, 3] uint8 -> [height, width, 3] uint8 (bilinear)."""
  if image.shape[:2] == (height, width):
    return image
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
  """[h, w] uint8 class ids -> [height, width] uint8 (nearest)."""
  if labels.shape[:2] == (height, width):
    return labels
  return np.asarray(Image.fromarray(labels).resize((width, height), Image.NEAREST))


def segment_all(segment_fn, images: Sequence[np.ndarray], *, batch_size: int = 8,
                progress: str = "") -> list[np.ndarray]:
  """Segments every image once, in batches of up to `batch_size` images of one size.

  The evaluators share these predictions instead of each running the
  segmenter again.

  Args:
    segment_fn: [B, H, W, 3] uint8 -> [B, H, W] integer class ids.
    images: a sequence of [H, W, 3] uint8 (sizes may differ between images).
    batch_size: images per call; consecutive images of one size share a call.
    progress: the title of a tqdm bar over the images; "" for none.

  Returns:
    One [H, W] uint8 class map per image (ids above 254 would not fit and are
    not produced by a 19-class segmenter).
  """
  predictions, batch = [], []

  def flush():
    predicted = np.asarray(segment_fn(np.stack(batch)))
    predictions.extend(np.clip(predicted, 0, IGNORE_LABEL).astype(np.uint8))
    batch.clear()

  with tqdm.trange(len(images), desc=progress, unit="img", disable=not progress,
                   dynamic_ncols=True, leave=False) as bar:
    for index in bar:
      image = np.asarray(images[index])
      if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
        flush()
      batch.append(image)
  if batch:
    flush()
  return predictions


def train_segmenter(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int,
                    *, steps: int = 300, batch_size: int = 8, learning_rate: float = 3e-3,
                    image_size: tuple[int, int] | None = None, seed: int = 0,
                    features: Sequence[int] = (16, 32, 64),
                    progress: bool = False) -> FlaxSegmenter:
  """Trains a `SmallUNet` with Adam and pixel cross-entropy (label 255 ignored).

  The same arguments give the same model: batches are drawn from `seed`.

  Args:
    images: sequence of [H, W, 3] uint8.
    labels: sequence of [H, W] uint8 class ids, aligned with `images`.
    num_classes: number of classes; labels >= num_classes other than 255 are an
      InvalidLabelsError.
    steps, batch_size, learning_rate: optimisation.
    image_size: (height, width) every pair is resized to; default the first image's size.
    seed: seeds the initialisation and the batch order.
    features: U-Net widths.
    progress: tqdm bars over reading the pairs and over the steps (ETA).

  Returns:
    The trained segmenter.
  """
  if len(images) != len(labels) or not len(images):
    raise ValueError(f"Need as many label maps as images (>0); got {len(images)} images "
                     f"and {len(labels)} label maps.")
  height, width = image_size or np.asarray(images[0]).shape[:2]
  with tqdm.trange(len(images), desc="segmenter: reading images and labels", unit="img",
                   disable=not progress, dynamic_ncols=True, leave=False) as reading:
    pairs = [(resize_image(np.asarray(images[i]), height, width),
              resize_labels(np.asarray(labels[i]), height, width)) for i in reading]
  image_array = np.stack([image for image, _ in pairs])
  label_array = np.stack([label for _, label in pairs])
  invalid = (label_array >= num_classes) & (label_array != IGNORE_LABEL)
  if invalid.any():
    index = int(np.argmax(invalid.any(axis=(1, 2))))
    found = ", ".join(str(value) for value in np.unique(label_array[index][invalid[index]])[:5])
    raise InvalidLabelsError(
        index, f"Label map {index} has class ids {found} >= num_classes={num_classes} (other "
        f"than {IGNORE_LABEL}); are they Cityscapes label ids instead of train ids?")
  model = SmallUNet(num_classes, tuple(features))
  params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, height, width, 3), jnp.uint8))["params"]
  optimizer = optax.adam(learning_rate)

  @jax.jit
  def train_step(params, opt_state, batch_images, batch_labels):
    def loss_fn(params):
      logits = model.apply({"params": params}, batch_images)
      valid = batch_labels != IGNORE_LABEL
      losses = optax.softmax_cross_entropy_with_integer_labels(
          logits, jnp.where(valid, batch_labels, 0).astype(jnp.int32))
      return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  opt_state = optimizer.init(params)
  batch_size = min(batch_size, len(image_array))
  rng = np.random.RandomState(seed)
  with tqdm.trange(steps, desc="segmenter: training", unit="step",
                   disable=not progress, dynamic_ncols=True, leave=False) as bar:
    for _ in bar:
      indices = rng.choice(len(image_array), batch_size, replace=False)
      params, opt_state = train_step(params, opt_state, image_array[indices],
                                     label_array[indices])
  return FlaxSegmenter(num_classes, jax.device_get(params), features)


class OnnxSegmenter:
  """An ONNX segmentation model run with onnxruntime.

  The model takes float32 [B, 3, H, W] (NCHW) images, normalised as
  `(x / 255 - mean) / std`, and returns logits [B, K, h, w] (argmax over K) or
  class ids [B, h, w]; predictions of another size are resized (nearest) to H x W.
  """

  def __init__(self, path: epath.PathLike, mean: Sequence[float] = (0.485, 0.456, 0.406),
               std: Sequence[float] = (0.229, 0.224, 0.225)):
    try:
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(f"Running the ONNX segmenter {path} needs onnxruntime "
                        "(pip install onnxruntime).") from e
    if not epath.Path(path).exists():
      raise FileNotFoundError(f"ONNX segmenter {path} not found.")
    self.session = onnxruntime.InferenceSession(epath.Path(path).read_bytes(),
                                                providers=["CPUExecutionProvider"])
    self.input_name = self.session.get_inputs()[0].name
    self.mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    self.std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """images: [B, H, W, 3] uint8 -> [B, H, W] int32 class ids."""
    inputs = (images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - self.mean) / self.std
    (outputs,) = self.session.run(None, {self.input_name: inputs})[:1]
    labels = outputs.argmax(axis=1) if outputs.ndim == 4 else outputs
    height, width = images.shape[1:3]
    return np.stack([resize_labels(label.astype(np.uint8), height, width)
                     for label in labels]).astype(np.int32)


def load_segmenter(path: epath.PathLike):
  """An `OnnxSegmenter` for a `.onnx` file, else a `FlaxSegmenter` checkpoint directory."""
  if epath.Path(path).suffix == ".onnx":
    return OnnxSegmenter(path)
  return FlaxSegmenter.restore(path)

