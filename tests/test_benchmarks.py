"""The steady-state arithmetic of benchmarks/translate.py and benchmarks/train_end_to_end.py."""

import importlib
import os

import jax
import numpy as np
import pytest

from i2i_jax import checkpoint
from i2i_jax.configs import tiny
from i2i_jax.models import vsait

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


@pytest.fixture(scope="module")
def benchmarks():
  """The benchmark scripts as modules (they import each other by file name)."""
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(BENCHMARKS)
    yield (importlib.import_module("translate"), importlib.import_module("train_end_to_end"))


def test_steady_state_leaves_out_fill_and_drain_and_counts_device_gaps(benchmarks):
  translate, _ = benchmarks
  Batch = translate.BatchTiming
  batches = [
      Batch(images=4, dispatched=0.0, ready=1.0),  # fill
      Batch(images=4, dispatched=0.5, ready=2.0),  # queued behind batch 0: busy 1.0-2.0
      Batch(images=4, dispatched=3.0, ready=4.0),  # the device waited 2.0-3.0
      Batch(images=1, dispatched=4.5, ready=5.5),  # waited 4.0-4.5; a short batch
      Batch(images=4, dispatched=5.0, ready=9.0),  # drain
  ]
  steady = translate.steady_state(batches, skip=1)
  assert (steady.images, steady.start, steady.end) == (9, 1.0, 5.5)
  assert steady.busy_seconds == pytest.approx(3.0)
  assert steady.idle_fraction == pytest.approx(1.5 / 4.5)
  assert steady.images_per_second == pytest.approx(9 / 4.5)
  with pytest.raises(ValueError, match="5 batches leave no steady window"):
    translate.steady_state(batches, skip=3)


