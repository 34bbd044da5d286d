"""Every command line runs in-process through its `main(argv)`, with its own flags.

The subprocess behaviour of `python -m ...` (exit codes, one-line errors, signals)
is tested beside each command (test_translate.py, test_train.py, ...).
"""

import importlib.util
import pathlib

import pytest

from i2i_jax import cli
from i2i_jax import convert
from i2i_jax import evaluate
from i2i_jax import train
from i2i_jax import translate
from i2i_jax.data import tfds as i2i_tfds
from i2i_jax.data import toy_streets

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_sweep():
  spec = importlib.util.spec_from_file_location("launch_sweep", REPO / "launch" / "sweep.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


sweep = _load_sweep()


@pytest.mark.parametrize("module, flag", [
    (translate, "--workdir:"), (train, "--workdir:"), (convert, "--checkpoint:"),
    (toy_streets, "--style:"), (i2i_tfds, "--data_dir:"), (sweep, "--root:"),
    (evaluate, "--source:")])
def test_help_is_the_docstring_and_the_commands_own_flags(module, flag):
  with pytest.raises(cli.HelpRequested) as help_requested:
    module.main(["command", "--help"])
  text = str(help_requested.value)
  assert text.startswith(module.__doc__.strip().splitlines()[0]) and flag in text
  assert "--verbosity" not in text  # absl's own flags are accepted, not listed


def test_commands_with_overlapping_flag_names_import_together_and_parse_apart(tmp_path):
  commands = (translate, train, convert, toy_streets, i2i_tfds, evaluate)
  assert len({id(m.FLAGS) for m in commands}) == len(commands)
  with pytest.raises(cli.UsageError, match="pass exactly one of --workdir and --checkpoint"):
    translate.main(["translate", f"--input={tmp_path}", f"--output={tmp_path / 'out'}"])
  arguments = train._parse_flags(["train", "--config=configs/tiny.py", f"--workdir={tmp_path}"])
  assert arguments == ["train"] and train._WORKDIR.value == str(tmp_path)
  assert translate._WORKDIR.value is None


def test_a_second_run_in_the_same_process_starts_from_the_defaults(tmp_path, capsys):
  assert toy_streets.main(["toy_streets", "--stats", "--n", "1", "--height", "16",
                           "--width", "32"]) == cli.EXIT_OK
  assert "| class | sim:train |" in capsys.readouterr().out
  with pytest.raises(cli.UsageError, match="--out is required"):  # --stats is not kept
    toy_streets.main(["toy_streets", "--n", "1"])

  train._parse_flags(["train", "--config=configs/tiny.py", f"--workdir={tmp_path}",
                      "--config.total_steps=3"])
  assert train._CONFIG.value.total_steps == 3
  train._parse_flags(["train", "--config=configs/tiny.py", f"--workdir={tmp_path}"])
  assert train._CONFIG.value.total_steps != 3


def test_bad_flags_and_config_keys_are_usage_errors_and_absl_flags_are_accepted(tmp_path):
  with pytest.raises(cli.UsageError, match="Unknown command line flag 'no_such_flag'"):
    toy_streets.main(["toy_streets", "--no_such_flag=1"])
  with pytest.raises(cli.UsageError, match="did you mean model.res_channels"):
    train.main(["train", "--config=configs/tiny.py", f"--workdir={tmp_path / 'run'}",
                "--config.model.res_chanels=3"])
  with pytest.raises(cli.UsageError, match="not a directory"):
    i2i_tfds.main(["tfds", "gta5", str(tmp_path / "missing"), "--nologtostderr"])
  with pytest.raises(cli.UsageError, match="unexpected arguments"):
    toy_streets.main(["toy_streets", "--stats", "stray"])
  assert not (tmp_path / "run").exists()


def test_convert_refuses_a_file_that_is_not_a_checkpoint_and_writes_nothing(tmp_path):
  not_a_checkpoint = tmp_path / "vsait.ckpt"
  not_a_checkpoint.write_bytes(b"not a checkpoint")
  with pytest.raises(cli.UsageError):
    convert.main(["convert", f"--checkpoint={not_a_checkpoint}",
                  f"--workdir={tmp_path / 'imported'}", "--config=configs/tiny.py"])
  assert not (tmp_path / "imported").exists()


def test_sweep_takes_its_command_first_then_that_commands_flags(tmp_path, capsys, monkeypatch):
  monkeypatch.chdir(REPO)  # the sweep file names its base config relative to the repository
  root = tmp_path / "sweep"
  assert sweep.main(["sweep.py", "run", "launch/sweeps/example.py", f"--root={root}",
                     "--dry-run"]) == 0
  commands = capsys.readouterr().out.splitlines()
  assert len(commands) == 4 and all("-m i2i_jax.train" in c for c in commands)
  assert not root.exists()
  with pytest.raises(cli.UsageError, match="Unknown command line flag 'sort'"):
    sweep.main(["sweep.py", "run", "launch/sweeps/example.py", f"--root={root}", "--sort=x"])
  with pytest.raises(cli.UsageError, match="expected a command"):
    sweep.main(["sweep.py", f"--root={root}"])
  with pytest.raises(cli.UsageError, match="no sweep.json"):
    sweep.main(["sweep.py", "collect", f"--root={root}"])
