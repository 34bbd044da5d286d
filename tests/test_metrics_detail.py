"""The detail metrics move the right way on toy scenes at the evaluation size (issue 13).

X is sim_detail:val, the ideal translation the real-style render of the same
scenes (real_detail:val); the other translations are the ideal one with the
small objects erased (filled with the surrounding background), blurred, or
with the lit lamps recoloured as another state.
"""

import json

import numpy as np
from PIL import Image
import pytest

from i2i_jax import evaluators
from i2i_jax.data import toy_streets
from i2i_jax.metrics import detail
from i2i_jax.metrics import detail_pictures
from i2i_jax.metrics import instances as instances_lib
from i2i_jax.metrics import report
from i2i_jax.metrics import semantic
from i2i_jax.metrics import sensitivity

SCENES = 8
HEIGHT, WIDTH = 256, 512  # the evaluation size of docs/toy_world.md


@pytest.fixture(scope="module")
def scenes():
  """[(X, labels, instance map, instances, ideal F(X))] of the first val scenes."""
  found = []
  for seed in toy_streets.split_seeds("sim_detail", "val")[:SCENES]:
    source, labels, instance_map, instances = toy_streets.render_with_instances(
        seed, "sim_detail", HEIGHT, WIDTH)
    ideal = toy_streets.render(seed, "real_mismatch", HEIGHT, WIDTH)[0]
    found.append((source, labels, instance_map, instances, ideal))
  return found


def run(scenes, perturb=None, predicted=None):
  sources = [source for source, *_ in scenes]
  annotations = [(instance_map, instances) for _, _, instance_map, instances, _ in scenes]
  translated = [ideal if perturb is None else perturb(ideal, instance_map, instances)
                for _, _, instance_map, instances, ideal in scenes]
  return detail.DetailRetentionEvaluator(sources, annotations).run(translated, predicted)


def test_the_ideal_translation_retains_the_details_and_the_light_states(scenes):
  metrics = run(scenes)
  assert metrics["checked"] >= 25 and metrics["lights_checked"] >= 5
  assert metrics["retention"] >= 0.9
  for name in detail.DETAIL_CLASSES:
    assert metrics[f"retention/{name}"] >= 0.8, name
  assert metrics["light_state_accuracy"] >= 0.9


def test_erased_objects_are_not_retained(scenes):
  ideal, metrics = run(scenes), run(scenes, sensitivity.erase_small_objects)
  assert metrics["checked"] == ideal["checked"]  # which instances count depends on X only
  assert metrics["retention"] <= 0.3
  assert metrics["contrast"] <= 0.5 * ideal["contrast"]


def test_blurred_objects_score_clearly_worse(scenes):
  ideal, metrics = run(scenes), run(scenes, sensitivity.blur)
  assert metrics["retention"] <= ideal["retention"] - 0.3
  assert metrics["contrast"] <= ideal["contrast"] - 0.2


def test_swapped_light_colours_are_state_errors(scenes):
  ideal, metrics = run(scenes), run(scenes, sensitivity.swap_light_states)
  assert metrics["light_state_accuracy"] <= 0.1
  red_lights = sum(i["state"] == "red" and i["lamp_area"] >= detail.MIN_LAMP_PIXELS
                   for _, _, _, instances, _ in scenes for i in instances
                   if i["class"] == "traffic light" and i["lamp_box"])
  assert red_lights and metrics.get("light_state_errors/red->green", 0) >= red_lights - 1
  # The objects are still there: only the states are wrong.
  assert metrics["retention"] >= ideal["retention"] - 0.1


def test_segmenter_retention_counts_instances_the_segmenter_still_finds(scenes):
  labels = [labels for _, labels, *_ in scenes]
  assert run(scenes, predicted=labels)["retention_seg"] == 1.0
  signs_gone = []
  for label in labels:
    label = label.copy()
    label[label == semantic.CITYSCAPES_CLASSES.index("traffic sign")] = 10  # sky
    signs_gone.append(label)
  metrics = run(scenes, predicted=signs_gone)
  assert metrics["retention_seg/traffic sign"] == 0.0
  assert metrics["retention_seg/pole"] == metrics["retention_seg/traffic light"] == 1.0


def test_ideal_numbers_are_reported_beside_the_translation(scenes):
  sources = [source for source, *_ in scenes]
  annotations = [(instance_map, instances) for _, _, instance_map, instances, _ in scenes]
  ideal_images = [ideal for *_, ideal in scenes]
  metrics = detail.DetailRetentionEvaluator(sources, annotations).run(
      [sensitivity.erase_small_objects(ideal, m, i) for _, _, m, i, ideal in scenes], ideal_images=ideal_images)
  assert metrics["ideal/retention"] >= 0.9 and metrics["retention"] <= 0.3


