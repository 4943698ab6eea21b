"""Evaluates the latest checkpoint: `python -m storyjax.evaluate --config=... --workdir=DIR`.

Prints one JSON object of metrics as its last line and writes it to DIR/eval.json.
"""

import json
import pathlib

import jax
import ml_collections

from storyjax import trainer
from storyjax.cli import run_cli
from storyjax.tasks import get_task


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  workdir = pathlib.Path(workdir).absolute()
  task = get_task(config)
  _, variables, step = trainer.restore_for_inference(task, config, workdir)
  results = {"step": step, **task.evaluate(variables, workdir)}
  if jax.process_index() == 0:
    (workdir / "eval.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
  return results


if __name__ == "__main__":
  run_cli(evaluate)
