"""The grain training pipeline over real image folders in tmp_path."""

import logging
import os

from absl import flags
import grain
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from i2i_jax.configs import vsait
from i2i_jax.data import pipeline
from i2i_jax.data import preprocess
from i2i_jax.data import sources
from i2i_jax.data import toy_streets

# grain's worker processes read absl flags; absl.app.run parses them in main().
flags.FLAGS.mark_as_parsed()


def _write_folder(root, n, *, size=(40, 72), labels_root=None, ext="png"):
  """n images (and labels) whose pixels encode their index, in two subfolders."""
  paths = []
  for i in range(n):
    relpath = os.path.join(f"part{i % 2}", f"img{i:03d}.{ext}")
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.full((*size, 3), (i * 7) % 256, np.uint8)
    image[:, : size[1] // 2, 1] = 255 - i  # left half differs: shows flips
    Image.fromarray(image).save(path, quality=95)
    if labels_root:
      label = np.full(size, i % 19, np.uint8)
      label[:, : size[1] // 2] = 255
      label_path = os.path.join(labels_root, os.path.splitext(relpath)[0] + ".png")
      os.makedirs(os.path.dirname(label_path), exist_ok=True)
      Image.fromarray(label).save(label_path)
    paths.append(relpath)
  return paths


def _truncate(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])


def _config(tmp_path, **overrides):
  config = vsait.get_config().data
  config.source = f"folder:{tmp_path / 'source'}"
  config.target = f"folder:{tmp_path / 'target'}"
  config.batch_size = 4
  config.preprocess = "resize(32,64)|random_crop(32,32)|flip_lr|value_range(-1,1)"
  config.read_threads = 2
  config.prefetch_buffer_size = 4
  config.update(overrides)
  return config


@pytest.fixture(name="folders")
def _folders(tmp_path):
  _write_folder(str(tmp_path / "source"), 10, labels_root=str(tmp_path / "labels"))
  _write_folder(str(tmp_path / "target"), 7, ext="jpg")
  return tmp_path


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batches_have_documented_shapes_dtypes_and_range(folders):
  config = _config(folders, with_labels=True,
                   source_labels=str(folders / "labels"))
  batch = next(pipeline.make_train_iterator(config, seed=0, process_index=0,
                                            process_count=2))
  assert set(batch) == {"source", "target", "source_label"}
  for key in ("source", "target"):
    assert batch[key].shape == (2, 32, 32, 3)  # B_host = 4 // 2
    assert batch[key].dtype == np.float32
    assert -1.0 <= batch[key].min() and batch[key].max() <= 1.0
  assert batch["source_label"].shape == (2, 32, 32)
  assert batch["source_label"].dtype == np.uint8


def test_labels_follow_crop_and_flip_of_their_image(folders):
  # Left half: label 255 and green = 255 - i; right half: label i % 19.
  config = _config(folders, with_labels=True, source_labels=str(folders / "labels"),
                   preprocess="random_crop(40,40)|flip_lr(0.5)|value_range(0,255)")
  iterator = pipeline.make_train_iterator(config, seed=3, process_index=0,
                                          process_count=1)
  flipped = 0
  for batch in _take(iterator, 6):
    for image, label in zip(batch["source"], batch["source_label"]):
      red, green = np.round(image[..., 0]), np.round(image[..., 1])
      np.testing.assert_array_equal(label == 255, green != red)
      flipped += int((label[:, -1] == 255).all())
  assert 0 < flipped < 24  # some examples flipped, some not


def test_target_labels_follow_crop_and_flip_of_their_image(folders):
  # The labelled folder as the target (data.with_target_labels); the source without labels.
  config = _config(folders, target=f"folder:{folders / 'source'}", with_target_labels=True,
                   target_labels=str(folders / "labels"),
                   preprocess="random_crop(40,40)|flip_lr(0.5)|value_range(0,255)")
  iterator = pipeline.make_train_iterator(config, seed=5, process_index=0, process_count=1)
  flipped = 0
  for batch in _take(iterator, 6):
    assert "source_label" not in batch
    for image, label in zip(batch["target"], batch["target_label"]):
      red, green = np.round(image[..., 0]), np.round(image[..., 1])
      np.testing.assert_array_equal(label == 255, green != red)
      flipped += int((label[:, -1] == 255).all())
  assert 0 < flipped < 24


def test_truncated_file_is_skipped_logged_and_counted(folders, caplog):
  bad = os.path.join(str(folders / "source"), "part1", "img003.png")
  _truncate(bad)
  records, epoch_size = pipeline.make_domain_dataset(
      f"folder:{folders / 'source'}", preprocess_spec="", seed=0)
  iterator = iter(records)
  first_epoch = [next(iterator) for _ in range(9)]
  good = {f"part{i % 2}/img{i:03d}.png" for i in range(10) if i != 3}
  assert epoch_size == 10
  assert sorted(r["relpath"] for r in first_epoch) == sorted(good)
  assert sum(r["skipped"] for r in first_epoch) == 1
  assert any("part1/img003.png" in m and "truncated" in m for m in caplog.messages)

  train = pipeline.make_train_iterator(_config(folders), seed=0,
                                       process_index=0, process_count=1)
  _take(train, 10)  # 40 source records: four epochs, one bad file in each
  assert train.skipped == {"source": 4, "target": 0}
  assert "source folder:" in train.skipped_summary()
  assert ": 4," in train.skipped_summary()


def test_same_seed_same_batches_other_seed_other_batches(folders):
  config = _config(folders)
  run_a = _take(pipeline.make_train_iterator(config, seed=1, process_index=0,
                                             process_count=1), 6)
  run_b = _take(pipeline.make_train_iterator(config, seed=1, process_index=0,
                                             process_count=1), 6)
  other = _take(pipeline.make_train_iterator(config, seed=2, process_index=0,
                                             process_count=1), 6)
  _assert_same_batches(run_a, run_b)
  assert not all(np.array_equal(a["source"], o["source"])
                 for a, o in zip(run_a, other))


def test_domains_are_shuffled_independently_and_reshuffled_each_epoch(folders):
  records, _ = pipeline.make_domain_dataset(
      f"folder:{folders / 'source'}", preprocess_spec="", seed=0)
  iterator = iter(records)
  epochs = [[next(iterator)["relpath"] for _ in range(10)] for _ in range(3)]
  assert all(sorted(e) == sorted(epochs[0]) for e in epochs)
  assert epochs[0] != sorted(epochs[0])
  assert len({tuple(e) for e in epochs}) == 3


def test_hosts_split_every_global_batch_of_the_single_host_sequence(folders):
  spec = f"folder:{folders / 'source'}"
  one_host, _ = pipeline.make_domain_dataset(spec, preprocess_spec="flip_lr", seed=0)
  iterator = iter(one_host)
  global_sequence = [next(iterator) for _ in range(12)]
  hosts = []
  for host in range(2):
    records, size = pipeline.make_domain_dataset(
        spec, preprocess_spec="flip_lr", seed=0, process_index=host, process_count=2,
        host_batch_size=3)
    assert size == 5
    iterator = iter(records)
    hosts.append([next(iterator) for _ in range(6)])
  for step in range(2):  # global batch = host 0's 3 slots, then host 1's
    expected = global_sequence[6 * step:6 * step + 6]
    got = hosts[0][3 * step:3 * step + 3] + hosts[1][3 * step:3 * step + 3]
    assert [r["relpath"] for r in got] == [r["relpath"] for r in expected]
    for a, b in zip(got, expected):  # augmentation too
      np.testing.assert_array_equal(a["image"], b["image"])
  first_epoch = {r["relpath"] for r in global_sequence[:10]}
  assert len(first_epoch) == 10


@pytest.mark.parametrize("workers", [0, 2])
def test_restored_iterator_continues_with_the_next_batch(folders, tmp_path,
                                                         workers):
  _truncate(os.path.join(str(folders / "target"), "part0", "img002.jpg"))
  config = _config(folders, worker_count=workers)
  iterator = pipeline.make_train_iterator(config, seed=0, process_index=0,
                                          process_count=1)
  _take(iterator, 5)
  manager = ocp.CheckpointManager(
      tmp_path / "ckpt", item_names=("data",),
      item_handlers={"data": grain.checkpoint.CheckpointHandler()})
  manager.save(5, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 4)
  skipped = dict(iterator.skipped)
  iterator.close()

  restored = pipeline.make_train_iterator(config, seed=0, process_index=0,
                                          process_count=1)
  manager.restore(5, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointRestore(restored)))
  _assert_same_batches(_take(restored, 4), expected)
  assert skipped["source"] == 0 and skipped["target"] > 0  # counted in the workers
  assert restored.skipped == skipped
  restored.close()


