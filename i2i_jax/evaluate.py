r"""Evaluates a translation X -> F(X) against a real domain Y; writes report.json and report.md.

  python -m i2i_jax.evaluate --source=folder:sim/ --labels=sim_labels/ \
      --translated=translated/ --target=folder:real/ --target_labels=real_labels/ --out=report/ \
      [--ideal=folder:ideal/] [--instances=sim_instances/]

Sources are `open_source` specs ("folder:PATH", "tfds:NAME[:SPLIT]",
"toy_streets:sim|real[:SPLIT]"); a bare path means "folder:PATH". The translated
folder must hold exactly one image per source image, under the same relative
path (the extension may differ); a missing or extra file is an error that names it.
The same holds for `--ideal`, the ideal translation of X where it exists (on
the toy world, the real-style render of the same scenes): flips are then also
reported as the excess over the ideal's, and detail numbers beside the ideal's.
`--out` may be any `etils.epath` path (gs://bucket/report too).

Instances for the detail section: `--instances` (a folder of <stem>.json and
<stem>.png per source image, as `python -m i2i_jax.data.toy_streets --out DIR`
writes them in DIR/<style>/instances); by default the `instances` folder beside
--labels (or beside the source images) when there is one, the rendered ones
for toy_streets sources, else connected components of X's classes.

Sections (each skipped, with a note, when its inputs are missing):
  fid         FID and KID of F(X) against Y.
  domain_gap  FD(X,Y) vs FD(F(X),Y) and the scatter of the three feature clouds.
  semantic    mIoU / pixel accuracy / per-class IoU of seg(F(X)) against X's labels.
  flips       the class flip matrix between X's labels (or seg(X)) and seg(F(X)),
              raw and in excess of the ideal translation's.
  detail      per-instance retention of poles, lights, signs (contrast, segmenter)
              and light-state accuracy; detail_crops.png shows the worst-kept
              objects cropped from X, F(X) and the ideal translation.
The segmenter runs once over F(X) (and X, the ideal translation where they are
needed); the semantic, flips and detail sections share its predictions. The
flips and detail sections are the evaluators training runs from `config.evals`
(`i2i_jax.evaluators.REGISTRY`), here scoring F(X) already translated.
  downstream  a segmenter trained on F(X) vs one trained on X, tested on Y's labels.

Offline, without the standard Inception weights, `--fd_network=auto` falls back
to an Inception with seeded random weights and labels every number
"FD_inception_random_init": it is not FID.

Each stage logs a line when it starts ("evaluate [3/8] ...") and when it ends,
with its duration; long loops show tqdm bars with an ETA.

Exit codes (`i2i_jax.cli`): 0 report written; 2 a usage error, in one line
naming the flag and the file (a missing folder, translated files that do not
match the source files, an unreadable image or label, a setting out of range),
checked before the slow stages where it can be; 3 a failure that is not about
the inputs (--out cannot be written, the standard Inception weights cannot be
had with --fd_network=inception, a segmenter that cannot be loaded, a bug).
"""

import contextlib
import posixpath
import time
from collections.abc import Sequence

from absl import flags
from absl import logging
from etils import epath
import numpy as np

from i2i_jax import cli
from i2i_jax import evaluators
from i2i_jax import storage
from i2i_jax.data import sources
from i2i_jax.metrics import detail
from i2i_jax.metrics import domain_gap
from i2i_jax.metrics import downstream
from i2i_jax.metrics import fid
from i2i_jax.metrics import inception
from i2i_jax.metrics import instances as instances_lib
from i2i_jax.metrics import report
from i2i_jax.metrics import segmenter as segmenter_lib
from i2i_jax.metrics import semantic

FD_NETWORKS = ("auto", "inception", "inception_random_init", "none")


def _open(flag: str, spec: str, labels: str = ""):
  """Opens the source of `--flag`; a missing folder or a bad spec is a UsageError naming it."""
  try:
    return sources.open_source(spec, labels=labels)
  except (FileNotFoundError, ValueError) as e:
    raise cli.UsageError(f"--{flag}={spec}: {e}") from e


