"""Prints, as one JSON line, how much a trained RIN / TextRIN / CAD run reads its conditions, without sampling.

Usage (from the repository root):
  .venv/bin/python scripts/denoising_errors.py --config=configs/cad.py --workdir=runs/cad [--config.KEY=VALUE …]
with the run's own config overrides. For the first eval.num_samples test examples (true captions, coherence 1), the
x̂₀ MSE at each signal variance γ of GAMMAS from their own conditions, from the next example's, and (CAD) at
coherence 0, and the MSE of predicting the mean image ("image_variance"), which a model that ignores its conditions
reaches at γ → 0: `Task.denoising_errors` in storyjax/tasks/rin.py. With --plot=PNG (RGB data), also a grid of
the first 8 examples: their images in the first row, then the x̂₀ from their own conditions at each γ, one row per γ
(PNG.txt: the prompts).
"""

import json
import pathlib

from absl import flags
import jax
import ml_collections

from storyjax import plotting, trainer
from storyjax.cli import run_cli
from storyjax.tasks import get_task

GAMMAS = (0.9, 0.5, 0.1, 0.03, 0.01)
PLOT_COLUMNS = 8
_PLOT = flags.DEFINE_string("plot", None, "Also write the x̂₀ of the first 8 examples at each γ to this PNG.")


def denoising_errors(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  task = get_task(config)
  _, variables, step = trainer.restore_for_inference(task, config, pathlib.Path(workdir))
  examples = task.prompted_test_examples(config.eval.num_samples)
  rng = jax.random.PRNGKey(config.eval.seed)
  errors = task.denoising_errors(variables, examples, GAMMAS, rng)
  if _PLOT.value:
    shown = examples[:PLOT_COLUMNS]
    rows = task.denoised_images(variables, shown, GAMMAS, rng)
    plotting.save_image_grid(_PLOT.value, rows.reshape(-1, *rows.shape[2:]), columns=len(shown))
    pathlib.Path(f"{_PLOT.value}.txt").write_text("".join(f"{example['caption']}\n" for example in shown))
  results = {"step": step, **errors}
  print(json.dumps(results))
  return results


if __name__ == "__main__":
  run_cli(denoising_errors)