def test_toy_streets_sources_need_no_files():
  config = vsait.get_config().data
  config.update(source="toy_streets:sim", target="toy_streets:real",
                with_labels=True, batch_size=2, read_threads=2,
                prefetch_buffer_size=2)
  batch = next(pipeline.make_train_iterator(config, seed=0, process_index=0,
                                            process_count=1))
  assert batch["source"].shape == (2, 256, 256, 3)
  assert batch["source_label"].shape == (2, 256, 256)
  assert set(np.unique(batch["source_label"])) <= set(range(19)) | {255}


def test_config_errors_name_the_problem(folders):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    pipeline.make_train_iterator(_config(folders, source="folder:/nowhere"),
                                 seed=0, process_index=0, process_count=1)
  with pytest.raises(ValueError, match="no labels"):
    pipeline.make_train_iterator(_config(folders, with_labels=True), seed=0,
                                 process_index=0, process_count=1)
  with pytest.raises(ValueError, match="batch_size=4"):
    pipeline.make_train_iterator(_config(folders), seed=0, process_index=0,
                                 process_count=3)
  with pytest.raises(ValueError, match="'blur'"):
    preprocess.parse("resize(4,4)|blur(3)")
  with pytest.raises(ValueError, match="random_crop"):
    preprocess.parse("random_crop(4,4,4,4)")


