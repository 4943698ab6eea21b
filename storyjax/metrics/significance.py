"""Whether one model beats another on the same prompts: the paired bootstrap of a per-prompt score's difference."""

import numpy as np


def paired_difference(scores, baseline_scores, num_resamples: int = 10_000, seed: int = 0) -> dict[str, float]:
  """Mean of scores − baseline_scores over N paired prompts (both (N,)), with the 2.5% and 97.5% percentiles of
  that mean over `num_resamples` resamplings of the prompts with replacement → {"difference", "low", "high"}.

  Pairing removes how hard each prompt is (both models answered it with the same sampling noise), so the interval
  is much tighter than one from two independent means; it covers the prompts' noise, not the training seed's.
  """
  scores, baseline_scores = np.asarray(scores, np.float64), np.asarray(baseline_scores, np.float64)
  if scores.ndim != 1 or scores.shape != baseline_scores.shape or not len(scores):
    raise ValueError(
      f"paired scores must be two (N,) arrays of one N ≥ 1, got {scores.shape} and {baseline_scores.shape}"
    )
  differences = scores - baseline_scores
  resampled = np.random.default_rng(seed).integers(len(differences), size=(num_resamples, len(differences)))
  means = differences[resampled].mean(axis=1)
  low, high = np.percentile(means, [2.5, 97.5])
  return {"difference": float(differences.mean()), "low": float(low), "high": float(high)}