class _Field:
  """A lazy sequence of one field ("image" or "label") of a source's records.

  `order` picks and orders records; a record that cannot be read raises a
  UsageError naming the flag and the file's relative path.
  """

  def __init__(self, source, field: str, flag: str, order: Sequence[int] | None = None):
    self.source = source
    self.field = field
    self.flag = flag
    self.order = list(range(len(source))) if order is None else list(order)

  def __len__(self) -> int:
    return len(self.order)

  def relpath(self, index: int) -> str:
    """The relative path (or id) of record `index`."""
    files = getattr(self.source, "files", None)
    if files is not None:
      return files[self.order[index]]
    return self.source[self.order[index]]["relpath"]

  def __getitem__(self, index: int) -> np.ndarray:
    record = self.source[self.order[index]]
    if sources.is_bad(record):
      raise cli.UsageError(f"--{self.flag}: cannot read {record['relpath']} "
                           f"({record[sources.ERROR_KEY]}); fix or remove it and rerun.")
    if self.field not in record:
      raise cli.UsageError(f"--{self.flag}: {record['relpath']} has no {self.field}.")
    return record[self.field]


def _relpaths(source) -> list[str]:
  files = getattr(source, "files", None)
  if files is not None:
    return list(files)
  return [source[index]["relpath"] for index in range(len(source))]


def _stem(relpath: str) -> str:
  return posixpath.splitext(relpath)[0]


def match_translated(source_relpaths: Sequence[str], translated_relpaths: Sequence[str],
                     translated_root: str, flag: str = "translated") -> list[int]:
  """Index into the translated files for each source file, matched by path without extension.

  Raises:
    cli.UsageError: naming the flag and the missing and extra files.
  """
  stems = {_stem(path): index for index, path in enumerate(translated_relpaths)}
  source_stems = {_stem(path) for path in source_relpaths}
  missing = [path for path in source_relpaths if _stem(path) not in stems]
  extra = [path for path in translated_relpaths if _stem(path) not in source_stems]
  if missing or extra:
    def listing(paths):
      return ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    problems = []
    if missing:
      problems.append(f"missing {len(missing)} image(s) for source file(s): "
                      f"{listing(missing)}")
    if extra:
      problems.append(f"{len(extra)} extra file(s) with no source image: {listing(extra)}")
    raise cli.UsageError(f"--{flag}={translated_root} does not match --source: "
                         + "; ".join(problems) + ".")
  return [stems[_stem(path)] for path in source_relpaths]


def _feature_network(choice: str, weights: str, batch_size: int, seed: int, resize_mode: str,
                     notes: list[str]):
  """The Inception of the FD/KD sections, or None for "none" (notes say which one)."""
  if choice == "none":
    return None
  notes.append(f"FID/KID inputs resized to 299x299 with fid_resize_mode={resize_mode}: "
               f"{inception.RESIZE_MODES[resize_mode]}.")
  if choice in ("auto", "inception"):
    try:
      network = inception.InceptionFeatures.pretrained(weights or None, batch_size, resize_mode)
      notes.append("FID/KID use the standard FID Inception weights (pt_inception-2015-12-05).")
      return network
    except (FileNotFoundError, ImportError, ValueError) as e:
      if choice == "inception":
        raise cli.RunError(f"--fd_network=inception: {e}") from e
      logging.warning("Standard Inception weights unavailable (%s); using random weights.", e)
  notes.append("FD_inception_random_init / KD_inception_random_init: Frechet and kernel distances "
               f"of an Inception-v3 with random weights (seed {seed}); NOT FID/KID, comparable "
               "only with runs of the same seed.")
  return inception.InceptionFeatures.random_init(seed, batch_size, resize_mode)


class _FeaturesOnce:
  """The feature network with each image set's features computed once.

  The fid and domain_gap sections both need the features of Y and F(X); this
  hands them the same arrays instead of running the Inception twice per set.
  """

  def __init__(self, network: inception.InceptionFeatures, progress: bool):
    self.network = network
    self.name = network.name
    self.progress = progress
    self._computed: dict[int, tuple[_Field, np.ndarray]] = {}

  def __call__(self, images: _Field) -> np.ndarray:
    """images: a `_Field` of [H, W, 3] uint8 -> [N, 2048] float32 features.

    Raises:
      cli.UsageError: images of different sizes in one batch, naming the flag.
    """
    if id(images) not in self._computed:
      bar = f"Inception features of --{images.flag}" if self.progress else ""
      try:
        self._computed[id(images)] = (images, self.network(images, progress=bar))
      except ValueError as e:
        raise cli.UsageError(f"--{images.flag}: {e} Resize them to one size, or pass "
                             "--fd_network=none.") from e
    return self._computed[id(images)][1]