def test_detail_crops_show_the_worst_kept_objects_captioned_in_the_report(scenes, tmp_path):
  """Half the scenes with their lamps recoloured, half with the small objects erased."""
  damages = [sensitivity.swap_light_states, sensitivity.erase_small_objects]
  translated = [damages[number % 2](ideal, instance_map, instances)
                for number, (_, _, instance_map, instances, ideal) in enumerate(scenes)]
  names = [f"city/{number:05d}.png" for number in range(len(scenes))]
  evaluator = evaluators.REGISTRY["detail"](
      [source for source, *_ in scenes], [(m, i) for _, _, m, i, _ in scenes],
      ideal_images=[ideal for *_, ideal in scenes], out_dir=tmp_path, source_names=names)
  metrics = evaluator.score(translated)

  assert list(evaluator.pictures) == [detail_pictures.PICTURE_NAME]
  caption = evaluator.pictures[detail_pictures.PICTURE_NAME]
  assert "X | F(X) | ideal translation" in caption and any(name in caption for name in names)
  picture = np.asarray(Image.open(tmp_path / detail_pictures.PICTURE_NAME).convert("RGB"))
  separators = (picture == detail_pictures.SEPARATOR).all(axis=(1, 2)).sum()
  assert separators == detail_pictures.MAX_ROWS  # one row per object, each under its line
  assert picture.shape[0] >= detail_pictures.MAX_ROWS * (detail_pictures.CROP_HEIGHT + 1)
  assert picture.shape[1] == 3 * (detail_pictures.CROP_WIDTH + detail_pictures.GAP) + (
      detail_pictures.CAPTION_WIDTH)
  # The rows are the objects the translation lost: misread lights first, then lost ones.
  rows = detail_pictures.worst_records(evaluator.metric.records)
  misread = [r for r in rows if "state" in r and r["state_read"] != r["state"]]
  lost = [r for r in rows[len(misread):] if r["contrast"] < detail.RETAINED_CONTRAST]
  assert misread and rows[:len(misread)] == misread and len(misread) + len(lost) == len(rows)
  # Recoloured lamps are misread; only the erased scenes (odd ones) lose objects.
  assert any(r["index"] % 2 == 0 for r in misread) and all(r["index"] % 2 for r in lost)
  lines = detail_pictures.row_caption(0, rows[0], names[rows[0]["index"]])
  assert names[rows[0]["index"]] in lines[0] and "WRONG" in lines[-1]

  report.write_report(tmp_path, {"detail": metrics}, {"detail": evaluator.pictures}, [], {})
  markdown = (tmp_path / "report.md").read_text()
  assert f"*{detail_pictures.PICTURE_NAME}*: {caption}" in markdown
  assert f"![{detail_pictures.PICTURE_NAME}]({detail_pictures.PICTURE_NAME})" in markdown


def test_no_detail_crops_without_an_out_dir(scenes):
  evaluator = evaluators.REGISTRY["detail"]([source for source, *_ in scenes[:1]],
                                            [(m, i) for _, _, m, i, _ in scenes[:1]])
  evaluator.score([ideal for *_, ideal in scenes[:1]])
  assert evaluator.pictures == {}


def test_folder_annotations_are_the_rendered_ones(tmp_path):
  toy_streets.write_folder(str(tmp_path), 2, style="sim_detail", split="val", height=64,
                           width=128)
  folder = instances_lib.InstanceFolder(tmp_path / "sim_detail" / "instances",
                                        ["00000.png", "00001.png"])
  rendered = instances_lib.ToyStreetsInstances(_ToySource("sim_detail", 64, 128))
  for index in range(2):
    folder_map, folder_instances = folder[index]
    rendered_map, rendered_instances = rendered[index]
    np.testing.assert_array_equal(folder_map, rendered_map)
    assert folder_instances == json.loads(json.dumps(rendered_instances))
  with pytest.raises(FileNotFoundError, match="00002.json"):
    instances_lib.InstanceFolder(tmp_path / "sim_detail" / "instances", ["00002.png"])


class _ToySource:
  def __init__(self, style, height, width):
    self.style, self.height, self.width = style, height, width
    self.seeds = toy_streets.split_seeds(style, "val")

  def __len__(self):
    return len(self.seeds)


def test_label_components_are_instances_without_light_states():
  labels = np.full((32, 48), 10, np.uint8)
  labels[4:28, 10:12] = 5  # a pole
  labels[4:28, 30:32] = 5  # another
  labels[5:9, 20:25] = 7  # a sign
  instance_map, found = instances_lib.LabelComponents([labels], detail.DETAIL_CLASSES)[0]
  assert [(i["class"], i["area"], i["box"]) for i in found] == [
      ("pole", 48, [4, 10, 28, 12]), ("pole", 48, [4, 30, 28, 32]),
      ("traffic sign", 20, [5, 20, 9, 25])]
  assert set(np.unique(instance_map)) == {0, 1, 2, 3}
