"""Prepared training data (`python -m i2i_jax.prepare`, `prepared:DIR` sources).

Real toy_streets scenes in tmp folders, the real grain pipeline, real Orbax
checkpoints of the iterator.
"""

import hashlib
import json
import os
import threading

from absl import flags
import grain
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from i2i_jax import cli
from i2i_jax import prepare
from i2i_jax.configs import vsait
from i2i_jax.data import pipeline
from i2i_jax.data import prepared
from i2i_jax.data import preprocess
from i2i_jax.data import sources
from i2i_jax.data import toy_streets

# grain's worker processes read absl flags; absl.app.run parses them in main().
flags.FLAGS.mark_as_parsed()

PREPROCESS = "resize(24,48)|random_crop(16,16)|flip_lr|value_range(-1,1)"


def _write_scenes(root, style, n, labels_root=None, ext="png"):
  """n toy_streets scenes of 40x72 (labels beside them), in two subfolders."""
  for i in range(n):
    image, label = toy_streets.render(i, style, 40, 72)
    relpath = os.path.join(f"part{i % 2}", f"scene{i:03d}")
    os.makedirs(os.path.join(root, f"part{i % 2}"), exist_ok=True)
    Image.fromarray(image).save(os.path.join(root, f"{relpath}.{ext}"), quality=95)
    if labels_root:
      os.makedirs(os.path.join(labels_root, f"part{i % 2}"), exist_ok=True)
      Image.fromarray(label).save(os.path.join(labels_root, f"{relpath}.png"))


@pytest.fixture(name="data")
def _data(tmp_path):
  _write_scenes(str(tmp_path / "source"), "sim", 9, labels_root=str(tmp_path / "labels"))
  _write_scenes(str(tmp_path / "target"), "real", 7, ext="jpg")
  return tmp_path


def _config(data, source, target, **overrides):
  config = vsait.get_config().data
  config.update(source=source, target=target, source_labels="", with_labels=True,
                batch_size=3, preprocess=PREPROCESS, read_threads=2,
                prefetch_buffer_size=2)
  config.update(overrides)
  return config


