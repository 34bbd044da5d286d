r"""Translates a whole data set with a trained generator: `python -m i2i_jax.translate`.

  python -m i2i_jax.translate --workdir=runs/gta2cityscapes \
      --input=folder:data/gta5/images --labels=data/gta5/labels --output=data/gta5_real

writes OUTPUT/images/ (every input translated, at its own size, under its relative
path), OUTPUT/labels/ (copies of the labels), OUTPUT/manifest.json and
OUTPUT/translated.log: a drop-in replacement of the input data set (layout in
`i2i_jax/output_tree.py`; the library is `i2i_jax/translator.py`).

Inputs are never written: OUTPUT must lie outside the input and label folders,
whatever the flags. Every file is written under a temporary name and renamed, so
an output that exists is complete; a rerun skips them and translates the rest. The
manifest pins the checkpoint and the settings: rerunning into the same OUTPUT with
another checkpoint (or format, size, dtype; for a label-conditioned generator, the
labels it is conditioned on) is refused unless --overwrite. With
several processes (multi-host), process i of n translates every n-th file of the
sorted list and writes its own manifest and log.

The manifest's "status" is "complete" (every image written), "incomplete" (some
inputs could not be read; each is listed under "failed" with the reason),
"interrupted" (stopped by a signal; rerun to finish) or "failed" (stopped by an
error, named under "error": e.g. a full disk).

Exit status: 0 when every image was translated, 1 when some input could not be read,
2 for usage errors (one line names the flag, path or conflict), 3 when an error
stopped the run (an unreadable checkpoint, an output that cannot be written), 130
when stopped by Ctrl-C and 143 by SIGTERM (both after finishing the images in
flight; rerun to complete).
"""

from collections.abc import Sequence
import os

from absl import flags
from absl import logging
from etils import epath
import jax

from i2i_jax import checkpoint as checkpoint_lib
from i2i_jax import cli
from i2i_jax import output_tree
from i2i_jax import sharding
from i2i_jax import translator as translator_lib
from i2i_jax.data import sources


# The command's own flags (not absl's global FLAGS), so that every entry point
# imports next to the others although their flag names overlap (cli.py).
FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Training workdir whose checkpoint translates (its latest step unless "
    "--step).", flag_values=FLAGS)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Instead of --workdir: a checkpoints/ directory, or one step in it "
    "(WORKDIR/checkpoints/<step>).", flag_values=FLAGS)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).",
                             flag_values=FLAGS)
_INPUT = flags.DEFINE_string(
    "input", None, "Images to translate: folder:PATH (or a bare PATH; png/jpg, recursive), "
    "tfds:NAME[:SPLIT] or toy_streets:sim[:SPLIT].", flag_values=FLAGS)
_LABELS = flags.DEFINE_string(
    "labels", "", "Folder of label maps for a folder input, matched by relative path and "
    "stem; copied to OUTPUT/labels/ under the same relative names (see --link_labels). "
    "tfds and toy_streets inputs bring their own labels.", flag_values=FLAGS)
_SOURCE_LABELS = flags.DEFINE_bool(
    "source_labels", True, "For a label-conditioned generator (trained with "
    "config.model.label_conditioned_generator): condition it on each input's own labels "
    "(--labels, or a tfds/toy_streets input's), as in training. --nosource_labels, or an "
    "input without labels: on its frozen segmenter's pseudo-labels. Ignored by other "
    "generators.", flag_values=FLAGS)
_LINK_LABELS = flags.DEFINE_bool(
    "link_labels", False, "Hard-link the label files into OUTPUT/labels/ instead of "
    "copying them: saves space, but a linked label IS the original file, so editing it in "
    "place (e.g. relabelling the translated set) changes the source data set too.",
    flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Output folder: images/, labels/, manifest.json, translated.log. Must "
    "lie outside the input and label folders (inputs are never overwritten).",
    flag_values=FLAGS)
_RESIZE = flags.DEFINE_string(
    "resize", "", "HEIGHT,WIDTH to translate at (outputs are resized back to each input's "
    "size so labels still match); empty: full resolution, the input's own size. Sizes not "
    "divisible by the bucket multiple are reflection-padded and cropped back.",
    flag_values=FLAGS)
_FORMAT = flags.DEFINE_enum("format", "png", list(output_tree.FORMAT_EXTENSIONS),
                            "Output image format.", flag_values=FLAGS)
_QUALITY = flags.DEFINE_integer("quality", 95, "JPEG quality (1-95), --format=jpg only.",
                                flag_values=FLAGS)
_PNG_COMPRESS_LEVEL = flags.DEFINE_integer(
    "png_compress_level", 1, "PNG level 0-9, lossless at any level: 1 (default) encodes with "
    "fpng, the fastest (files a few % larger than zlib level 1; in worker processes); 0 and "
    "2-9 are zlib at that level.", flag_values=FLAGS)
_DTYPE = flags.DEFINE_enum(
    "dtype", None, ["float32", "bfloat16"], "Compute dtype (default: the run's "
    "config.compute_dtype; bfloat16 is faster on GPU/TPU).", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 8, "Images per device call (rounded up to a multiple of the local device "
    "count).", flag_values=FLAGS)
