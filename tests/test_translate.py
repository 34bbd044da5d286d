"""i2i_jax.translate: the Translator API and `python -m i2i_jax.translate` on real files.

One tiny-config run is checkpointed once (real Orbax files) and every test translates
with it; the CLI tests run real subprocesses, kill them with real signals, and read
the files they leave behind.
"""

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from etils import epath
import jax
import numpy as np
import pytest
from PIL import Image

from i2i_jax import checkpoint, output_tree
from i2i_jax import translator as translator_lib
from i2i_jax.data import sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tiny_workdir):
  return tiny_workdir


@pytest.fixture(scope="module")
def generator(workdir):
  return checkpoint.load_generator(workdir)


def _random_images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_same_size_images_compile_once_and_match_the_generator(generator):
  batch_size = jax.local_device_count()
  translator = translator_lib.Translator(generator, batch_size=batch_size, bucket_multiple=16)
  # Two device calls, the second filled up with padding images.
  images = _random_images((batch_size + 3, 32, 48, 3))

  translated = translator.translate(images)

  assert translated.shape == images.shape and translated.dtype == np.uint8
  assert translator.num_compilations == 1
  # No padding at a bucket size: exactly the generator's output, mapped to uint8.
  expected = generator.module.apply(generator.variables, images / 127.5 - 1.0)
  expected = np.clip(np.round((np.asarray(expected) + 1.0) * 127.5), 0, 255)
  assert np.abs(translated.astype(int) - expected).max() <= 1
  # Float inputs in [-1, 1] are the same images.
  from_float = translator.translate(images.astype(np.float32) / 127.5 - 1.0)
  assert np.abs(from_float.astype(int) - translated).max() <= 1


def test_odd_sizes_are_padded_by_bucket_and_cropped_back(generator):
  translator = translator_lib.Translator(generator, batch_size=2, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])
  images = [_random_images((h, w, 3), seed) for seed, (h, w) in
            enumerate([(17, 30), (31, 19), (20, 20), (5, 3), (40, 33)])]

  translated = translator.translate_list(images)

  assert [t.shape for t in translated] == [i.shape for i in images]
  # (17,30), (31,19), (20,20) share the 32x32 bucket; (5,3) is 16x16, (40,33) 48x48.
  assert translator.num_compilations == 3
  assert translator.bucket_shape(17, 30) == (32, 32)
  # An image is translated the same whatever else is in its batch.
  alone = translator.translate_list([images[1]])[0]
  np.testing.assert_array_equal(alone, translated[1])


def test_translator_rejects_bad_settings_naming_them(generator):
  with pytest.raises(ValueError, match="bucket_multiple=6"):
    translator_lib.Translator(generator, bucket_multiple=6, devices=jax.local_devices()[:1])
  with pytest.raises(ValueError, match="batch_size=3 .* 2 devices"):
    translator_lib.Translator(generator, batch_size=3, devices=jax.local_devices()[:2])
  translator = translator_lib.Translator(generator, batch_size=1, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])
  with pytest.raises(ValueError, match=r"\(5, 8\).*\[B, H, W, 3\]"):
    translator.translate(np.zeros((5, 8), np.uint8))


def test_batches_split_over_all_devices_match_one_device(generator):
  devices = jax.local_devices()
  assert len(devices) >= 4, "tests/conftest.py asks for 8 CPU devices"
  images = [_random_images((36, 20, 3), seed) for seed in range(len(devices))]
  sharded = translator_lib.Translator(generator, batch_size=len(devices), bucket_multiple=16)
  single = translator_lib.Translator(generator, batch_size=len(devices), bucket_multiple=16,
                                     devices=devices[:1])

  pending = sharded.start([sharded.pad_to_bucket(i) for i in images], [(36, 20)] * len(images))

  assert len(pending.array.sharding.device_set) == len(devices)
  difference = np.stack(pending.result()).astype(int) - single.translate(np.stack(images))
  assert np.abs(difference).max() <= 1