def _check_settings(*, fd_network: str, inception_weights: str, segmenter: str,
                    segmenter_steps: int, downstream_steps: int, kid_subsets: int,
                    kid_subset_size: int, worst_k: int, batch_size: int) -> None:
  """Raises cli.UsageError naming the first setting out of its range."""
  if fd_network not in FD_NETWORKS:
    raise cli.UsageError(f"--fd_network={fd_network!r}: expected one of {', '.join(FD_NETWORKS)}.")
  if fd_network == "inception" and inception_weights and not epath.Path(
      inception_weights).is_file():
    # (--fd_network=auto falls back to random weights instead, with a warning.)
    raise cli.UsageError(f"--inception_weights={inception_weights}: no such file.")
  if segmenter and not epath.Path(segmenter).exists():
    raise cli.UsageError(f"--segmenter={segmenter}: no such file or folder.")
  minimums = dict(segmenter_steps=(segmenter_steps, 1), downstream_steps=(downstream_steps, 0),
                  kid_subsets=(kid_subsets, 1), kid_subset_size=(kid_subset_size, 2),
                  worst_k=(worst_k, 0), batch_size=(batch_size, 1))
  for name, (value, minimum) in minimums.items():
    if value < minimum:
      raise cli.UsageError(f"--{name}={value}: must be at least {minimum}.")


@contextlib.contextmanager
def _labels_checked(labels: _Field):
  """Turns a segmenter's complaint about a label map into a UsageError naming its file."""
  try:
    yield
  except segmenter_lib.InvalidLabelsError as e:
    flag = {"source": "labels", "target": "target_labels"}[labels.flag]
    raise cli.UsageError(f"--{flag}: the label map of {labels.relpath(e.index)}: {e} Labels "
                         "are single-channel PNGs of Cityscapes train ids (0-18, 255 = "
                         "ignore).") from e


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(round(seconds), 60)
  return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class _Stages:
  """Logs "evaluate [k/n] TITLE ..." when a stage starts and its duration when it ends.

  A run takes minutes to tens of minutes; these lines (and the tqdm bars of the
  long loops inside) say what it is doing and how far along it is.
  """

  def __init__(self, titles: Sequence[str]):
    self.titles = list(titles)
    self.started = time.perf_counter()

  @contextlib.contextmanager
  def __call__(self, title: str):
    number = f"[{self.titles.index(title) + 1}/{len(self.titles)}]"
    logging.info("evaluate %s %s ...", number, title)
    start = time.perf_counter()
    yield
    logging.info("evaluate %s %s: done in %s (%s since the start)", number, title,
                 _duration(time.perf_counter() - start),
                 _duration(time.perf_counter() - self.started))


def _instances(source_data, source_relpaths: Sequence[str], instances: str, labels: str,
               references, notes: list[str]):
  """X's instances for the detail section (see the module docstring); notes say which."""
  if instances:
    try:
      found = instances_lib.InstanceFolder(instances, source_relpaths)
    except FileNotFoundError as e:
      raise cli.UsageError(f"--instances={instances}: {e}") from e
    notes.append(f"Detail: instances annotated in {instances}.")
    return found
  if isinstance(source_data, sources.ToyStreetsSource):
    notes.append("Detail: instances of the toy_streets scenes.")
    return instances_lib.ToyStreetsInstances(source_data)
  for folder in (labels, getattr(source_data, "root", "")):
    beside = epath.Path(folder).parent / "instances" if folder else None
    if beside is not None and beside.is_dir():
      try:
        found = instances_lib.InstanceFolder(beside, source_relpaths)
      except FileNotFoundError as e:
        raise cli.UsageError(f"--instances (found beside {folder}): {e}; pass --instances "
                             "explicitly.") from e
      notes.append(f"Detail: instances annotated in {beside}.")
      return found
  notes.append("Detail: no instance annotations; instances are the connected components of "
               "each small class in X's classes (no light states).")
  return instances_lib.LabelComponents(references, detail.DETAIL_CLASSES)


class _Annotations:
  """Instances whose unreadable files become a UsageError naming the flag."""

  def __init__(self, found):
    self.found = found

  def __len__(self) -> int:
    return len(self.found)

  def __getitem__(self, index: int):
    try:
      return self.found[index]
    except ValueError as e:
      raise cli.UsageError(f"--instances: {e}") from e


