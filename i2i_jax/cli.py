"""What every command-line entry point shares: flag parsing, exit codes, errors.

Every `python -m i2i_jax.<command>` starts through `run(main)`, so that all of
them behave the same way:

  --help       prints the command's docstring and flags to stdout, exits 0.
  a bad flag   one line naming it, exit 2 (no help dump, no traceback).
  UsageError   raised by `main` (a bad value, a missing input, a config key
               that does not exist): one line, exit 2.
  RunError     raised by `main` (an unreadable checkpoint, an unwritable
               output): one line, exit 3.
  a bug        any other exception: its traceback, then exit 3.
  Ctrl-C       exit 130 (commands that stop gracefully catch SIGINT first, see
               `StopSignals`, and return EXIT_SIGINT themselves).

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


class RunError(Exception):
  """The command cannot go on for a reason outside its inputs: one line, exit 3."""


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


def program_name() -> str:
  """How the user started this program, e.g. "python -m i2i_jax.translate"."""
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if spec is not None and spec.name:
    return f"python -m {spec.name.removesuffix('.__main__')}"
  return os.path.basename(sys.argv[0]) if sys.argv else "i2i_jax"


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with `--help` to stdout (exit 0) and bad flags in one line (exit 2)."""
  arguments = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if any(argument in _HELP_FLAGS for argument in arguments):
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=EXIT_OK)
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --help)", EXIT_USAGE)
  raise AssertionError("unreachable")


def run(main: Callable[[list[str]], int | None],
        flags_parser: Callable[[list[str]], Any] = parse_flags) -> None:
  """Runs `main` as a command (module docstring): flags, logs, errors, exit code."""

  def guarded_main(argv):
    quiet_logs()
    try:
      return main(argv)
    except (UsageError, app.UsageError) as e:
      fail(str(e), EXIT_USAGE)
    except RunError as e:
      fail(str(e), EXIT_ERROR)
    except KeyboardInterrupt:
      fail("interrupted (Ctrl-C)", EXIT_SIGINT)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      fail(f"{type(e).__name__}: {e}", EXIT_ERROR)

  app.run(guarded_main, flags_parser=flags_parser)


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
