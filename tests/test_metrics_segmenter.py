"""The small Flax segmenter (training, Orbax round trip), ONNX segmenters and downstream gain."""

import numpy as np
import pytest

from i2i_jax.data import toy_streets
from i2i_jax.metrics import downstream
from i2i_jax.metrics import segmenter

NUM_CLASSES = 19


def toy_pairs(style, split, n, height=32, width=64):
  seeds = toy_streets.split_seeds(style, split)
  pairs = [toy_streets.render(seeds[i], style, height, width) for i in range(n)]
  return [image for image, _ in pairs], [label for _, label in pairs]


def pixel_accuracy(segment_fn, images, labels):
  predicted = segment_fn(np.stack(images))
  labels = np.stack(labels)
  valid = labels != 255
  return float((predicted[valid] == labels[valid]).mean())


def test_training_is_deterministic_learns_and_survives_a_checkpoint(tmp_path):
  images, labels = toy_pairs("sim", "train", 6)
  first = segmenter.train_segmenter(images, labels, NUM_CLASSES, steps=60, batch_size=4, seed=3)
  second = segmenter.train_segmenter(images, labels, NUM_CLASSES, steps=60, batch_size=4, seed=3)
  np.testing.assert_array_equal(first(np.stack(images)), second(np.stack(images)))
  untrained = segmenter.train_segmenter(images, labels, NUM_CLASSES, steps=0, seed=3)
  assert pixel_accuracy(first, images, labels) > pixel_accuracy(untrained, images, labels) + 0.2

  first.save(str(tmp_path / "seg"))
  restored = segmenter.load_segmenter(str(tmp_path / "seg"))
  odd_size = np.stack(images)[:, :30, :50]  # not a multiple of the U-Net's stride
  predicted = restored(odd_size)
  assert predicted.shape == (6, 30, 50) and predicted.dtype == np.int32
  np.testing.assert_array_equal(predicted, first(odd_size))


def test_restore_names_a_folder_that_is_not_a_checkpoint(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    segmenter.FlaxSegmenter.restore(str(tmp_path))


def test_training_rejects_labels_beyond_num_classes():
  images, labels = toy_pairs("sim", "train", 2)
  labels[1][0, 0] = 40
  with pytest.raises(ValueError, match="Label map 1"):
    segmenter.train_segmenter(images, labels, NUM_CLASSES, steps=1)


def _nearest_colour_onnx(path, palette):
  """An ONNX 1x1 convolution whose argmax is the nearest palette colour.

  logit_k = c_k . x - |c_k|^2 / 2, with x the raw [0, 1] pixel (mean 0, std 1).
  """
  onnx = pytest.importorskip("onnx")
  from onnx import helper, numpy_helper, TensorProto  # pylint: disable=g-import-not-at-top
  colours = palette.astype(np.float32) / 255.0
  weight = numpy_helper.from_array(colours[:, :, None, None], "weight")
  bias = numpy_helper.from_array(-0.5 * (colours ** 2).sum(1), "bias")
  graph = helper.make_graph(
      [helper.make_node("Conv", ["image", "weight", "bias"], ["logits"])], "nearest_colour",
      [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
      [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                     ["batch", len(palette), "h", "w"])],
      initializer=[weight, bias])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
  model.ir_version = 8
  onnx.save(model, path)


def test_onnx_segmenter_runs_a_real_onnx_model(tmp_path):
  pytest.importorskip("onnxruntime")
  palette = np.random.RandomState(0).randint(0, 256, size=(NUM_CLASSES, 3)).astype(np.uint8)
  path = str(tmp_path / "nearest_colour.onnx")
  _nearest_colour_onnx(path, palette)
  labels = np.random.RandomState(1).randint(0, NUM_CLASSES, size=(2, 8, 12))
  model = segmenter.load_segmenter(path)
  assert isinstance(model, segmenter.OnnxSegmenter)
  model.mean[:] = 0.0
  model.std[:] = 1.0
  predicted = model(palette[labels])
  assert predicted.dtype == np.int32
  np.testing.assert_array_equal(predicted, labels)


def test_onnx_segmenter_names_a_missing_file(tmp_path):
  pytest.importorskip("onnxruntime")
  with pytest.raises(FileNotFoundError, match="missing.onnx"):
    segmenter.OnnxSegmenter(str(tmp_path / "missing.onnx"))


def test_downstream_gain_is_zero_when_the_translation_is_the_identity():
  images, labels = toy_pairs("sim", "val", 4)
  test_images, test_labels = toy_pairs("real", "val", 3)
  evaluator = downstream.DownstreamGainEvaluator(
      images, labels, test_images, test_labels, steps=20, batch_size=2, seed=0)
  metrics = evaluator.run(images)
  assert set(metrics) == {"mIoU_trained_on_X", "mIoU_trained_on_F(X)", "mIoU_gain"}
  assert metrics["mIoU_gain"] == 0.0  # same data, same steps, same seed
  assert 0.0 < metrics["mIoU_trained_on_X"] <= 1.0


def test_segment_all_batches_images_of_one_size_and_keeps_the_order():
  calls = []

  def brightness_segmenter(images):
    calls.append(images.shape)
    return (images.mean(axis=-1) > 127).astype(np.int32) * 10

  rng = np.random.RandomState(0)
  images = [rng.randint(0, 256, size=shape + (3,)).astype(np.uint8)
            for shape in [(8, 12)] * 3 + [(6, 10)] * 2 + [(8, 12)]]
  predicted = segmenter.segment_all(brightness_segmenter, images, batch_size=2)
  assert calls == [(2, 8, 12, 3), (1, 8, 12, 3), (2, 6, 10, 3), (1, 8, 12, 3)]
  assert [p.dtype for p in predicted] == [np.uint8] * 6
  for image, prediction in zip(images, predicted):
    np.testing.assert_array_equal(prediction, brightness_segmenter(image[None])[0])