def _write_image(path, shape, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(_random_images(shape, seed)).save(path)


def _write_label(path, height, width, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  label = np.random.default_rng(seed).integers(0, 19, (height, width), dtype=np.uint8)
  Image.fromarray(label).save(path)


# The CLI rounds --batch_size up to a multiple of the devices; on 2 cores one CPU device
# (not conftest's 8) keeps its runs short. Sharding is tested in-process above.
CLI_ENV = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "i2i_jax.translate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600, env=CLI_ENV)


def test_help_explains_the_flags():
  result = run_cli("--help")
  assert result.returncode == 0 and "Traceback" not in result.stderr
  for flag in ("workdir", "checkpoint", "input", "labels", "output", "resize", "format",
               "quality", "dtype", "batch_size", "bucket_multiple"):
    assert f"--{flag}:" in result.stdout, flag
  assert "--[no]overwrite:" in result.stdout and "--[no]link_labels:" in result.stdout
  assert "Exit status" in result.stdout


def test_cli_translates_a_nested_folder_into_a_drop_in_data_set(workdir, tmp_path):
  images, labels, output = tmp_path / "images", tmp_path / "labels", tmp_path / "out"
  sizes = {"top.png": (52, 36), "city/a/0001.png": (1052, 1914),
           "city/a/0002.jpg": (517, 333), "city/b/deep/0003.png": (64, 64)}
  for seed, (relpath, (height, width)) in enumerate(sizes.items()):
    _write_image(str(images / relpath), (height, width, 3), seed)
    _write_label(str(labels / (os.path.splitext(relpath)[0] + ".png")), height, width, seed)
  corrupt = images / "city" / "b" / "broken.png"
  corrupt.write_bytes(Image.open(images / "top.png").tobytes()[:100])  # no PNG header
  _write_label(str(labels / "city" / "b" / "broken.png"), 10, 10, 9)

  result = run_cli(f"--workdir={workdir}", f"--input={images}", f"--labels={labels}",
                   f"--output={output}", "--batch_size=2", "--bucket_multiple=64")

  assert result.returncode == 1, result.stderr[-3000:]  # something failed
  assert "city/b/broken.png" in result.stdout and "failed 1 of 5" in result.stdout
  for relpath, size in sizes.items():
    out_relpath = os.path.splitext(relpath)[0] + ".png"
    with Image.open(output / "images" / out_relpath) as translated:
      assert (translated.height, translated.width) == size, relpath
      assert translated.mode == "RGB"
    label_out = output / "labels" / out_relpath
    label_in = labels / out_relpath
    assert label_out.read_bytes() == label_in.read_bytes()
    assert not os.path.samefile(label_out, label_in)  # a copy, not a link
  assert not (output / "images" / "city" / "b" / "broken.png").exists()
  assert not (output / "labels" / "city" / "b" / "broken.png").exists()
  manifest = json.loads((output / "manifest.json").read_text())
  assert manifest["status"] == "incomplete"  # one input could not be read
  assert manifest["checkpoint"] == {"path": os.path.join(workdir, "checkpoints"), "step": 0}
  assert manifest["counts"] == {"total": 5, "translated": 4, "skipped": 0, "failed": 1}
  assert [(f["relpath"], f["stage"]) for f in manifest["failed"]] == [
      ("city/b/broken.png", "read")]
  assert manifest["done"] == sorted(sizes)
  assert manifest["config"]["model"]["res_channels"] == 8

  # A rerun finds everything done (and the corrupt file still corrupt).
  rerun = run_cli(f"--checkpoint={workdir}/checkpoints/0", f"--input=folder:{images}",
                  f"--labels={labels}", f"--output={output}", "--batch_size=2")
  assert rerun.returncode == 1
  assert "translated 0, skipped 4" in rerun.stdout
  # Other settings into the same output are refused.
  refused = run_cli(f"--workdir={workdir}", f"--input={images}", f"--output={output}",
                    "--format=jpg")
  assert refused.returncode == 2
  assert "manifest.json" in refused.stderr and "--overwrite" in refused.stderr


@pytest.mark.parametrize("make_args, named", [
    (lambda w, t: [f"--workdir={w}", f"--input={t}/missing", f"--output={t}/out"],
     "missing"),
    (lambda w, t: [f"--input={t}", f"--output={t}/out"], "--workdir"),
    (lambda w, t: ["--no_such_flag=1"], "no_such_flag"),
    (lambda w, t: [f"--workdir={w}", f"--input={t}", f"--output={t}/out", "--resize=3"],
     "--resize"),
])
def test_cli_usage_errors_exit_2_with_one_line(workdir, tmp_path, make_args, named):
  (tmp_path / "a.png").write_bytes(b"")

  result = run_cli(*make_args(workdir, tmp_path))

  assert result.returncode == 2
  assert "Traceback" not in result.stderr and "--bucket_multiple" not in result.stderr
  errors = [line for line in result.stderr.splitlines() if "error:" in line]
  assert len(errors) == 1 and named in errors[0], result.stderr[-2000:]


def test_process_shards_are_disjoint_and_cover_the_data_set(generator, tmp_path):
  images = tmp_path / "images"
  for index in range(5):
    _write_image(str(images / f"{index}.png"), (20, 24, 3), index)
  translator = translator_lib.Translator(generator, batch_size=2, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])
  source = sources.open_source(f"folder:{images}")

  summaries = [translator_lib.translate_dataset(translator, source, str(tmp_path / "out"),
                                           process_index=index, process_count=2,
                                           progress=False) for index in range(2)]

  assert [s.translated for s in summaries] == [3, 2]
  journals = [sorted((tmp_path / "out" / f"translated.0000{i}-of-00002.log").read_text().split())
              for i in range(2)]
  assert journals == [["0.png", "2.png", "4.png"], ["1.png", "3.png"]]
  for index in range(2):
    manifest = json.loads((tmp_path / "out" / f"manifest.0000{index}-of-00002.json").read_text())
    assert manifest["done"] == journals[index]
  assert sorted(os.listdir(tmp_path / "out" / "images")) == [f"{i}.png" for i in range(5)]


def _stop_midway(args, journal, sig):
  """Starts the CLI, waits until it has written a few images, sends `sig`.

  SIGINT goes to the whole process group, as a terminal's Ctrl-C does (encoding
  worker processes included); the other signals to the main process only.
  """
  process = subprocess.Popen([sys.executable, "-m", "i2i_jax.translate", *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=CLI_ENV, start_new_session=True)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    if journal.exists() and len(journal.read_text().split()) >= 3:
      break
    time.sleep(0.02)
  if sig == signal.SIGINT:
    os.killpg(process.pid, sig)
  else:
    process.send_signal(sig)
  stdout, stderr = process.communicate(timeout=300)
  return process.returncode, stdout, stderr


# PNG level 1 encodes with fpng in worker processes (it holds the GIL), level 9 in threads.
@pytest.mark.parametrize("sig, png_level", [(signal.SIGTERM, 9), (signal.SIGINT, 1),
                                            (signal.SIGKILL, 9)])
def test_killed_run_resumes_without_truncated_or_repeated_outputs(workdir, tmp_path, sig,
                                                                  png_level):
  images, output = tmp_path / "images", tmp_path / "out"
  count = 40
  for index in range(count):
    _write_image(str(images / f"part{index % 3}" / f"{index:03d}.png"), (96, 160, 3), index)
  args = [f"--workdir={workdir}", f"--input={images}", f"--output={output}", "--batch_size=1",
          "--read_threads=1", "--write_threads=1", f"--png_compress_level={png_level}"]
  journal = output / "translated.log"

  returncode, stdout, stderr = _stop_midway(args, journal, sig)

  first_run = journal.read_text().split()
  assert 0 < len(first_run) < count, "the run was not stopped midway"
  if sig != signal.SIGKILL:  # a graceful stop: in-flight images written, manifest says so
    assert returncode == 128 + sig, stderr[-3000:]
    assert "interrupted" in stdout and "Traceback" not in stderr
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["done"] == sorted(first_run)
  else:
    assert returncode == -signal.SIGKILL

  rerun = run_cli(*args)

  assert rerun.returncode == 0, rerun.stderr[-3000:]
  journal_lines = journal.read_text().split()
  assert len(journal_lines) == len(set(journal_lines)), "a file was translated twice"
  manifest = json.loads((output / "manifest.json").read_text())
  assert manifest["status"] == "complete"
  assert manifest["counts"]["translated"] + manifest["counts"]["skipped"] == count
  assert manifest["counts"]["skipped"] >= len(first_run)
  written = sorted(os.path.relpath(os.path.join(d, n), output / "images")
                   for d, _, names in os.walk(output / "images") for n in names)
  assert written == sorted(f"part{i % 3}/{i:03d}.png" for i in range(count))
  for relpath in written:  # complete files: decodable, full size
    with Image.open(output / "images" / relpath) as image:
      image.load()
      assert image.size == (160, 96)


def test_generated_sources_write_their_labels_as_png(generator, tmp_path):
  source = sources.ToyStreetsSource("sim", "val", height=32, width=64)
  source.seeds = source.seeds[:3]  # a short split keeps the test fast
  translator = translator_lib.Translator(generator, batch_size=2, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])

  first = translator_lib.translate_dataset(translator, source, str(tmp_path), progress=False)
  again = translator_lib.translate_dataset(translator, source, str(tmp_path), progress=False)

  assert (first.translated, again.translated, again.skipped) == (3, 0, 3)
  for index in range(3):
    record = source[index]
    with Image.open(tmp_path / "labels" / record["relpath"]) as label:
      np.testing.assert_array_equal(np.asarray(label), record["label"])
    with Image.open(tmp_path / "images" / record["relpath"]) as image:
      assert image.size == (64, 32)


def test_resize_translates_at_the_given_size_and_writes_at_the_input_size(generator, tmp_path):
  images = tmp_path / "images"
  _write_image(str(images / "keep.jpg"), (20, 24, 3), 0)
  _write_image(str(images / "renamed.png"), (30, 18, 3), 1)
  translator = translator_lib.Translator(generator, batch_size=2, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])
  settings = output_tree.Settings(format="jpg", quality=80, resize=(32, 32))

  summary = translator_lib.translate_dataset(translator, sources.open_source(f"folder:{images}"),
                                        str(tmp_path / "out"), settings=settings,
                                        progress=False)

  assert summary.translated == 2
  assert translator.num_compilations == 1  # both translated at 32x32
  with Image.open(tmp_path / "out" / "images" / "keep.jpg") as image:
    assert (image.format, image.size) == ("JPEG", (24, 20))
  with Image.open(tmp_path / "out" / "images" / "renamed.jpg") as image:
    assert (image.format, image.size) == ("JPEG", (18, 30))
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert manifest["settings"]["resize"] == [32, 32]