def _check_out(out: str, input_folders: dict[str, str]) -> epath.Path:
  """The report folder, created; cli.RunError naming it when it cannot be written.

  Raises:
    cli.UsageError: --out is, or lies inside, an input folder (`input_folders`:
      flag -> folder): its pictures could replace input files and would be read
      back as images on the next evaluation.
  """
  folder = epath.Path(out)
  for flag, input_folder in input_folders.items():
    if input_folder and storage.is_local(input_folder) and storage.is_within(out, input_folder):
      raise cli.UsageError(f"--out={out} is inside --{flag}={input_folder}: the report's "
                           "pictures would be written among the inputs; choose an --out "
                           "outside every input folder")
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe = storage.temporary_path(folder / "report.json")
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise cli.RunError(f"--out={out}: {e}") from e
  return folder


def evaluate(*, source: str, translated: str, target: str, out: str, labels: str = "",
             target_labels: str = "", ideal: str = "", instances: str = "",
             fd_network: str = "auto", inception_weights: str = "",
             fid_resize: str = inception.DEFAULT_RESIZE_MODE, segmenter: str = "", segmenter_steps: int = 300, segmenter_size: str = "",
             downstream_steps: int = 300, kid_subsets: int = fid.KID_SUBSETS,
             kid_subset_size: int = fid.KID_SUBSET_SIZE, worst_k: int = 4,
             batch_size: int = 32, seed: int = 0, progress: bool = True) -> dict:
  """Runs every evaluator the inputs allow and writes the report (arguments as the flags).

  Every input and setting is checked before the first slow stage. Each stage
  logs a line when it starts and when it ends; `progress` adds tqdm bars
  inside the long loops.

  Returns:
    The report dict written to `out/report.json` (`out` may be gs://...).

  Raises:
    cli.UsageError: a missing folder, translated (or ideal) files that do not
      match the source files, an unreadable input file or a setting out of
      range (the message names the flag and the file).
    cli.RunError: --out cannot be written, --fd_network=inception without its
      weights, or a segmenter that cannot be loaded.
  """
  try:
    inception.check_resize_mode(fid_resize)
  except ValueError as e:
    raise cli.UsageError(f"--fid_resize: {e}") from e
  _check_settings(fd_network=fd_network, inception_weights=inception_weights,
                  segmenter=segmenter, segmenter_steps=segmenter_steps,
                  downstream_steps=downstream_steps, kid_subsets=kid_subsets,
                  kid_subset_size=kid_subset_size, worst_k=worst_k, batch_size=batch_size)
  train_size = cli.parse_size("segmenter_size", segmenter_size) if segmenter_size else None
  inputs = dict(source=source, labels=labels, translated=translated, target=target,
                target_labels=target_labels, ideal=ideal, instances=instances,
                fd_network=fd_network, fid_resize_mode=fid_resize, segmenter=segmenter)
  source_data = _open("source", source, labels)
  translated_data = _open("translated", translated)
  target_data = _open("target", target, target_labels)
  source_relpaths = _relpaths(source_data)
  order = match_translated(source_relpaths, _relpaths(translated_data), translated)
  ideal_images = None
  if ideal:
    ideal_data = _open("ideal", ideal)
    ideal_images = _Field(ideal_data, "image", "ideal", match_translated(
        source_relpaths, _relpaths(ideal_data), ideal, flag="ideal"))
  if instances and not epath.Path(instances).is_dir():
    raise cli.UsageError(f"--instances={instances}: no such folder.")
  # Folder sources have a root; tfds and toy_streets sources have no folder to protect.
  input_folders = {"labels": labels, "target_labels": target_labels, "instances": instances,
                   "source": getattr(source_data, "root", ""),
                   "translated": getattr(translated_data, "root", ""),
                   "target": getattr(target_data, "root", "")}
  if ideal:
    input_folders["ideal"] = getattr(ideal_data, "root", "")
  out_folder = _check_out(out, input_folders)
  if fd_network != "none":
    for flag, data in (("source", source_data), ("target", target_data)):
      if len(data) < 2:
        raise cli.UsageError(f"--{flag}: {len(data)} image(s); Frechet and kernel distances "
                             "need at least 2 per set (or pass --fd_network=none).")

  source_images = _Field(source_data, "image", "source")
  translated_images = _Field(translated_data, "image", "translated", order)
  target_images = _Field(target_data, "image", "target")
  source_labels = _Field(source_data, "label", "source") if getattr(
      source_data, "has_labels", False) else None
  target_labels_seq = _Field(target_data, "label", "target") if getattr(
      target_data, "has_labels", False) else None

  on_target = target_labels_seq is not None
  if segmenter:
    segmenter_stage = f"segmenter: loading {segmenter}"
  elif on_target or source_labels is not None:
    segmenter_stage = ("segmenter: training a small U-Net on "
                       f"{'Y' if on_target else 'X'}'s labels ({segmenter_steps} steps)")
  else:
    segmenter_stage = None
  segmented = ["F(X)"] + (["X"] if source_labels is None else []) + (
      ["the ideal translation"] if ideal_images is not None else [])
  segmenting_stage = f"segmenting {', '.join(segmented)} once for the sections below"
  run_downstream = bool(downstream_steps) and source_labels is not None and on_target
  downstream_stage = (f"downstream: training U-Nets on X and on F(X) ({downstream_steps} steps "
                      "each), testing them on Y")
  titles = []
  if fd_network != "none":
    titles += ["feature network: loading the Inception",
               "fid: features of Y and F(X), FID/KID", "domain_gap: features of X, scatter"]
  if segmenter_stage:
    titles += [segmenter_stage, segmenting_stage]
    if source_labels is not None:
      titles.append("semantic: seg(F(X)) against X's labels")
    titles += ["flips: seg(F(X)) against X's references, pictures",
               "detail: poles, lights and signs of X in F(X)"]
  if run_downstream:
    titles.append(downstream_stage)
  titles.append("report: writing report.json and report.md")
  stage = _Stages(titles)
  logging.info("evaluate: %d source images, %d target images, output %s", len(source_images),
               len(target_images), out)

  notes, sections, pictures = [], {}, {}
  if fd_network != "none":
    with stage(titles[0]):
      features = _FeaturesOnce(
          _feature_network(fd_network, inception_weights, batch_size, seed, fid_resize, notes),
          progress)
    with stage(titles[1]):
      sections["fid"] = fid.FidKidEvaluator(
          features, target_images, features.name, kid_subsets, kid_subset_size).run(
              translated_images)
    with stage(titles[2]):
      gap = domain_gap.DomainGapEvaluator(features, source_images, target_images, features.name,
                                          out_dir=out_folder, seed=seed)
      sections["domain_gap"] = gap.run(translated_images)
      pictures["domain_gap"] = gap.pictures

  segment_fn = None
  if segmenter:
    with stage(segmenter_stage):
      try:
        segment_fn = segmenter_lib.load_segmenter(segmenter)
      except (FileNotFoundError, ImportError, ValueError, OSError) as e:
        raise cli.RunError(f"--segmenter={segmenter}: {e}") from e
    notes.append(f"Segmenter: {segmenter}.")
  elif segmenter_stage:
    with stage(segmenter_stage):
      with _labels_checked(target_labels_seq if on_target else source_labels):
        segment_fn = segmenter_lib.train_segmenter(
            target_images if on_target else source_images,
            target_labels_seq if on_target else source_labels, len(semantic.CITYSCAPES_CLASSES),
            steps=segmenter_steps, image_size=train_size, seed=seed, progress=progress)
    notes.append(f"Segmenter: a small U-Net trained {segmenter_steps} steps on "
                 f"{'Y' if on_target else 'X'}'s labels (seed {seed}); scores measure "
                 "consistency, not absolute segmentation quality.")
  else:
    notes.append("No segmenter and no labels: semantic, flips and detail sections skipped.")

  if segment_fn is not None:
    with stage(segmenting_stage):
      def segment_all(images):
        return segmenter_lib.segment_all(
            segment_fn, images, batch_size=batch_size,
            progress=f"segmenting --{images.flag}" if progress else "")
      predicted = segment_all(translated_images)
      references = source_labels if source_labels is not None else segment_all(source_images)
      ideal_predicted = segment_all(ideal_images) if ideal_images is not None else None
    if source_labels is not None:
      with stage("semantic: seg(F(X)) against X's labels"):
        sections["semantic"] = semantic.SemanticConsistencyEvaluator(source_labels).run(predicted)
    else:
      notes.append("No labels for X: semantic section skipped; flips and detail use seg(X).")
    if ideal_images is None:
      notes.append("No --ideal: flips are raw rates, which include the segmenter's own errors.")
    with stage("flips: seg(F(X)) against X's references, pictures"):
      flip_evaluator = evaluators.REGISTRY["flips"](
          source_images, references, ideal_predicted=ideal_predicted,
          reference_name="X's labels" if source_labels is not None else "seg(X)",
          out_dir=out_folder, worst_k=worst_k, source_names=source_relpaths)
      sections["flips"] = flip_evaluator.score(translated_images, predicted)
      pictures["flips"] = flip_evaluator.pictures
    with stage("detail: poles, lights and signs of X in F(X)"):
      annotations = _Annotations(_instances(source_data, source_relpaths, instances, labels,
                                            references, notes))
      try:
        detail_evaluator = evaluators.REGISTRY["detail"](
            source_images, annotations, ideal_images=ideal_images,
            ideal_predicted=ideal_predicted, out_dir=out_folder, source_names=source_relpaths)
        sections["detail"] = detail_evaluator.score(translated_images, predicted)
      except ValueError as e:
        raise cli.UsageError(f"--instances: {e}") from e
      pictures["detail"] = detail_evaluator.pictures

  if run_downstream:
    with stage(downstream_stage):
      with _labels_checked(source_labels):
        sections["downstream"] = downstream.DownstreamGainEvaluator(
            source_images, source_labels, target_images, target_labels_seq,
            steps=downstream_steps, image_size=train_size, seed=seed,
            progress=progress).run(translated_images)
  elif downstream_steps:
    notes.append("Downstream section skipped: it needs labels for both X and Y.")
  with stage(titles[-1]):
    return report.write_report(out_folder, sections, pictures, notes, inputs)


