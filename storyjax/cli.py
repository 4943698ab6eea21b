"""The command-line flags every entry point shares (--config, --workdir) and the error-to-exit-code wrapper.

Entry points only (train, evaluate, sample, the benchmarks, the data and viewer CLIs): library modules never
import this one, so importing the library defines no flags.
"""

import pathlib
import sys

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from storyjax import distributed
from storyjax.errors import StoryjaxError

CONFIG_FLAG = config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/director.py:smoke.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")


def default_workdir(config: ml_collections.ConfigDict) -> pathlib.Path:
  return pathlib.Path("runs") / config.name


def run_program(main_fn) -> None:
  """Runs main_fn() under absl, turning user errors (StoryjaxError) into one line on stderr and exit code 1."""

  def wrapped(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # Orbax and Grain log every save at INFO.
    try:
      main_fn()
    except StoryjaxError as error:
      print(f"error: {error}", file=sys.stderr)
      sys.exit(1)

  app.run(wrapped)


def run_cli(main_fn) -> None:
  """Runs main_fn(config, workdir) from --config and --workdir after joining a multi-process run, if any."""

  def main():
    distributed.initialize()
    config = CONFIG_FLAG.value
    main_fn(config, pathlib.Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config))

  flags.mark_flag_as_required("config")
  run_program(main)
