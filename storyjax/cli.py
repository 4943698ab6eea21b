"""The command-line flags every entry point shares (--config, --workdir) and the error-to-exit-code wrapper.

Entry points only (train, evaluate, sample, the benchmarks, the data and viewer CLIs): library modules never
import this one, so importing the library defines no flags.

Exit codes: 0 done; 1 a user error (bad flag, config value, path, data or checkpoint, or a workdir in use), printed
as one `error: ...` line on stderr; 143 (128 + SIGTERM) training was preempted and saved a checkpoint (rerun the
same command to resume).
"""

import pathlib
import re
import sys

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from storyjax import distributed
from storyjax.errors import ConfigError, Preempted, StoryjaxError

EXIT_ERROR = 1
EXIT_PREEMPTED = 143

CONFIG_FLAG = config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/director.py:smoke.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")


def default_workdir(config: ml_collections.ConfigDict) -> pathlib.Path:
  return pathlib.Path("runs") / config.name


def _exit_with_error(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
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
    try:
      main_fn()
    except StoryjaxError as error:
      _exit_with_error(str(error))
    except Preempted as preempted:
      print(preempted, file=sys.stderr)
      sys.exit(EXIT_PREEMPTED)

  app.run(wrapped, flags_parser=parse_flags)


def loaded_config() -> ml_collections.ConfigDict:
  """--config's ConfigDict; a file that could not be loaded is a ConfigError naming it."""
  config = CONFIG_FLAG.value
  if not isinstance(config, ml_collections.ConfigDict):
    path = flags.FLAGS["config"].config_filename if flags.FLAGS["config"].present else None
    raise ConfigError(f"cannot load --config={path}: no such file (the configs are configs/<model>.py[:variant]).")
  return config


def run_cli(main_fn) -> None:
  """Runs main_fn(config, workdir) from --config and --workdir after joining a multi-process run, if any."""

  def main():
    distributed.initialize()
    config = loaded_config()
    main_fn(config, pathlib.Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config))

  flags.mark_flag_as_required("config")
  run_program(main)
