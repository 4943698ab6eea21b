"""Prints, as one JSON line, how evaluated RIN / TextRIN / CAD runs compare with the first on the same prompts.

Usage (from the repository root), after `python -m storyjax.evaluate` of each run with the same eval.seed and
eval.num_samples (it writes WORKDIR/eval.json and WORKDIR/eval_prompts.npz):
  .venv/bin/python scripts/compare_evaluations.py runs/cad runs/textrin runs/filtered
For every accuracy all runs report per prompt (caption_accuracy, caption_accuracy_unguided, …): each run's mean,
and for each later run its paired difference from the first with a 95% bootstrap interval over the prompts
(storyjax/metrics/significance.py); each run's fids from eval.json beside them.
"""

import argparse
import json
import pathlib

import numpy as np

from storyjax.metrics.significance import paired_difference


def load_evaluation(workdir: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(eval.json's metrics, eval_prompts.npz's arrays) of one evaluated run."""
  paths = [workdir / "eval.json", workdir / "eval_prompts.npz"]
  missing = [str(path) for path in paths if not path.is_file()]
  if missing:
    raise FileNotFoundError(f"{missing} not found; run `python -m storyjax.evaluate --workdir={workdir}` first")
  with np.load(paths[1]) as prompts:
    return json.loads(paths[0].read_text()), dict(prompts)


def compare_evaluations(workdirs: list[pathlib.Path], num_resamples: int = 10_000) -> dict:
  if len(workdirs) < 2:
    raise ValueError("give at least two evaluated workdirs: the first is the one the others are compared with")
  evaluations = [load_evaluation(workdir) for workdir in workdirs]
  first_prompts = evaluations[0][1]["prompt"]
  for workdir, (_, prompts) in zip(workdirs[1:], evaluations[1:]):
    if not np.array_equal(prompts["prompt"], first_prompts):
      raise ValueError(
        f"{workdir} was evaluated on other prompts than {workdirs[0]}; evaluate both with the same "
        "data and eval.num_samples"
      )
  keys = sorted(set.intersection(*(set(prompts) - {"prompt"} for _, prompts in evaluations)))
  if not keys:
    raise ValueError(f"{[str(workdir) for workdir in workdirs]} share no per-prompt accuracy")
  baseline = evaluations[0][1]
  runs = []
  for index, (workdir, (metrics, prompts)) in enumerate(zip(workdirs, evaluations)):
    run = {"workdir": str(workdir), **{key: value for key, value in metrics.items() if key.startswith("fid")}}
    run.update({key: float(prompts[key].mean()) for key in keys})
    if index:
      run["difference"] = {key: paired_difference(prompts[key], baseline[key], num_resamples) for key in keys}
    runs.append(run)
  return {"num_prompts": len(first_prompts), "runs": runs}


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("workdirs", nargs="+", type=pathlib.Path)
  parser.add_argument("--num_resamples", type=int, default=10_000)
  arguments = parser.parse_args()
  print(json.dumps(compare_evaluations(arguments.workdirs, arguments.num_resamples)))
