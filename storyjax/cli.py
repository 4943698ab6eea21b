"""The command-line flags of the programs that train, evaluate and sample (--config, --workdir) and `run_cli`.

Entry points only (train, evaluate, sample, cluster): library modules never
import this one, so importing the library defines no flags.
"""

import pathlib

from absl import flags
import ml_collections
from ml_collections import config_flags

from storyjax import distributed
from storyjax.errors import ConfigError
from storyjax.program import run_program

CONFIG_FLAG = config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/director.py:smoke.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")


def default_workdir(config: ml_collections.ConfigDict) -> pathlib.Path:
  return pathlib.Path("runs") / config.name


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
