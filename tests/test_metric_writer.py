"""i2i_jax.metric_writer: metrics.jsonl beside the TensorBoard events, and its reader."""

import json
import logging
import time

import jax
import pytest

from i2i_jax import metric_writer


def _lines(workdir):
  return (workdir / metric_writer.METRICS_FILE).read_text().splitlines()


def test_one_json_line_per_scalar_write_with_step_wall_time_and_every_scalar(tmp_path):
  before = time.time()
  writer = metric_writer.MetricWriter(tmp_path)
  writer.write_scalars(1, {"g_total": 2.5, "d_total": 0.75})
  writer.write_scalars(2, {"style_distance/translated": 0.125})
  lines = _lines(tmp_path)  # complete before close: each line is flushed
  writer.close()
  records = [json.loads(line) for line in lines]
  assert [record["step"] for record in records] == [1, 2]
  assert records[0]["g_total"] == 2.5 and records[0]["d_total"] == 0.75
  assert set(records[1]) == {"step", "wall_time", "style_distance/translated"}
  assert before <= records[0]["wall_time"] <= records[1]["wall_time"] <= time.time()
  assert list((tmp_path / metric_writer.TENSORBOARD_DIR).glob("events.out.tfevents.*"))


def test_non_finite_values_are_null_and_every_line_is_strict_json(tmp_path):
  writer = metric_writer.MetricWriter(tmp_path)
  writer.write_scalars(3, {"nan": float("nan"), "inf": float("inf"), "ok": 1.0})
  writer.close()
  [line] = _lines(tmp_path)

  def reject(constant):
    raise AssertionError(f"{constant} is not JSON")

  record = json.loads(line, parse_constant=reject)
  assert record["nan"] is None and record["inf"] is None and record["ok"] == 1.0


def test_reader_skips_a_torn_last_line_and_a_resumed_writer_drops_it(tmp_path):
  writer = metric_writer.MetricWriter(tmp_path)
  writer.write_scalars(1, {"g_total": 1.0})
  writer.write_scalars(2, {"g_total": 2.0})
  writer.close()
  path = tmp_path / metric_writer.METRICS_FILE
  with open(path, "a") as f:
    f.write('{"step": 3, "g_to')  # killed while writing step 3
  assert [r["step"] for r in metric_writer.read_metrics(path)] == [1, 2]

  resumed = metric_writer.MetricWriter(tmp_path)
  resumed.write_scalars(3, {"g_total": 3.0})
  resumed.close()
  records = metric_writer.read_metrics(path)
  assert [(r["step"], r["g_total"]) for r in records] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_object_store_workdirs_copy_the_old_lines_into_the_new_file(tmp_path, monkeypatch):
  """gs:// cannot append: the resumed writer rewrites the file with the old lines first."""
  writer = metric_writer.MetricWriter(tmp_path)
  writer.write_scalars(1, {"g_total": 1.0})
  writer.close()
  monkeypatch.setattr(metric_writer, "_appends_in_place", lambda path: False)
  resumed = metric_writer.MetricWriter(tmp_path)
  resumed.write_scalars(2, {"g_total": 2.0})
  resumed.close()
  records = metric_writer.read_metrics(tmp_path / metric_writer.METRICS_FILE)
  assert [(r["step"], r["g_total"]) for r in records] == [(1, 1.0), (2, 2.0)]


def test_only_process_0_writes(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  writer = metric_writer.MetricWriter(tmp_path)
  writer.write_scalars(1, {"g_total": 1.0})
  writer.close()
  assert list(tmp_path.iterdir()) == []


def test_reader_names_the_file_and_line_of_a_damaged_record(tmp_path):
  path = tmp_path / metric_writer.METRICS_FILE
  path.write_text('{"step": 1, "a": 1.0}\nnot json\n{"step": 3}\n')
  with pytest.raises(ValueError, match=rf"{path}, line 2: not JSON"):
    metric_writer.read_metrics(path)
  assert metric_writer.read_metrics(tmp_path / "absent.jsonl") == []


def test_tensorboard_tags_are_legal_and_the_jsonl_keeps_the_names(tmp_path, caplog):
  assert metric_writer.tensorboard_tag("eval/detail/retention/traffic light") == (
      "eval/detail/retention/traffic_light")
  writer = metric_writer.MetricWriter(tmp_path)
  with caplog.at_level(logging.INFO):
    writer.write_scalars(1, {"eval/detail/retention/traffic light": 0.5})
  writer.close()
  assert "is illegal" not in caplog.text
  assert metric_writer.read_metrics(tmp_path / "metrics.jsonl")[0][
      "eval/detail/retention/traffic light"] == 0.5