def _hash_tree(root):
  """{relative path: sha256} of every file under root."""
  hashes = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def _write_data_set(root, count=3):
  """root/images/s<i>.png and root/labels/s<i>.png, small."""
  for index in range(count):
    _write_image(str(root / "images" / f"s{index}.png"), (20, 24, 3), index)
    _write_label(str(root / "labels" / f"s{index}.png"), 20, 24, index)


@pytest.fixture
def labelled_data(generator, tmp_path):
  """(D, hashes of D's files, a one-device translator, the folder source of D/images
  with D/labels)."""
  data = tmp_path / "D"
  _write_data_set(data)
  translator = translator_lib.Translator(generator, batch_size=1, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])
  source = sources.open_source(f"folder:{data}/images", labels=f"{data}/labels")
  return data, _hash_tree(data), translator, source


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_over_the_inputs_is_refused_whatever_the_flags(workdir, tmp_path, overwrite):
  # The new user's mistake: copy the data set into D/, then translate D/ into D/.
  data = tmp_path / "D"
  _write_data_set(data)
  before = _hash_tree(data)
  extra = ["--overwrite"] if overwrite else []

  result = run_cli(f"--workdir={workdir}", f"--input=folder:{data}/images",
                   f"--labels={data}/labels", f"--output={data}", *extra)

  assert result.returncode == 2, result.stderr[-2000:]
  assert "images" in result.stderr and "--overwrite" not in result.stderr.split("error:")[-1]
  assert _hash_tree(data) == before