_BUCKET_MULTIPLE = flags.DEFINE_integer(
    "bucket_multiple", 64, "Pad H and W up to multiples of this (a multiple of 4): one "
    "compiled shape per bucket, so mixed sizes do not recompile per image.", flag_values=FLAGS)
_READ_THREADS = flags.DEFINE_integer(
    "read_threads", os.cpu_count() or 1, "Threads decoding inputs (default: the host's "
    "cores).", flag_values=FLAGS)
_WRITE_THREADS = flags.DEFINE_integer(
    "write_threads", os.cpu_count() or 1, "Threads writing outputs, and as many worker "
    "processes encoding them where the encoder holds the GIL (PNG at level 1, fpng); "
    "default: the host's cores.", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Retranslate everything, even into an OUTPUT written with another "
    "checkpoint or settings (OUTPUT's own files only; inputs are never written).",
    flag_values=FLAGS)
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "Where tfds: inputs are stored.",
                                     flag_values=FLAGS)


def _parse_resize(text: str) -> tuple[int, int] | None:
  if not text:
    return None
  try:
    height, width = (int(value) for value in text.split(","))
  except ValueError:
    raise cli.UsageError(f"--resize={text!r}: expected HEIGHT,WIDTH") from None
  if height < 1 or width < 1:
    raise cli.UsageError(f"--resize={text!r}: sizes must be positive")
  return height, width


def _checkpoint_location() -> tuple[str, int | None]:
  """(path for load_generator, step) from --workdir / --checkpoint / --step."""
  if (_WORKDIR.value is None) == (_CHECKPOINT.value is None):
    raise cli.UsageError("pass exactly one of --workdir and --checkpoint")
  if _WORKDIR.value is not None:
    return _WORKDIR.value, _STEP.value
  path = epath.Path(_CHECKPOINT.value)
  if path.name.isdigit() and path.parent.name == "checkpoints":
    if _STEP.value is not None and _STEP.value != int(path.name):
      raise cli.UsageError(f"--checkpoint={path} is step {path.name} but --step={_STEP.value}")
    return str(path.parent), int(path.name)
  return str(path), _STEP.value


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.translate` in this process: `argv` as sys.argv; returns the exit status.

  Raises:
    cli.HelpRequested: --help.
    cli.UsageError: a bad flag, a missing input, an output that conflicts.
    cli.RunError: an unreadable checkpoint, an output that cannot be written.
  """
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments {arguments[1:]}")
  checkpoint_lib.quiet_orbax_logs()
  for flag in (_INPUT, _OUTPUT):
    if flag.value is None:
      raise cli.UsageError(f"--{flag.name} is required")
  resize = _parse_resize(_RESIZE.value)
  with cli.StopSignals() as stop:
    sharding.maybe_initialize_distributed()
    checkpoint_path, step = _checkpoint_location()
    try:
      source = sources.open_source(_INPUT.value, labels=_LABELS.value,
                                   tfds_data_dir=_TFDS_DATA_DIR.value)
      output_tree.check_location(source, _OUTPUT.value)
      generator = checkpoint_lib.load_generator(checkpoint_path, step, _DTYPE.value)
    except checkpoint_lib.CheckpointError as e:
      raise cli.RunError(str(e)) from e
    except (FileNotFoundError, ValueError) as e:
      raise cli.UsageError(str(e)) from e
    device_count = jax.local_device_count()
    batch_size = -(-_BATCH_SIZE.value // device_count) * device_count
    try:
      translator = translator_lib.Translator(generator, batch_size=batch_size,
                                             bucket_multiple=_BUCKET_MULTIPLE.value)
    except ValueError as e:
      raise cli.UsageError(str(e)) from e
    settings = output_tree.Settings(
        format=_FORMAT.value, quality=_QUALITY.value,
        png_compress_level=_PNG_COMPRESS_LEVEL.value, resize=resize,
        compute_dtype=_DTYPE.value or generator.config.compute_dtype)
    logging.info("translate: %s with %s step %d on %d device(s), batch %d, %s",
                 source, generator.path, generator.step, device_count, batch_size, settings)
    try:
      summary = translator_lib.translate_dataset(
          translator, source, _OUTPUT.value, settings=settings, source_spec=_INPUT.value,
          overwrite=_OVERWRITE.value, link_labels=_LINK_LABELS.value,
          source_labels=_SOURCE_LABELS.value, read_threads=_READ_THREADS.value,
          write_threads=_WRITE_THREADS.value,
          process_index=jax.process_index(), process_count=jax.process_count(),
          stop=stop.event)
    except output_tree.OutputConflictError as e:
      raise cli.UsageError(str(e)) from e
    except OSError as e:  # OUTPUT or its manifest cannot be written
      raise cli.RunError(f"--output={_OUTPUT.value}: {e}") from e
  print(f"{_OUTPUT.value}: {summary}", flush=True)
  if summary.error is not None:
    return cli.EXIT_ERROR
  if summary.interrupted:
    return stop.exit_code or cli.EXIT_SIGTERM
  return cli.EXIT_FAILED_INPUTS if summary.failed else cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