def test_all_broken_files_raise_instead_of_spinning(tmp_path):
  for i in range(3):
    (tmp_path / f"{i}.png").write_bytes(b"")
  records, _ = pipeline.make_domain_dataset(f"folder:{tmp_path}",
                                            preprocess_spec="", seed=0)
  with pytest.raises(RuntimeError, match="could not be read"):
    next(iter(records))


def test_resize_is_nearest_for_labels():
  _, label = toy_streets.render(0, "sim", 64, 128)
  record = {"image": np.zeros((64, 128, 3), np.uint8), "label": label,
            "relpath": "x"}
  resized = preprocess.parse("resize(37,51)")[0].map(record)
  assert resized["label"].shape == (37, 51)
  assert set(np.unique(resized["label"])) <= set(np.unique(label))


def test_every_op_passes_bad_records_through_and_an_op_without_the_base_is_refused():
  bad = sources.bad_record("part1/img003.png", "OSError: truncated")
  rng = np.random.default_rng(0)
  for op in preprocess.parse("resize(4,4)|random_crop(2,2)|center_crop(2,2)|"
                             "flip_lr(1.0)|value_range(-1,1)"):
    out = op.random_map(bad, rng) if isinstance(op, grain.transforms.RandomMap) else op.map(bad)
    assert out == bad, op

  class Blur(grain.transforms.Map):
    def map(self, record):
      return record

  with pytest.raises(TypeError, match="'blur'.*MapOp"):
    preprocess.register("blur")(Blur)
  with pytest.raises(ValueError, match="'blur'"):
    preprocess.parse("blur")


def _warnings_naming(caplog, name):
  return [m for m in caplog.messages if name in m and "skipped" in m]


def test_image_smaller_than_the_crop_is_skipped_counted_and_named_once(folders, caplog):
  tiny = np.zeros((20, 20, 3), np.uint8)
  Image.fromarray(tiny).save(folders / "source" / "tiny 20x20.png")
  records, epoch_size = pipeline.make_domain_dataset(
      f"folder:{folders / 'source'}", preprocess_spec="random_crop(32,32)", seed=0)
  assert epoch_size == 11
  iterator = iter(records)
  three_epochs = [next(iterator) for _ in range(30)]
  assert sum(r["skipped"] for r in three_epochs) == 3
  assert all(r["image"].shape == (32, 32, 3) for r in three_epochs)
  named = _warnings_naming(caplog, "'tiny 20x20.png'")
  assert len(named) == 1 and "20x20" in named[0] and "random_crop(32,32)" in named[0]


def test_each_bad_file_is_named_once_however_many_epochs(folders, caplog):
  caplog.set_level(logging.INFO)
  _truncate(os.path.join(str(folders / "source"), "part1", "img003.png"))
  train = pipeline.make_train_iterator(_config(folders), seed=0,
                                       process_index=0, process_count=1)
  _take(train, 10)  # 40 source records: four epochs
  assert train.skipped == {"source": 4, "target": 0}
  assert len(_warnings_naming(caplog, "part1/img003.png")) == 1
  # 40 good + 4 skipped records: one summary line at the end of each epoch.
  epochs = [m for m in caplog.messages if m.startswith("input pipeline: source epoch")]
  assert [m.split(" done;")[0][len("input pipeline: source "):] for m in epochs] == [
      "epoch 1", "epoch 2", "epoch 3", "epoch 4"]
  assert epochs[-1].endswith(train.skipped_summary())


def test_source_and_target_of_the_same_data_are_warned_about(folders, caplog):
  def warnings_for(**overrides):
    caplog.clear()
    pipeline.make_train_iterator(_config(folders, **overrides), seed=0,
                                 process_index=0, process_count=1)
    return [m for m in caplog.messages if "data.target" in m]

  assert not warnings_for()
  (folders / "link").symlink_to(folders / "source", target_is_directory=True)
  for target in (f"folder:{folders / 'source'}", f"folder:{folders / 'source'}/",
                 f"folder:{folders / 'link'}"):
    (message,) = warnings_for(target=target)
    assert "same data" in message and str(folders / "source") in message
  (message,) = warnings_for(source=f"folder:{folders}")
  assert "inside" in message


def test_images_of_different_sizes_without_resize_name_the_files(folders):
  Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(folders / "source" / "odd.png")
  train = pipeline.make_train_iterator(
      _config(folders, preprocess="value_range(-1,1)", batch_size=11), seed=0,
      process_index=0, process_count=1)
  with pytest.raises(ValueError, match=r"'odd.png' 20x30x3.*data.preprocess"):
    next(train)