def test_outputs_in_or_over_input_folders_are_refused_by_the_library_too(labelled_data,
                                                                        tmp_path):
  data, before, translator, source = labelled_data
  (tmp_path / "link").symlink_to(data / "images")
  for output in (data, data / "images", data / "labels" / "out", tmp_path / "link",
                 tmp_path / "link" / "sub"):
    for overwrite in (False, True):
      with pytest.raises(output_tree.OutputConflictError, match="choose"):
        translator_lib.translate_dataset(translator, source, str(output), overwrite=overwrite,
                                    progress=False)
  assert _hash_tree(data) == before
  # Beside the inputs is fine, even inside the data set's parent folder.
  summary = translator_lib.translate_dataset(translator, source, str(data / "translated"),
                                        progress=False)
  assert summary.translated == 3
  assert {k: h for k, h in _hash_tree(data).items() if k in before} == before


def test_an_output_inside_the_input_folder_is_refused_and_not_created(workdir, tmp_path):
  source = tmp_path / "S"
  for index in range(3):
    _write_image(str(source / f"{index}.png"), (20, 24, 3), index)
  before = _hash_tree(source)

  for _ in range(2):  # a rerun used to translate its own outputs again
    result = run_cli(f"--workdir={workdir}", f"--input=folder:{source}",
                     f"--output={source}/translated")
    assert result.returncode == 2
    assert "inside the input folder" in result.stderr

  assert _hash_tree(source) == before and not (source / "translated").exists()


