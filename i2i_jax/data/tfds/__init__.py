"""TFDS builders for i2i_jax, stored as ArrayRecord for grain's random access.

Importing this package registers `gta5`, `cityscapes_fine` and `image_folder`
with TFDS. Build one from its manually downloaded files with

  python -m i2i_jax.data.tfds NAME MANUAL_DIR [--data_dir DIR]

(NAME: gta5, cityscapes_fine, image_folder[/with_labels]; MANUAL_DIR: the
extracted downloads) and read it in a config as `tfds:NAME[:SPLIT]`.
TensorFlow is not needed.
"""

from collections.abc import Sequence
import os

from absl import flags
import tensorflow_datasets as tfds

from i2i_jax import cli
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


# The command's own flags (not absl's global FLAGS), so that every entry point
# imports next to the others although their flag names overlap (cli.py).
FLAGS = flags.FlagValues()
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Where to store it (default: TFDS's, $TFDS_DATA_DIR).", flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.data.tfds` in this process: `argv` as sys.argv; returns 0.

  Raises:
    cli.HelpRequested: --help.
    cli.UsageError: a bad flag, not NAME and MANUAL_DIR, a MANUAL_DIR that is
      not a folder, an unknown NAME, files the builder cannot read (first line).
  """
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) != 3:
    raise cli.UsageError(f"expected NAME MANUAL_DIR, got {arguments[1:]}")
  name, manual_dir = arguments[1:]
  if not os.path.isdir(manual_dir):
    raise cli.UsageError(f"manual_dir {manual_dir!r} is not a directory")
  try:
    builder = prepare(name, manual_dir, _DATA_DIR.value)
  except (OSError, ValueError, tfds.core.registered.DatasetNotFoundError) as e:
    raise cli.UsageError(f"{type(e).__name__}: {e}".splitlines()[0]) from e
  print(builder.info)
  return cli.EXIT_OK