def _prepare_both(data, **kwargs):
  prepare.prepare(f"folder:{data / 'source'}", str(data / "prep_source"), PREPROCESS,
                  labels=str(data / "labels"), **kwargs)
  prepare.prepare(f"folder:{data / 'target'}", str(data / "prep_target"), PREPROCESS, **kwargs)
  return f"prepared:{data / 'prep_source'}", f"prepared:{data / 'prep_target'}"


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_same_batches(batches_a, batches_b):
  for a, b in zip(batches_a, batches_b, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _hashes(folder):
  return {path: hashlib.sha256(path.read_bytes()).hexdigest()
          for path in folder.rglob("*") if path.is_file()}


def test_split_preparable_takes_the_leading_deterministic_uint8_ops():
  assert preprocess.split_preparable(
      "resize(256,512)|random_crop(256,256)|flip_lr|value_range(-1,1)") == (
          "resize(256,512)", "random_crop(256,256)|flip_lr|value_range(-1,1)")
  assert preprocess.split_preparable("resize(8,8)|center_crop(4,4)|flip_lr") == (
      "resize(8,8)|center_crop(4,4)", "flip_lr")
  assert preprocess.split_preparable("value_range(-1,1)|resize(8,8)") == (
      "", "value_range(-1,1)|resize(8,8)")
  assert preprocess.split_preparable("flip_lr|resize(8,8)") == ("", "flip_lr|resize(8,8)")


@pytest.mark.parametrize("codec", sorted(prepared.CODECS))
def test_every_codec_stores_the_exact_pixels_and_labels(codec):
  image, label = toy_streets.render(3, "real", 24, 40)
  record = prepared.decode_record(
      prepared.encode_record({"image": image, "label": label, "relpath": "a/b.png"}, codec),
      codec)
  assert record["relpath"] == "a/b.png"
  np.testing.assert_array_equal(record["image"], image)
  np.testing.assert_array_equal(record["label"], label)
  assert record["image"].dtype == record["label"].dtype == np.uint8


def test_prepared_sources_give_the_on_the_fly_batches(data):
  prepared_source, prepared_target = _prepare_both(data)
  on_the_fly = _config(data, f"folder:{data / 'source'}", f"folder:{data / 'target'}",
                       source_labels=str(data / "labels"))
  from_prepared = _config(data, prepared_source, prepared_target)
  expected = _take(pipeline.make_train_iterator(on_the_fly, seed=5, process_index=0,
                                                process_count=1), 5)
  got = _take(pipeline.make_train_iterator(from_prepared, seed=5, process_index=0,
                                           process_count=1), 5)
  assert set(got[0]) == {"source", "target", "source_label"}
  _assert_same_batches(got, expected)  # 15 of 9 and 7 records: past an epoch's end too
  source = sources.open_source(prepared_source)
  assert (len(source), source.has_labels, source.preprocess) == (9, True, "resize(24,48)")
  assert source[0]["relpath"] == "part0/scene000.png"


@pytest.mark.parametrize("workers", [0, 1])
def test_restored_iterator_over_prepared_sources_continues_bit_exactly(data, tmp_path,
                                                                       workers):
  config = _config(data, *_prepare_both(data), worker_count=workers)
  iterator = pipeline.make_train_iterator(config, seed=0, process_index=0, process_count=1)
  _take(iterator, 3)
  manager = ocp.CheckpointManager(
      tmp_path / "ckpt", item_names=("data",),
      item_handlers={"data": grain.checkpoint.CheckpointHandler()})
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
  manager.wait_until_finished()
  expected = _take(iterator, 4)
  iterator.close()
  restored = pipeline.make_train_iterator(config, seed=0, process_index=0, process_count=1)
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  _assert_same_batches(_take(restored, 4), expected)
  restored.close()


def test_a_preprocess_that_does_not_start_with_the_prepared_ops_is_warned_about(
    data, caplog):
  prepared_source, prepared_target = _prepare_both(data)
  config = _config(data, prepared_source, prepared_target,
                   preprocess="resize(20,40)|random_crop(16,16)|value_range(-1,1)")
  batch = next(pipeline.make_train_iterator(config, seed=0, process_index=0, process_count=1))
  assert batch["source"].shape == (3, 16, 16, 3)
  (warning,) = {m for m in caplog.messages if "does not start with it" in m
                and prepared_source in m}
  assert "'resize(24,48)'" in warning and "resize(20,40)" in warning
  with pytest.raises(ValueError, match="carry their labels"):
    sources.open_source(prepared_source, labels=str(data / "labels"))


class _StopAfter(threading.Event):
  """A stop request that arrives after `checks` checks: Ctrl-C at a known image."""

  def __init__(self, checks):
    super().__init__()
    self.checks = checks

  def is_set(self):
    self.checks -= 1
    return self.checks < 0


def test_prepare_skips_bad_inputs_stops_and_resumes_by_shard_in_workers(data, caplog):
  broken = data / "source" / "part1" / "scene003.png"
  broken.write_bytes(broken.read_bytes()[:100])
  out = data / "prep"
  args = (f"folder:{data / 'source'}", str(out), PREPROCESS)
  header = prepare.prepare(*args, labels=str(data / "labels"), shard_size=4,
                           stop=_StopAfter(6))
  assert not header["complete"]
  assert sorted(os.listdir(out)) == ["prepared.json", "shard-00000-of-00003.array_record",
                                     "shard-00000-of-00003.json"]  # shard 1: discarded
  with pytest.raises(ValueError, match="incomplete"):
    sources.open_source(f"prepared:{out}")
  first_shard = os.stat(out / "shard-00000-of-00003.array_record")

  header = prepare.prepare(*args, labels=str(data / "labels"), shard_size=4, workers=2)
  assert os.stat(out / "shard-00000-of-00003.array_record").st_mtime_ns == (
      first_shard.st_mtime_ns)  # kept, not written again
  assert header["complete"] and header["count"] == 8
  assert header["skipped"] == [{"relpath": "part1/scene003.png",
                                "error": header["skipped"][0]["error"]}]
  assert any("'part1/scene003.png'" in m and "skipped" in m for m in caplog.messages)
  fresh = data / "fresh"
  prepare.prepare(args[0], str(fresh), PREPROCESS, labels=str(data / "labels"))
  resumed, one_run = (sources.open_source(f"prepared:{d}") for d in (out, fresh))
  assert len(resumed) == len(one_run) == 8
  for i in range(8):
    a, b = resumed[i], one_run[i]
    assert a["relpath"] == b["relpath"] and a["relpath"] != "part1/scene003.png"
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_prepare_command_refuses_outputs_that_could_touch_inputs_and_exits_1_on_skips(data):
  inputs = {folder: _hashes(data / folder) for folder in ("source", "labels")}

  def run(*flags_given):
    return prepare.main(["prepare", f"--preprocess={PREPROCESS}", "--workers=0",
                         *flags_given])

  source = f"--source=folder:{data / 'source'}"
  for out in (data / "source" / "prep", data / "labels", data,
              data / "source" / "part0" / "scene000.png"):
    for spec in (source, f"--source={data / 'source'}"):  # a bare path is a folder too
      with pytest.raises(cli.UsageError, match="overlap"):
        run(spec, f"--labels={data / 'labels'}", f"--out={out}")
  (data / "other").mkdir()
  (data / "other" / "notes.txt").write_text("mine")
  with pytest.raises(cli.UsageError, match="holds other files"):
    run(source, f"--out={data / 'other'}")
  with pytest.raises(cli.UsageError, match="nothing to store"):
    prepare.main(["prepare", source, f"--out={data / 'x'}", "--preprocess=flip_lr"])
  with pytest.raises(cli.UsageError, match="does not exist"):
    run(f"--source=folder:{data / 'nowhere'}", f"--out={data / 'x'}")
  assert not (data / "x").exists()
  assert {folder: _hashes(data / folder) for folder in inputs} == inputs

  (data / "target" / "part0" / "scene000.jpg").write_bytes(b"")
  assert run(f"--source={data / 'target'}", f"--out={data / 'prep'}") == cli.EXIT_FAILED_INPUTS
  with open(data / "prep" / "prepared.json") as f:
    header = json.load(f)
  assert [s["relpath"] for s in header["skipped"]] == ["part0/scene000.jpg"]
  assert header["count"] == 6 and not header["has_labels"]


@pytest.mark.slow  # 75 s on 2 loaded cores: one compile of the tiny step on 8 devices
def test_training_reads_prepared_sources_and_traces_the_steps_it_is_told_to(data, tmp_path):
  from i2i_jax import train  # pylint: disable=g-import-not-at-top  (JAX: only this test)
  from i2i_jax.configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.update(_config(data, *_prepare_both(data), batch_size=8, with_labels=False))
  config.update(total_steps=2, profile_steps=1, profile_start_step=2, log_images_every=1000)
  state = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(state.step) == 2
  traces = list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0
  # ... and a Perfetto trace beside it (benchmarks/step_profile.py --summarise reads it).
  assert len(list((tmp_path / "run" / "profile").rglob("perfetto_trace.json.gz"))) == 1