# Flags live in a FlagValues of this command's own, so that every entry point can be
# imported next to the others (their flag names overlap: --labels, --batch_size).
FLAGS = flags.FlagValues()
_SOURCE = flags.DEFINE_string(
    "source", None, "Simulated images X: an open_source spec (folder:PATH, tfds:NAME[:SPLIT], "
    "toy_streets:sim[:SPLIT]) or a folder path.", flag_values=FLAGS)
_LABELS = flags.DEFINE_string(
    "labels", "", "Folder of X's label maps (single-channel PNGs of Cityscapes train ids, 255 = "
    "ignore), matched to --source by relative path and stem. Only for folder sources; "
    "tfds/toy_streets sources carry their labels.", flag_values=FLAGS)
_TRANSLATED = flags.DEFINE_string(
    "translated", None, "Translated images F(X): a folder (or folder: spec) with one image per "
    "source image under the same relative path; the extension may differ.", flag_values=FLAGS)
_TARGET = flags.DEFINE_string(
    "target", None, "Real images Y: an open_source spec or a folder path.", flag_values=FLAGS)
_TARGET_LABELS = flags.DEFINE_string(
    "target_labels", "", "Folder of Y's label maps (folder sources only). With them Y's labelled "
    "split trains the default segmenter and tests the downstream segmenters.", flag_values=FLAGS)
