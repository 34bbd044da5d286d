"""Image files under a folder, and the label file that goes with each image.

A leaf module (no i2i_jax imports): `sources.FolderSource` and the
`image_folder` TFDS builder both list and match files here, so that a folder
read directly and the same folder built into TFDS hold the same examples.
"""

import os

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(root: str) -> list[str]:
  """Relative paths of the png/jpg files under root, recursive, sorted.

  Symlinked folders are followed (data sets are often linked in), each real
  folder once: a link back up the tree would otherwise list the same files
  again under ever longer paths, and two such links never end.
  """
  found, seen_folders = [], set()
  for directory, subdirs, names in os.walk(root, followlinks=True):
    folder = os.stat(directory)
    if (folder.st_dev, folder.st_ino) in seen_folders:
      subdirs.clear()
      continue
    seen_folders.add((folder.st_dev, folder.st_ino))
    subdirs.sort()
    for name in names:
      if name.lower().endswith(IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return sorted(found)


class LabelFolder:
  """The label maps under a folder, matched to images by relative path and stem.

  The label of image "a/b/x.jpg" is "a/b/x.<any image extension>" under
  `root`; where several extensions share a stem, the first in sorted order.
  """

  def __init__(self, root: str):
    self.root = root
    self._by_stem = {}
    for relpath in list_images(root):
      self._by_stem.setdefault(os.path.splitext(relpath)[0], relpath)

  def path(self, image_relpath: str) -> str | None:
    """The label file of image `image_relpath`, or None if it has none."""
    label = self._by_stem.get(os.path.splitext(image_relpath)[0])
    return os.path.join(self.root, label) if label else None
