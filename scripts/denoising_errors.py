"""Prints, as one JSON line, how much a trained RIN / TextRIN / CAD run reads its conditions, without sampling.

Usage (from the repository root):
  .venv/bin/python scripts/denoising_errors.py --config=configs/cad.py --workdir=runs/cad [--config.KEY=VALUE …]
with the run's own config overrides. For the first eval.num_samples test examples (true captions, coherence 1), the
x̂₀ MSE at each signal variance γ of GAMMAS from their own conditions, from the next example's, and (CAD) at
coherence 0, and the MSE of predicting the mean image ("image_variance"), which a model that ignores its conditions
reaches at γ → 0: `Task.denoising_errors` in storyjax/tasks/rin.py.
"""

import json
import pathlib

import jax
import ml_collections

from storyjax import trainer
from storyjax.cli import run_cli
from storyjax.tasks import get_task

GAMMAS = (0.9, 0.5, 0.1, 0.03, 0.01)


def denoising_errors(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  task = get_task(config)
  _, variables, step = trainer.restore_for_inference(task, config, pathlib.Path(workdir))
  examples = task.prompted_test_examples(config.eval.num_samples)
  errors = task.denoising_errors(variables, examples, GAMMAS, jax.random.PRNGKey(config.eval.seed))
  results = {"step": step, **errors}
  print(json.dumps(results))
  return results


if __name__ == "__main__":
  run_cli(denoising_errors)