def test_labels_are_copied_so_editing_them_leaves_the_originals_alone(labelled_data, tmp_path):
  data, before, translator, source = labelled_data
  translator_lib.translate_dataset(translator, source, str(tmp_path / "O"), progress=False)

  # Relabel the translated set in place, as a user would.
  edited = tmp_path / "O" / "labels" / "s0.png"
  with Image.open(edited) as label:
    relabelled = np.asarray(label).copy()
  relabelled[:5] = 7
  Image.fromarray(relabelled).save(edited)

  assert _hash_tree(data) == before
  # Hard links only when asked for.
  translator_lib.translate_dataset(translator, source, str(tmp_path / "L"), link_labels=True,
                              progress=False)
  assert os.path.samefile(tmp_path / "L" / "labels" / "s1.png", data / "labels" / "s1.png")


def test_unreadable_inputs_give_an_honest_status_and_reason(generator, tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for index in range(3):
    (images / f"{index}.png").write_bytes(b"not an image")
  translator = translator_lib.Translator(generator, batch_size=1, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])

  summary = translator_lib.translate_dataset(
      translator, sources.open_source(f"folder:{images}"), str(tmp_path / "out"),
      progress=False)

  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert summary.status == manifest["status"] == "incomplete"
  assert manifest["counts"] == {"total": 3, "translated": 0, "skipped": 0, "failed": 3}
  assert all(f["stage"] == "read" and "UnidentifiedImageError" in f["error"]
             for f in manifest["failed"])


