"""CAD's coherence binning: raw image–caption scores → num_bins equally populated levels in [0, 1].

As CAD's TextWebDataset (facts cad-rin-cfg.md §2.4): the edges are quantiles of a sample of scores with the ends
forced to 0 and 1, and a score s in bin i (edges[i−1] < s ≤ edges[i], torch.bucketize with right=False) gets the
level (i − 1) / (num_bins − 1), so levels are {0, 1/(num_bins − 1), …, 1}. CAD recomputes the edges every run from
a random subsample and never saves them; callers here should store the edges they trained with.

With ties the levels are not equally populated: edges equal to a repeated score all sit at it, and a score equal to
an edge falls in the lowest bin ending there (e.g. if most scores are exactly 1, several edges are 1 and a score
of 1 gets the level of the first of them, not 1).
"""

import numpy as np


def _scores(scores) -> np.ndarray:
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 1 or not len(scores):
    raise ValueError(f"coherence scores must be a non-empty (N,) array, got shape {scores.shape}")
  if not np.isfinite(scores).all():
    raise ValueError("coherence scores contain NaN or infinity; drop those examples first")
  return scores


def coherence_bin_edges(scores, num_bins: int) -> np.ndarray:
  """scores (N,) → edges (num_bins + 1,) float64: the scores' quantiles at linspace(0, 1, num_bins + 1)
  (linear interpolation, as torch.quantile), with edges[0] = 0 and edges[-1] = 1."""
  if num_bins < 2:
    raise ValueError(f"num_bins={num_bins}: coherence levels (i − 1)/(num_bins − 1) need at least 2 bins")
  edges = np.quantile(_scores(scores), np.linspace(0.0, 1.0, num_bins + 1))
  edges[0], edges[-1] = 0.0, 1.0
  return edges


def bin_coherence(scores, edges) -> np.ndarray:
  """scores (N,) → coherence levels (N,) float32 in {0, 1/(num_bins − 1), …, 1}, num_bins = len(edges) − 1.

  Bin i (1..num_bins) holds edges[i−1] < s ≤ edges[i] and gives the level (i − 1)/(num_bins − 1); scores at or
  below edges[0] (a score of exactly 0) get level 0, scores above edges[-1] level 1.
  """
  edges = np.asarray(edges, np.float64)
  if edges.ndim != 1 or len(edges) < 3 or np.any(np.diff(edges) < 0):
    raise ValueError(f"edges must be non-decreasing (num_bins + 1,) with num_bins >= 2, got {edges}")
  num_bins = len(edges) - 1
  bins = np.clip(np.searchsorted(edges, _scores(scores), side="left"), 1, num_bins)  # = torch.bucketize(right=False)
  return ((bins - 1) / (num_bins - 1)).astype(np.float32)
