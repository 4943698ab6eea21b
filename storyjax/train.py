"""Trains a task: `python -m storyjax.train --config=configs/<model>.py[:variant] [--workdir=DIR]`.

The loop itself is storyjax/trainer.py; this entry point picks the task from `config.task`.
"""

import pathlib

import ml_collections

from storyjax import trainer
from storyjax.tasks import get_task


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (or resumes) in `workdir`; returns the final evaluation metrics (empty if eval is off)."""
  return trainer.train(get_task(config), config, workdir)


if __name__ == "__main__":
  from storyjax.cli import run_cli

  run_cli(train)
