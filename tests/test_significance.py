"""The paired bootstrap (storyjax/metrics/significance.py) and scripts/compare_evaluations.py on written evaluations."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from storyjax.metrics.significance import paired_difference

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_paired_difference_against_an_independent_bootstrap():
  rng = np.random.default_rng(3)
  baseline = rng.uniform(size=400)
  scores = baseline + 0.05 + rng.normal(scale=0.1, size=400)
  result = paired_difference(scores, baseline, num_resamples=4000, seed=1)
  assert result["difference"] == pytest.approx(np.mean(scores - baseline))
  # An independent bootstrap of the same differences: the interval agrees to its Monte-Carlo noise.
  other = np.random.default_rng(7)
  means = [np.mean(other.choice(scores - baseline, 400)) for _ in range(4000)]
  assert result["low"] == pytest.approx(np.percentile(means, 2.5), abs=2e-3)
  assert result["high"] == pytest.approx(np.percentile(means, 97.5), abs=2e-3)
  standard_error = np.std(scores - baseline) / np.sqrt(400)
  assert result["high"] - result["low"] == pytest.approx(2 * 1.96 * standard_error, rel=0.1)
  # Pairing: the same shift on noisy prompts is certain, though the two means' own spreads overlap.
  assert paired_difference(baseline + 0.01, baseline) == pytest.approx({"difference": 0.01, "low": 0.01, "high": 0.01})
  with pytest.raises(ValueError, match=r"two \(N,\) arrays of one N"):
    paired_difference(np.zeros(3), np.zeros(4))


def write_evaluation(workdir: pathlib.Path, prompts, metrics: dict, **accuracies):
  workdir.mkdir(parents=True)
  (workdir / "eval.json").write_text(json.dumps(metrics))
  np.savez(workdir / "eval_prompts.npz", prompt=np.asarray(prompts), **accuracies)


def load_script():
  spec = importlib.util.spec_from_file_location("compare_evaluations", REPO / "scripts" / "compare_evaluations.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_compare_evaluations_pairs_runs_on_their_prompts(tmp_path):
  compare_evaluations = load_script().compare_evaluations
  prompts = ["a red circle", "a blue ring", "a green square"]
  write_evaluation(tmp_path / "cad", prompts, {"fid": 10.0, "step": 5}, caption_accuracy=np.array([1.0, 0.5, 0.75]))
  write_evaluation(
    tmp_path / "textrin",
    prompts,
    {"fid": 12.0, "fid_unguided": 9.0},
    caption_accuracy=np.array([0.5, 0.5, 0.5]),
    caption_accuracy_linear=np.zeros(3),
  )
  report = compare_evaluations([tmp_path / "cad", tmp_path / "textrin"])
  json.dumps(report)  # printable as one JSON line
  assert report["num_prompts"] == 3
  cad, textrin = report["runs"]
  assert cad == {"workdir": str(tmp_path / "cad"), "fid": 10.0, "caption_accuracy": 0.75}  # shared keys only
  assert textrin["fid_unguided"] == 9.0 and textrin["caption_accuracy"] == 0.5
  difference = textrin["difference"]["caption_accuracy"]
  assert difference["difference"] == pytest.approx(-0.25) and difference["low"] <= -0.25 <= difference["high"]

  write_evaluation(tmp_path / "other", prompts[::-1], {}, caption_accuracy=np.ones(3))
  with pytest.raises(ValueError, match="was evaluated on other prompts"):
    compare_evaluations([tmp_path / "cad", tmp_path / "other"])
  with pytest.raises(FileNotFoundError, match=r"missing/eval\.json.*run `python -m storyjax\.evaluate"):
    compare_evaluations([tmp_path / "cad", tmp_path / "missing"])
  with pytest.raises(ValueError, match="at least two evaluated workdirs"):
    compare_evaluations([tmp_path / "cad"])
