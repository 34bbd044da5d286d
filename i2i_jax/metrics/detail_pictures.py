"""detail_crops.png: the worst-kept small objects of X, cropped from X, F(X) and the ideal.

The detail numbers say how many poles, lights and signs survived; this picture
lets a person check them: one row per object, the worst first (objects not
retained or with a misread light, then by rising contrast ratio), each row a
crop around the object from X, F(X) and, where it exists, the ideal
translation, enlarged (nearest neighbour) to a readable size, beside a caption
with the file, the class, the light state or sign shape, the contrast ratio and
the light state read in F(X).
"""

import math
from collections.abc import Sequence

from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageDraw

from i2i_jax.metrics import detail
from i2i_jax.metrics import pictures

PICTURE_NAME = "detail_crops.png"
MAX_ROWS = 12
CROP_HEIGHT, CROP_WIDTH = 96, 128  # pixels of each enlarged crop
CROP_PADDING = 6  # pixels of X around the object's box, at least
CAPTION_WIDTH = 430
GAP = 4  # white pixels between the crops, and under each row before its separator
SEPARATOR = (160, 160, 160)  # the 1-pixel line under each row
OUTLINE = (255, 0, 255)  # the object's box in X, drawn in every crop
OUTSIDE = 128  # grey where a crop reaches past the image's border


