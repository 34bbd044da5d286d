"""What every command-line entry point shares: flag parsing, exit codes, errors.

Each command is a module with its own `flags.FlagValues()` (so that all of them
import together, though their flag names overlap: --workdir, --labels,
--batch_size) and a `main(argv) -> int` that any Python code can call with a
command line (program name first, as sys.argv):

  FLAGS = flags.FlagValues()
  _OUT = flags.DEFINE_string("out", None, "Output folder.", flag_values=FLAGS)

  def main(argv: Sequence[str]) -> int:
    cli.parse_flags(argv, FLAGS, __doc__)
    ...  # call the flag-free library function with _OUT.value, ...
    return cli.EXIT_OK

  if __name__ == "__main__":
    cli.run(main)

`main` returns the exit code of a command that ran (0, 1, 130, 143) and raises
`HelpRequested` for --help, `UsageError` or `RunError` otherwise; `run(main)`
turns those into what every `python -m i2i_jax.<command>` does:

  --help       prints the command's docstring and flags to stdout, exits 0.
  a bad flag   one line naming it, exit 2 (no help dump, no traceback).
  UsageError   raised by `main` (a bad value, a missing input, a config key
               that does not exist): one line, exit 2.
  RunError     raised by `main` (an unreadable checkpoint, an unwritable
               output): one line, exit 3.
  a bug        any other exception: its traceback, then exit 3.
  Ctrl-C       exit 130 (commands that stop gracefully catch SIGINT first, see
               `StopSignals`, and return EXIT_SIGINT themselves).

absl's own flags (logging: -v, --logtostderr, --log_dir, ...; absl.app's
--run_with_pdb; grain's) are accepted by every command: `parse_flags` adds the
flags of absl's global `flags.FLAGS` to the command's FlagValues, so one parse
reads both, and an unknown flag is reported with the closest names of either.

Exit codes, the same for every command (the README's "Hostile inputs" section
lists what each command does with bad input):

  0    done
  1    done, but some inputs could not be read (each is named in the log)
  2    usage error: a flag, config key, path or setting is wrong (one line says which)
  3    stopped by an error that is not about one input (damaged checkpoint,
       unwritable output, a bug)
  130  stopped by Ctrl-C (SIGINT) after finishing the work in flight; rerun to go on
  143  stopped by SIGTERM, likewise
"""

from collections.abc import Callable, Sequence
import logging as py_logging
import os
import signal
import sys
import threading
import traceback
from typing import Any

from absl import app
from absl import flags
from absl import logging

EXIT_OK = 0
EXIT_FAILED_INPUTS = 1  # finished, but some inputs could not be read (each named)
EXIT_USAGE = 2  # the command line, a config key, a path or a setting is wrong
EXIT_ERROR = 3  # stopped: checkpoint unreadable, output unwritable, or a bug
EXIT_SIGINT = 128 + signal.SIGINT  # 130: stopped by Ctrl-C, work in flight finished
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: stopped by SIGTERM, likewise

_HELP_FLAGS = ("--help", "-help", "-h", "--helpshort", "-?")


class UsageError(Exception):
  """A mistake on the command line or in a config: reported in one line, exit 2."""
  exit_code = EXIT_USAGE


class RunError(Exception):
  """The command cannot go on for a reason outside its inputs: one line, exit 3."""
  exit_code = EXIT_ERROR


class HelpRequested(Exception):
  """--help was given; the message is the help text, which `run` prints to stdout (exit 0)."""
  exit_code = EXIT_OK


class _DropMessages(py_logging.Filter):
  """Drops log records whose message starts with one of `prefixes`."""

  def __init__(self, prefixes: Sequence[str]):
    super().__init__()
    self._prefixes = tuple(prefixes)

  def filter(self, record: py_logging.LogRecord) -> bool:
    return logging.get_verbosity() >= 1 or not str(record.msg).startswith(self._prefixes)


# Lines commands would otherwise print on every run, none about the user's work:
# JAX probing for a TPU on a machine without one, and Orbax saying that a
# checkpoint opened for reading (translate, evaluate) will not be written.
_JAX_NOISE = _DropMessages(("Unable to initialize backend",))
_ORBAX_NOISE = _DropMessages(("CheckpointManagerOptions.read_only=True",
                              "Given directory is read only"))


def quiet_logs() -> None:
  """Keeps JAX's and Orbax's routine lines out of the log; `-v 1` brings them back."""
  py_logging.getLogger("jax._src.xla_bridge").addFilter(_JAX_NOISE)
  py_logging.getLogger("absl").addFilter(_ORBAX_NOISE)  # Orbax logs through absl


def fail(message: str, exit_code: int) -> None:
  """Prints `PROGRAM: error: message` on stderr and exits with `exit_code`."""
  sys.stderr.write(f"{program_name()}: error: {message}\n")
  sys.stderr.flush()
  sys.exit(exit_code)