_IDEAL = flags.DEFINE_string(
    "ideal", "", "The ideal translation of X, where it exists (on the toy world the real-style "
    "render of the same scenes, e.g. folder:DIR/real_mismatch/images for DIR/sim_detail): an "
    "open_source spec or folder with one image per source image under the same relative path. "
    "Flips are then also reported in excess of the ideal's (what the translation adds to the "
    "segmenter's own errors) and detail numbers beside the ideal's.", flag_values=FLAGS)
_INSTANCES = flags.DEFINE_string(
    "instances", "", "Folder of X's instance annotations for the detail section: <stem>.json "
    "and the 16-bit instance map <stem>.png per source image (as toy_streets --out writes them "
    "in DIR/<style>/instances). Empty: the 'instances' folder beside --labels or the source "
    "images if there is one, the rendered instances of toy_streets sources, else connected "
    "components of X's classes.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Output folder for report.json, report.md and pictures "
                           "(any etils.epath path, gs://bucket/... too).", flag_values=FLAGS)
_FD_NETWORK = flags.DEFINE_enum(
    "fd_network", "auto", list(FD_NETWORKS),
    "Feature network of the Frechet/kernel distances. 'inception': the standard FID Inception "
    "(downloaded once, sha256-checked, cached under $XDG_CACHE_HOME/i2i_jax; fails offline). "
    "'inception_random_init': the same network with seeded random weights, reported as "
    "FD_inception_random_init (not comparable to FID). 'auto': the first if its weights can be "
    "had, else the second. 'none': skip the fid and domain_gap sections.", flag_values=FLAGS)
