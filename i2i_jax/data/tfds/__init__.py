"""TFDS builders for i2i_jax, stored as ArrayRecord for grain's random access.

Importing this package registers `gta5`, `cityscapes_fine` and `image_folder`
with TFDS. Build one from its manually downloaded files with

  python -m i2i_jax.data.tfds NAME MANUAL_DIR [--data_dir DIR]

and read it in a config as `tfds:NAME[:SPLIT]`. TensorFlow is not needed.
"""

import argparse
import os

import tensorflow_datasets as tfds

from i2i_jax.data.tfds import cityscapes
from i2i_jax.data.tfds import gta5
from i2i_jax.data.tfds import image_folder

BUILDERS = (gta5.Gta5, cityscapes.CityscapesFine, image_folder.ImageFolder)


def prepare(name: str, manual_dir: str, data_dir: str | None = None):
  """Builds data set `name` ("gta5", "image_folder/with_labels", ...) as ArrayRecord.

  Returns:
    The prepared tfds builder.
  Raises:
    ValueError: data_dir would put the prepared files inside manual_dir.
  """
  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  output, manual = (os.path.realpath(p) for p in (os.fspath(builder.data_dir), manual_dir))
  if output == manual or output.startswith(manual.rstrip(os.sep) + os.sep):
    # The builders list every folder under manual_dir: they would read their own
    # output back as data.
    raise ValueError(f"data_dir {data_dir!r} puts {name} inside manual_dir {manual_dir!r}; "
                     "choose a --data_dir outside the manual folder")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m i2i_jax.data.tfds",
                                   description=__doc__.split("\n")[0])
  parser.add_argument("name", help="gta5, cityscapes_fine, image_folder[/with_labels]")
  parser.add_argument("manual_dir", help="the extracted downloads")
  parser.add_argument("--data_dir", default=None,
                      help="where to store it (default: TFDS's, $TFDS_DATA_DIR)")
  args = parser.parse_args(argv)
  if not os.path.isdir(args.manual_dir):
    parser.error(f"manual_dir {args.manual_dir!r} is not a directory")
  try:
    builder = prepare(args.name, args.manual_dir, args.data_dir)
  except (OSError, ValueError, tfds.core.registered.DatasetNotFoundError) as e:
    parser.error(f"{type(e).__name__}: {e}".splitlines()[0])  # one line, exit 2
  print(builder.info)