def parse_size(flag: str, text: str) -> tuple[int, int]:
  """"HxW" -> (H, W), each at least 4; a UsageError naming `--flag` otherwise."""
  try:
    height, width = (int(part) for part in text.lower().split("x"))
  except ValueError as e:
    raise UsageError(f"--{flag}={text!r}: expected HEIGHTxWIDTH, e.g. 256x512.") from e
  if height < 4 or width < 4:
    raise UsageError(f"--{flag}={text!r}: height and width must be at least 4.")
  return height, width


def program_name() -> str:
  """How the user started this program, e.g. "python -m i2i_jax.translate"."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if spec is not None and spec.name:
    return f"python -m {spec.name.removesuffix('.__main__')}"
  return os.path.basename(sys.argv[0]) if sys.argv else "i2i_jax"


def help_text(doc: str, flag_values: flags.FlagValues) -> str:
  """A command's --help: its docstring, then its own flags (absl's are left out)."""
  return f"{doc.rstrip()}\n\nflags:\n{flag_values.get_help(include_special_flags=False)}\n"


def _reset(flag_values: flags.FlagValues) -> None:
  """Puts the command's own flags back to their defaults, so that `main` can run twice.

  absl's global flags, added by an earlier parse, keep their values (the
  verbosity absl.app set, say). config_flags defines one flag per
  --config.KEY override while it parses; they are deleted, or the next parse
  would define them again.
  """
  for name in list(flag_values):
    flag = flag_values[name]
    if name in flags.FLAGS and flags.FLAGS[name] is flag:
      continue
    if "." in name:
      delattr(flag_values, name)
    else:
      flag.unparse()


def _add_absl_flags(flag_values: flags.FlagValues) -> None:
  """Adds absl's global flags (logging, absl.app, grain) that `flag_values` does not name."""
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if name == flag.name and name not in flag_values:  # short names come with the flag
      flag_values[name] = flag


def parse_flags(argv: Sequence[str], flag_values: flags.FlagValues, doc: str) -> list[str]:
  """Parses the command line `argv` (program name first) into `flag_values`.

  Flags not given get their defaults, also when the command ran before in
  this process. absl's global flags are read in the same parse (see the
  module docstring) and `flags.FLAGS` is marked parsed, as absl.app does.

  Args:
    argv: the command line, as sys.argv.
    flag_values: the command's own flags.
    doc: the command's docstring, the top of --help.
  Returns:
    [program name, *the positional arguments].
  Raises:
    HelpRequested: one of --help, -h, --helpshort, -? came before any "--".
    UsageError: an unknown flag or a bad value, in one line.
  """
  argv = list(argv)
  arguments = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  _reset(flag_values)
  if any(argument in _HELP_FLAGS for argument in arguments):
    raise HelpRequested(help_text(doc, flag_values))
  _add_absl_flags(flag_values)
  # config_flags reads the --config.KEY overrides from sys.argv, not from the
  # argv being parsed: show it this one while it parses.
  program_argv, sys.argv = sys.argv, argv
  try:
    remaining = flag_values(argv)
  except flags.Error as e:
    raise UsageError(f"{e} (see --help)") from e
  finally:
    sys.argv = program_argv
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  return remaining


def _leave_parsing_to_main(argv: list[str]) -> list[str]:
  """app.run's flags_parser for a `main` that parses argv itself (`parse_flags`)."""
  flags.FLAGS.mark_as_parsed()
  return argv


def run(main: Callable[[list[str]], int | None]) -> None:
  """Runs `main(sys.argv)` as the command (module docstring): logs, errors, exit code.

  Through absl's app.run, for its logging set-up (INFO unless -v says
  otherwise) and its debugging flags.
  """

  def guarded_main(argv):
    quiet_logs()
    try:
      return main(argv)
    except HelpRequested as e:
      sys.stdout.write(str(e))
      sys.stdout.flush()
      return e.exit_code
    except (UsageError, RunError) as e:
      fail(str(e), e.exit_code)
    except app.UsageError as e:
      fail(str(e), EXIT_USAGE)
    except KeyboardInterrupt:
      fail("interrupted (Ctrl-C)", EXIT_SIGINT)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      fail(f"{type(e).__name__}: {e}", EXIT_ERROR)

  app.run(guarded_main, flags_parser=_leave_parsing_to_main)


class StopSignals:
  """Turns SIGINT (Ctrl-C) and SIGTERM into a request to stop after the work in flight.

  The first signal sets `event` (check it between units of work); a second
  Ctrl-C stops at once with KeyboardInterrupt. Use as a context manager; the
  previous handlers come back on exit. Only the main thread can install
  handlers; elsewhere (a notebook's worker thread) nothing is installed.

  Attributes:
    event: set when a stop was requested.
    exit_code: EXIT_SIGINT or EXIT_SIGTERM once a signal came, else None.
  """

  def __init__(self, event: threading.Event | None = None):
    self.event = event or threading.Event()
    self.exit_code: int | None = None
    self._previous: dict[int, Any] = {}

  def _handle(self, signum, frame):
    del frame
    if self.event.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt
    name = signal.Signals(signum).name
    logging.warning("received %s: finishing the work in flight, then stopping "
                    "(Ctrl-C again stops at once)", name)
    self.exit_code = 128 + signum
    self.event.set()

  def __enter__(self) -> "StopSignals":
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