def test_an_output_that_cannot_be_written_stops_the_run_with_exit_3(workdir, tmp_path):
  images, output = tmp_path / "images", tmp_path / "out"
  for index in range(4):
    _write_image(str(images / f"{index}.png"), (20, 24, 3), index)
  output.mkdir()
  (output / "images").write_text("a file where the images folder should be")

  result = run_cli(f"--workdir={workdir}", f"--input={images}", f"--output={output}",
                   "--batch_size=1")

  assert result.returncode == 3, result.stderr[-2000:]
  manifest = json.loads((output / "manifest.json").read_text())
  assert manifest["status"] == "failed" and "cannot write" in manifest["error"]
  assert manifest["counts"]["translated"] == 0
  assert all(f["stage"] == "write" for f in manifest["failed"])
  # An output folder that cannot even be made: one line, exit 3.
  blocked = run_cli(f"--workdir={workdir}", f"--input={images}",
                    f"--output={output}/images/sub")
  assert blocked.returncode == 3 and "Traceback" not in blocked.stderr


def test_a_damaged_checkpoint_falls_back_or_fails_in_one_line(workdir, tmp_path):
  # A run with two steps, the newest damaged (truncated), as a crash mid-copy leaves it.
  run = tmp_path / "run"
  shutil.copytree(workdir, run)
  shutil.copytree(run / "checkpoints" / "0", run / "checkpoints" / "1")
  largest = max((p for p in (run / "checkpoints" / "1").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[:largest.stat().st_size // 2])
  images = tmp_path / "images"
  _write_image(str(images / "a.png"), (20, 24, 3), 0)

  fallback = run_cli(f"--workdir={run}", f"--input={images}", f"--output={tmp_path}/out")
  named = run_cli(f"--workdir={run}", "--step=1", f"--input={images}",
                  f"--output={tmp_path}/out1")

  assert fallback.returncode == 0, fallback.stderr[-2000:]
  assert "checkpoints/1 cannot be read" in fallback.stderr
  manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
  assert manifest["checkpoint"]["step"] == 0
  assert named.returncode == 3 and "Traceback" not in named.stderr
  assert "checkpoints/1 cannot be read" in named.stderr.splitlines()[-1]


def test_outputs_go_to_a_bucket_like_to_a_folder(generator, tmp_path, memory_bucket):
  data = tmp_path / "D"
  _write_data_set(data)
  translator = translator_lib.Translator(generator, batch_size=2, bucket_multiple=16,
                                         devices=jax.local_devices()[:1])
  source = sources.open_source(f"folder:{data}/images", labels=f"{data}/labels")
  output = epath.Path(memory_bucket) / "translated"

  first = translator_lib.translate_dataset(translator, source, output, progress=False)
  again = translator_lib.translate_dataset(translator, source, output, progress=False)

  assert (first.status, first.translated, again.translated, again.skipped) == (
      "complete", 3, 0, 3)
  for index in range(3):
    with (output / "images" / f"s{index}.png").open("rb") as f:
      assert Image.open(f).size == (24, 20)
    assert ((output / "labels" / f"s{index}.png").read_bytes()
            == (data / "labels" / f"s{index}.png").read_bytes())
  manifest = json.loads((output / "manifest.json").read_text())
  assert manifest["status"] == "complete" and len(manifest["done"]) == 3
  assert sorted((output / "translated.log").read_text().split()) == [
      f"s{i}.png" for i in range(3)]
  assert not [p for p in (output / "images").iterdir() if p.name.startswith(".")]


def test_encoding_workers_have_all_started_before_any_image_is_read():
  """A worker's start (~2 s of imports) costs more than hundreds of encodes: the pool
  hands out no work before every worker is up; encoders that release the GIL get none."""
  with translator_lib._encode_processes(output_tree.Settings(format="png"), 3) as pool:
    workers = list(pool._processes.values())  # pylint: disable=protected-access
    assert len(workers) == 3 and all(worker.is_alive() for worker in workers)
    scene = np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8)
    encoded = pool.submit(output_tree.encoder(output_tree.Settings()), scene).result()
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoded))), scene)
  with translator_lib._encode_processes(output_tree.Settings(format="jpg"), 3) as pool:
    assert pool is None