def test_timed_translator_records_each_batch_in_order(benchmarks):
  translate, _ = benchmarks
  config = tiny.get_config()
  module = vsait.build_modules(config.model, "float32").generator
  # Zero weights: the values do not matter here, and compiling the initialiser costs ~15 s.
  variables = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), jax.eval_shape(
      module.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
  generator = checkpoint.LoadedGenerator(config=config, step=0, module=module,
                                         variables=variables, path="zeros:tiny")
  translator = translate.TimedTranslator(generator, batch_size=2, devices=jax.devices()[:1])
  images = np.zeros((5, 32, 32, 3), np.uint8)
  assert translator.translate(images).shape == images.shape
  timings = translator.take_timings()
  assert [t.images for t in timings] == [2, 2, 1]
  assert all(t.dispatched <= t.ready for t in timings)
  assert [t.ready for t in timings] == sorted(t.ready for t in timings)
  assert translator.take_timings() == []


def test_steady_steps_per_second_reads_the_windows_after_warmup(benchmarks):
  _, train_end_to_end = benchmarks
  records = [{"step": 0, "style_distance/source": 3.0},
             {"step": 5, "steps_per_sec": 1.0},
             {"step": 10, "steps_per_sec": 2.0},
             {"step": 10, "eval/detail/retention": 0.5},
             {"step": 15, "steps_per_sec": 4.0},
             {"step": 17, "steps_per_sec": 2.0}]  # the last step, a short window
  # Windows (5, 10], (10, 15], (15, 17]: 12 steps in 2.5 + 1.25 + 1 seconds.
  assert train_end_to_end.steady_steps_per_second(records, 5) == (pytest.approx(12 / 4.75), 12)
  # A window that starts before the warm-up ends is left out whole.
  assert train_end_to_end.steady_steps_per_second(records, 6) == (pytest.approx(7 / 2.25), 7)
  with pytest.raises(ValueError, match="no steps_per_sec record after step 17"):
    train_end_to_end.steady_steps_per_second(records, 17)


def test_step_profile_sums_device_time_by_kind_over_the_devices_streams_only():
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(BENCHMARKS)
    step_profile = importlib.import_module("step_profile")
  meta = lambda pid, tid, kind, name: {"ph": "M", "pid": pid, "tid": tid, "name": kind,
                                       "args": {"name": name}}
  kernel = lambda ts, dur, name, tid=7: {"ph": "X", "pid": 1, "tid": tid, "ts": ts, "dur": dur,
                                         "name": name, "args": {"hlo_op": "command_buffer_3"}}
  events = [
      meta(1, None, "process_name", "/device:GPU:0"), meta(1, 7, "thread_name", "Stream #14"),
      meta(1, 8, "thread_name", "Stream #15(MemcpyH2D)"),
      meta(2, None, "process_name", "/host:CPU"),
      # Two steps; the stream's kernels overlap the copy on the other stream.
      kernel(0, 40, "sm90_xmma_fprop_implicit_gemm_bf16"), kernel(40, 20, "loop_convert_fusion"),
      kernel(50, 30, "MemcpyH2D", tid=8), kernel(100, 40, "sm90_xmma_fprop_implicit_gemm_bf16"),
      kernel(140, 30, "input_concatenate_fusion_85"), kernel(190, 10, "nvjet_sm90_tss_256x128"),
      {"ph": "X", "pid": 2, "tid": 3, "ts": 0, "dur": 500, "name": "PjitFunction(step)"}]
  on_device = step_profile.device_events(events, "/device:")
  assert len(on_device) == 6  # the host's dispatch is not device time
  # Busy: [0, 80) and [100, 170) and [190, 200) of a 200 us span.
  assert step_profile.busy_seconds(on_device) == (pytest.approx(160e-6), pytest.approx(200e-6))
  assert step_profile.kind_of("loop_convert_fusion") == "other fusion"  # "convert" is no conv
  assert step_profile.kind_of("cudnn-conv-bw-filter.47") == "convolution, weight gradient"
  summary = step_profile.summarise(on_device, steps=2, top=3)
  assert "device busy 0.08 ms/step of 0.10 ms/step traced wall (80 % busy)" in summary
  assert "| convolution, forward | 0.040 | 47.1% |" in summary  # 80 of 170 us of kernels
  assert "| concatenate fusion | 0.015 | 17.6% |" in summary
  assert "| matrix product | 0.005 | 5.9% |" in summary


@pytest.mark.parametrize("shape,pad", [((2, 5, 7, 3), 1), ((1, 9, 8, 2), 3)])
def test_reflect_pad_candidates_equal_jnp_pad_and_its_gradient(shape, pad):
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(BENCHMARKS)
    reflect_pad = importlib.import_module("reflect_pad")
  x = jax.random.normal(jax.random.key(0), shape)
  w = jax.random.normal(jax.random.key(1), (shape[0], shape[1] + 2 * pad, shape[2] + 2 * pad,
                                            shape[3]))
  grad = lambda fn: jax.grad(lambda x: jax.numpy.sum(fn(x, pad) * w))(x)
  expected = reflect_pad.by_concatenate(x, pad)
  assert expected.shape == w.shape
  for name, fn in reflect_pad.CANDIDATES.items():
    np.testing.assert_array_equal(fn(x, pad), expected, err_msg=name)
    np.testing.assert_allclose(grad(fn), grad(reflect_pad.by_concatenate), rtol=1e-6,
                               atol=1e-6, err_msg=name)


def test_step_costs_set_the_ablation_tables_step_time_ratio_and_configs_match_the_table():
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(BENCHMARKS)
    toy_world_table = importlib.import_module("toy_world_table")
    step_cost = importlib.import_module("step_cost")
  row = lambda method, speed: {
      "method": method, "world": "mismatch", "seeds": [0], "excess_pairs": [{}],
      "excess_by_class": [{name: 0.0 for name in toy_world_table.SHRUNK_CLASSES}],
      "steps_per_sec": [speed], **{c: [0.5] for c in toy_world_table.COLUMNS}}
  rows = [row("vanilla", 1.0), row("spade", 4.0)]  # spade ran on an idle machine
  from_logs = toy_world_table.markdown(rows)
  assert "from the logs" in from_logs and "4.000 (×0.25)" in from_logs
  side_by_side = toy_world_table.markdown(rows, {"vanilla": 400.0, "spade": 420.0})
  assert "side by side" in side_by_side and "4.000 (×1.05)" in side_by_side
  # step_cost builds each method's config from the table's own overrides, typed.
  config = step_cost.method_config("spade+label_bound", "mismatch", "/segmenter")
  assert config.model.label_conditioned_generator is True
  assert config.model.label_bound_discriminator is True
  assert config.data.with_target_labels is True and config.data.with_labels is True
  assert config.model.semantic_segmenter == "/segmenter"
  assert step_cost.method_config("semantic", "mismatch", "/s").loss.semantic_coef == 1.0
  assert not step_cost.method_config("vanilla", "mismatch", "/s").data.with_labels
