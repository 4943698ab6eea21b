"""Running a command-line program: flag mistakes and user errors become one `error:` line, preemption its own code.

Every `python -m storyjax...` program runs its main through `run_program`; it defines no flags, so any module may
import it (storyjax/cli.py adds the --config and --workdir of the programs that train, evaluate and sample).

Exit codes: 0 done; 1 a user error (bad flag, config value, path, data or checkpoint, or a workdir in use), printed
as one `error: ...` line on stderr; 143 (128 + SIGTERM) training was preempted and saved a checkpoint (rerun the
same command to resume).
"""

import re
import sys

from absl import app, flags, logging

from storyjax import host_memory
from storyjax.errors import Preempted, StoryjaxError

EXIT_ERROR = 1
EXIT_PREEMPTED = 143


def _exit_with_error(message: str) -> None:
  """Prints the one line and exits 1. Work that the failure cut short (e.g. Orbax's coroutines reading a corrupt
  checkpoint) may be reported as it is collected while the interpreter shuts down: those late reports are dropped."""
  print(f"error: {message}", file=sys.stderr)
  sys.unraisablehook = lambda unraisable: None
  sys.exit(EXIT_ERROR)


def _flag_error_line(error: Exception, argv: list[str]) -> str:
  """A flag-parsing failure (absl's, or ml_collections' for a config file or override) as one line."""
  text = str(error).replace("\\'", "'").replace("\\n", "\n")  # ml_collections nests reprs of KeyErrors
  lines = [line.strip() for line in text.splitlines() if line.strip() and line.strip() != "Traceback"]
  if isinstance(error, (AttributeError, KeyError)):  # an override of a key the config does not have
    name = re.search(r"'([\w.]+)'", text)
    name = name.group(1) if name else ""
    keys = [arg.split("=")[0] for arg in argv if arg.startswith("--") and "." in arg.split("=")[0]]
    flag = next((key for key in keys if key.endswith(f".{name}") or f".{name}." in key), keys[0] if keys else name)
    suggestion = re.search(r'Did you mean "([\w.]+)"', text)
    hint = f"did you mean {suggestion.group(1)!r}? " if suggestion else ""
    return f"{flag}: the config has no key {name!r}; {hint}the config file lists the keys."
  head = lines[0].removeprefix("flag ").split(": ")[0] if lines[0].startswith("flag ") else ""
  detail = re.sub(r"^\w+(Error|Exception): ", "", lines[-1])
  if detail.startswith("flag "):
    detail = detail.split(": ", 1)[-1]
  return f"{head}: {detail}" if head else detail


def run_program(main_fn) -> None:
  """Runs main_fn() under absl: flag errors and user errors (StoryjaxError) become one `error:` line and exit
  code 1, a preempted training run exits 143 after its message."""

  def parse_flags(argv):
    try:
      return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError) as error:
      _exit_with_error(_flag_error_line(error, argv))

  def wrapped(argv):
    if len(argv) > 1:
      _exit_with_error(f"unexpected arguments {argv[1:]}: flags are written --name=value.")
    logging.set_verbosity(logging.WARNING)  # Orbax and Grain log every save at INFO.
    host_memory.keep_freed_memory()
    try:
      main_fn()
    except StoryjaxError as error:
      _exit_with_error(str(error))
    except Preempted as preempted:
      print(preempted, file=sys.stderr)
      sys.exit(EXIT_PREEMPTED)

  app.run(wrapped, flags_parser=parse_flags)
