"""Evaluates the latest checkpoint: `python -m storyjax.evaluate --config=... --workdir=DIR`.

Prints one JSON object of metrics as its last line and writes it to DIR/eval.json.
"""
import json
import pathlib

import ml_collections

from storyjax.cli import run_cli
from storyjax.train import load_trained


def evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  workdir = pathlib.Path(workdir).absolute()
  setup, params, step = load_trained(config, workdir)
  results = {"step": step, **setup.task.evaluate(params, workdir)}
  (workdir / "eval.json").write_text(json.dumps(results, indent=2))
  print(json.dumps(results))
  return results


if __name__ == "__main__":
  run_cli(evaluate)