_INCEPTION_WEIGHTS = flags.DEFINE_string(
    "inception_weights", "", "Path to pt_inception-2015-12-05-6726825d.pth (or its converted .npz) "
    "instead of the download cache.", flag_values=FLAGS)
_FID_RESIZE = flags.DEFINE_enum(
    "fid_resize", inception.DEFAULT_RESIZE_MODE, list(inception.RESIZE_MODES),
    "How FID/KID inputs are resized to 299x299, as clean-fid names the modes: "
    "'legacy_tensorflow' (the original TF FID, torch-fidelity) or 'clean' (antialiased PIL "
    "bicubic). Compare only numbers computed with the same mode; the report names it.",
    flag_values=FLAGS)
_SEGMENTER = flags.DEFINE_string(
    "segmenter", "", "Segmentation model for the semantic, flips and detail sections: a .onnx file "
    "(NCHW float input normalised with ImageNet mean/std, run with onnxruntime) or a FlaxSegmenter "
    "checkpoint folder. Empty: train a small U-Net on Y's labelled split (else on X's labels).", flag_values=FLAGS)
_SEGMENTER_STEPS = flags.DEFINE_integer(
    "segmenter_steps", 300, "Training steps of the default segmenter.", flag_values=FLAGS)
_SEGMENTER_SIZE = flags.DEFINE_string(
    "segmenter_size", "", "HEIGHTxWIDTH the segmenters are trained at (e.g. 256x512); empty: the "
    "size of the first training image.", flag_values=FLAGS)
_DOWNSTREAM_STEPS = flags.DEFINE_integer(
    "downstream_steps", 300, "Training steps of each downstream segmenter (on X and on F(X)); 0 "
    "skips the downstream section.", flag_values=FLAGS)
_KID_SUBSETS = flags.DEFINE_integer("kid_subsets", fid.KID_SUBSETS, "KID: number of subsets.", flag_values=FLAGS)
_KID_SUBSET_SIZE = flags.DEFINE_integer(
    "kid_subset_size", fid.KID_SUBSET_SIZE,
    "KID: samples per subset (shrunk to the smaller set's size when the sets are smaller).", flag_values=FLAGS)
_WORST_K = flags.DEFINE_integer("worst_k", 4, "How many worst-flipping images to draw.", flag_values=FLAGS)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per Inception batch.", flag_values=FLAGS)
_SEED = flags.DEFINE_integer(
    "seed", 0, "Seeds the random-init Inception, segmenter training and the projections.", flag_values=FLAGS)
flags.mark_flags_as_required(["source", "translated", "target", "out"], flag_values=FLAGS)


def main(argv: Sequence[str]) -> int:
  """`python -m i2i_jax.evaluate` in this process: `argv` as sys.argv; returns 0."""
  arguments = cli.parse_flags(argv, FLAGS, __doc__)
  if len(arguments) > 1:
    raise cli.UsageError(f"unexpected arguments {arguments[1:]} (flags are --name=value; "
                         "see --help)")
  result = evaluate(
      source=_SOURCE.value, translated=_TRANSLATED.value, target=_TARGET.value, out=_OUT.value,
      labels=_LABELS.value, target_labels=_TARGET_LABELS.value, ideal=_IDEAL.value,
      instances=_INSTANCES.value, fd_network=_FD_NETWORK.value,
      inception_weights=_INCEPTION_WEIGHTS.value, fid_resize=_FID_RESIZE.value,
      segmenter=_SEGMENTER.value,
      segmenter_steps=_SEGMENTER_STEPS.value, segmenter_size=_SEGMENTER_SIZE.value,
      downstream_steps=_DOWNSTREAM_STEPS.value, kid_subsets=_KID_SUBSETS.value,
      kid_subset_size=_KID_SUBSET_SIZE.value, worst_k=_WORST_K.value,
      batch_size=_BATCH_SIZE.value, seed=_SEED.value)
  for section, metrics in result["metrics"].items():
    logging.info("%s: %s", section, metrics)
  print(f"Wrote {epath.Path(_OUT.value) / 'report.md'} and report.json")
  return cli.EXIT_OK


if __name__ == "__main__":
  cli.run(main)