def crop_around(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
  """[CROP_HEIGHT, CROP_WIDTH, 3] uint8: `image` around `box`, enlarged, the box outlined.

  The window holds the box with CROP_PADDING pixels around it, widened to the
  crop's aspect ratio about the box's centre (grey past the image's border).
  """
  y0, x0, y1, x1 = box
  window_height = max(y1 - y0 + 2 * CROP_PADDING,
                      math.ceil((x1 - x0 + 2 * CROP_PADDING) * CROP_HEIGHT / CROP_WIDTH))
  window_width = math.ceil(window_height * CROP_WIDTH / CROP_HEIGHT)
  top, left = (y0 + y1 - window_height) // 2, (x0 + x1 - window_width) // 2
  window = np.full((window_height, window_width, 3), OUTSIDE, np.uint8)
  height, width = image.shape[:2]
  inside_y = slice(max(0, top), min(height, top + window_height))
  inside_x = slice(max(0, left), min(width, left + window_width))
  window[inside_y.start - top:inside_y.stop - top,
         inside_x.start - left:inside_x.stop - left] = image[inside_y, inside_x]
  crop = Image.fromarray(window).resize((CROP_WIDTH, CROP_HEIGHT), Image.NEAREST)
  scale_y, scale_x = CROP_HEIGHT / window_height, CROP_WIDTH / window_width
  ImageDraw.Draw(crop).rectangle(
      [round((x0 - left) * scale_x) - 2, round((y0 - top) * scale_y) - 2,
       round((x1 - left) * scale_x) + 1, round((y1 - top) * scale_y) + 1], outline=OUTLINE)
  return np.asarray(crop)


def _misread(record: dict) -> bool:
  """Whether the light's state read in F(X) differs from X's."""
  return "state" in record and record["state_read"] != record["state"]


def _lost(record: dict) -> bool:
  """Whether the object no longer stands out from its surroundings in F(X) as in X."""
  return record["checked"] and not record["contrast"] >= detail.RETAINED_CONTRAST


def worst_records(records: Sequence[dict], max_rows: int = MAX_ROWS) -> list[dict]:
  """The records to draw, worst first.

  Misread lights come first (a light can stand out as well as in X and still
  show the wrong state, which no contrast ratio shows), then lost objects,
  then the others, each by rising contrast ratio. Only objects a check could
  judge: those with enough contrast in X, and the lights whose state was read.
  """
  judged = [r for r in records if r["checked"] or "state" in r]
  return sorted(judged, key=lambda r: (not _misread(r), not _lost(r), math.inf if math.isnan(
      r["contrast"]) else r["contrast"]))[:max_rows]


def row_caption(rank: int, record: dict, name: str) -> list[str]:
  """The lines beside a row: which object, whether it was retained, the light state read."""
  kind = record["class"]
  if "state" in record:
    kind = f"{record['state']} traffic light"
  elif "shape" in record:
    kind = f"{record['shape']} traffic sign"
  y0, x0, y1, x1 = record["box"]
  lines = [f"#{rank + 1} {name}: {kind}, box y {y0}-{y1}, x {x0}-{x1}"]
  if record["checked"]:
    retained = record["contrast"] >= detail.RETAINED_CONTRAST
    lines.append(f"contrast ratio {record['contrast']:.2f}: "
                 + ("retained" if retained else "NOT retained")
                 + f" (retained at >= {detail.RETAINED_CONTRAST})")
  else:
    lines.append("contrast not checked (too close to its surroundings' colour in X)")
  if "state" in record:
    correct = record["state_read"] == record["state"]
    lines.append(f"light state read in F(X): {record['state_read']} "
                 + ("(correct)" if correct else f"(WRONG, X shows {record['state']})"))
  return lines


def detail_crops(records: Sequence[dict], source_images: Sequence[np.ndarray],
                 translated_images: Sequence[np.ndarray],
                 ideal_images: Sequence[np.ndarray] | None = None,
                 source_names: Sequence[str] | None = None) -> np.ndarray:
  """The picture of `records` (already chosen and ordered): title, column titles, one row each.

  Args:
    records: `DetailRetentionEvaluator.records` entries ("index" into the images).
    source_images, translated_images, ideal_images: X, F(X) and the ideal
      translation (or None), [H, W, 3] uint8 each.
    source_names: X's file names for the captions; None names images by index.

  Returns:
    [H, W, 3] uint8 on white; each row ends with a 1-pixel SEPARATOR line.
  """
  columns = ["X: source", "F(X): translated"] + (
      ["ideal translation"] if ideal_images is not None else [])
  crops_width = len(columns) * (CROP_WIDTH + GAP)
  width = crops_width + CAPTION_WIDTH
  title = pictures.text_block([
      f"Small-detail retention: the {len(records)} worst-kept poles, traffic lights and "
      "signs of X, worst first (misread lights, then lost objects, each by rising contrast "
      "ratio). Columns: " + " | ".join(columns) + ", each a crop around the object, "
      "enlarged (nearest neighbour); magenta frame: the object's box in X. Contrast ratio: "
      "how much the object stands out from its surroundings in F(X) compared with X (1 as "
      "in X, 0 painted over)."], width)
  header = np.concatenate([pictures.text_block([column], CROP_WIDTH + GAP)
                           for column in columns], axis=1)
  header = np.pad(header, ((0, 0), (0, CAPTION_WIDTH), (0, 0)), constant_values=255)
  rows = [title, header]
  for rank, record in enumerate(records):
    index = record["index"]
    images = [source_images, translated_images] + (
        [ideal_images] if ideal_images is not None else [])
    crops = [np.pad(crop_around(np.asarray(image_set[index]), record["box"]),
                    ((0, 0), (0, GAP), (0, 0)), constant_values=255) for image_set in images]
    name = source_names[index] if source_names is not None else f"image {index}"
    caption = pictures.text_block(row_caption(rank, record, name), CAPTION_WIDTH,
                                  min_height=CROP_HEIGHT + GAP)
    row = np.full((caption.shape[0], width, 3), 255, np.uint8)
    row[:CROP_HEIGHT, :crops_width] = np.concatenate(crops, axis=1)
    row[:, crops_width:] = caption
    rows += [row, np.full((1, width, 3), SEPARATOR, np.uint8)]
  return np.concatenate(rows)


def write_detail_crops(out_dir: epath.PathLike, records: Sequence[dict],
                       source_images: Sequence[np.ndarray],
                       translated_images: Sequence[np.ndarray],
                       ideal_images: Sequence[np.ndarray] | None = None,
                       source_names: Sequence[str] | None = None,
                       max_rows: int = MAX_ROWS) -> dict[str, str]:
  """Writes PICTURE_NAME into `out_dir` (any epath) for the worst of `records`.

  Returns:
    {PICTURE_NAME: caption for the report}, or {} when no object could be judged.
  """
  chosen = worst_records(records, max_rows)
  if not chosen:
    return {}
  pictures.write_png(epath.Path(out_dir) / PICTURE_NAME, detail_crops(
      chosen, source_images, translated_images, ideal_images, source_names))
  names = sorted({source_names[r["index"]] if source_names is not None else f"image {r['index']}"
                  for r in chosen})
  failed = sum(_misread(r) or _lost(r) for r in chosen)
  columns = "X | F(X) | ideal translation" if ideal_images is not None else "X | F(X)"
  return {PICTURE_NAME: (
      f"Detail crops: the {len(chosen)} worst-kept small objects (poles, traffic lights, signs) "
      f"of X, worst first, {failed} of them lost or misread; each row shows crops around one "
      f"object ({columns}, magenta frame = its box in X) beside its file, class, contrast ratio "
      f"and the light state read in F(X). Files: {', '.join(names[:6])}"
      + (f" and {len(names) - 6} more." if len(names) > 6 else "."))}


def scenes_and_crops(records: Sequence[dict], source_images: Sequence[np.ndarray],
                     translated_images: Sequence[np.ndarray],
                     ideal_images: Sequence[np.ndarray] | None = None, *,
                     num_scenes: int = 2, num_crops: int = 6) -> np.ndarray:
  """Whole scenes at the evaluation size, X | F(X) | ideal, above `detail_crops` of the worst objects.

  What training shows of an evaluation (the image grids of the training crops
  are too small to judge a sign or a light).

  Args:
    records, source_images, translated_images, ideal_images: as `detail_crops`.
    num_scenes: the first scenes drawn whole.
    num_crops: rows of crops (the worst-kept objects); 0 for none.

  Returns:
    [H, W, 3] uint8 on white.
  """
  columns = [source_images, translated_images] + (
      [ideal_images] if ideal_images is not None else [])
  titles = ["X: source", "F(X): translated"] + (
      ["ideal translation (the real-style render)"] if ideal_images is not None else [])
  height, width = np.asarray(source_images[0]).shape[:2]
  header = np.concatenate([pictures.text_block([title], width + GAP) for title in titles], axis=1)
  rows = [pictures.text_block([
      f"The first {min(num_scenes, len(source_images))} evaluation scenes at {height}x{width}: "
      + " | ".join(titles) + "."], header.shape[1]), header]
  for index in range(min(num_scenes, len(source_images))):
    rows.append(np.concatenate([np.pad(np.asarray(images[index]), ((0, GAP), (0, GAP), (0, 0)),
                                       constant_values=255) for images in columns], axis=1))
  chosen = worst_records(records, num_crops) if num_crops else []
  if chosen:
    rows.append(detail_crops(chosen, source_images, translated_images, ideal_images))
  width = max(row.shape[1] for row in rows)
  return np.concatenate([np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0)),
                                constant_values=255) for row in rows])
