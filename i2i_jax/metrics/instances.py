"""The object instances of X that the detail section checks in F(X).

An image's instances are an instance map and a list of dicts in the toy world's
annotation format (docs/toy_world.md, `toy_streets.render_with_instances`):

  instance map  [H, W] uint16, an instance's "mask_id" on its visible pixels, 0 elsewhere
  instance      {"mask_id": int, "class": a CITYSCAPES_CLASSES name,
                 "box": [y0, x0, y1, x1] (y1, x1 exclusive), "area": visible pixels,
                 traffic lights also "state" ("red", "amber", "green"),
                 "lamp_box" (the lit lamp's visible pixels, None when hidden), "lamp_area"}

Three kinds, each a sequence aligned with X (`len()`, `[index] -> (instance
map, instances)`):

  InstanceFolder      <root>/<stem>.json and <stem>.png per image of X, as
                      `python -m i2i_jax.data.toy_streets --out DIR` writes them
                      in DIR/<style>/instances;
  ToyStreetsInstances rendered with the scenes of a toy_streets source;
  LabelComponents     connected components of the small classes in X's labels
                      (or seg(X)), for data without instance annotations: no
                      light states, and touching objects of one class merge.
"""

import json
import posixpath
from collections.abc import Sequence

from etils import epath
import numpy as np
from PIL import Image
from scipy import ndimage

from i2i_jax.data import toy_streets
from i2i_jax.metrics import semantic

Instances = tuple[np.ndarray, list[dict]]  # (instance map [H, W] uint16, instances)


class InstanceFolder:
  """Instance annotations in a folder, matched to X's files by relative path and stem.

  Image "a/b/x.png" of X has "a/b/x.json" (the list) and "a/b/x.png" (the
  16-bit instance map) under `root` (any epath).
  """

  def __init__(self, root: epath.PathLike, relpaths: Sequence[str]):
    """Raises FileNotFoundError naming the folder or the first missing annotation."""
    self.root = epath.Path(root)
    if not self.root.is_dir():
      raise FileNotFoundError(f"instance folder {self.root} does not exist")
    self.stems = [posixpath.splitext(relpath)[0] for relpath in relpaths]
    for stem in self.stems:
      for suffix in (".json", ".png"):
        if not (self.root / f"{stem}{suffix}").exists():
          raise FileNotFoundError(f"no instance annotation {self.root / (stem + suffix)} for "
                                  f"image {stem}")

  def __len__(self) -> int:
    return len(self.stems)

  def __getitem__(self, index: int) -> Instances:
    """Raises ValueError naming the file that cannot be read."""
    json_path = self.root / f"{self.stems[index]}.json"
    map_path = self.root / f"{self.stems[index]}.png"
    try:
      instances = json.loads(json_path.read_text())
    except (OSError, ValueError) as e:
      raise ValueError(f"cannot read {json_path}: {e}") from e
    try:
      with map_path.open("rb") as f, Image.open(f) as image:
        instance_map = np.asarray(image).astype(np.uint16)
    except (OSError, ValueError) as e:
      raise ValueError(f"cannot read {map_path}: {e}") from e
    return instance_map, instances


class ToyStreetsInstances:
  """The instances of a toy_streets source's scenes, rendered (no files)."""

  def __init__(self, source):
    """source: a `sources.ToyStreetsSource` (style, seeds, height, width)."""
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Instances:
    _, _, instance_map, instances = toy_streets.render_with_instances(
        self.source.seeds[index], self.source.style, self.source.height, self.source.width)
    return instance_map, instances


class LabelComponents:
  """Connected components (8-connectivity) of each small class in X's class maps."""

  def __init__(self, class_maps: Sequence[np.ndarray], class_names: Sequence[str],
               all_class_names: Sequence[str] = semantic.CITYSCAPES_CLASSES):
    """Args:
      class_maps: X's [H, W] class ids (labels or seg(X)), one per image.
      class_names: the classes whose components are instances.
      all_class_names: the name of every class id.
    """
    self.class_maps = class_maps
    self.class_ids = {name: list(all_class_names).index(name) for name in class_names}

  def __len__(self) -> int:
    return len(self.class_maps)

  def __getitem__(self, index: int) -> Instances:
    class_map = np.asarray(self.class_maps[index])
    instance_map = np.zeros(class_map.shape, np.uint16)
    instances = []
    for name, class_id in self.class_ids.items():
      components, _ = ndimage.label(class_map == class_id, structure=np.ones((3, 3), bool))
      for component, (rows, cols) in enumerate(ndimage.find_objects(components), start=1):
        mask_id = len(instances) + 1
        mask = components == component
        instance_map[mask] = mask_id
        instances.append({"mask_id": mask_id, "class": name, "area": int(mask.sum()),
                          "box": [rows.start, cols.start, rows.stop, cols.stop]})
    return instance_map, instances
