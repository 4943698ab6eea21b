"""CLaTr-Score and cross-modal retrieval recall on (N, D) feature sets (host numpy, float64)."""

import numpy as np


def _unit(features) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2:
    raise ValueError(f"features must be (N, D), got shape {features.shape}")
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def mean_cosine(text_feats, traj_feats) -> float:
  """mean_i cos(text_i, traj_i) over paired rows (N, D)."""
  text, traj = _unit(text_feats), _unit(traj_feats)
  if text.shape != traj.shape:
    raise ValueError(f"paired features must have equal shapes, got {text.shape} and {traj.shape}")
  return float(np.mean(np.sum(text * traj, axis=1)))


def clatr_score(text_feats, traj_feats) -> float:
  """max(0, mean_i 100·cos(text_i, traj_i)) over paired rows, clamped after averaging as in Director."""
  return max(0.0, 100.0 * mean_cosine(text_feats, traj_feats))


def retrieval_recall(query_feats, candidate_feats, ks=(1, 5, 10), positives=None) -> dict[str, float]:
  """Recall@k of retrieving, by cosine similarity, a positive candidate for each query.

  positives: (N, M) bool, which candidates count as a hit for each query (default: the identity, N = M).
  Returns {"R@k": hit rate, "R@k_chance": the same for a uniformly random ranking}.
  """
  query, candidates = _unit(query_feats), _unit(candidate_feats)
  positives = np.eye(len(query), len(candidates), dtype=bool) if positives is None else np.asarray(positives, bool)
  if positives.shape != (len(query), len(candidates)):
    raise ValueError(f"positives must be (N, M) = {(len(query), len(candidates))}, got {positives.shape}")
  if not positives.any(axis=1).all():
    raise ValueError("every query needs at least one positive candidate")
  order = np.argsort(-(query @ candidates.T), axis=1, kind="stable")
  first_hit = np.argmax(np.take_along_axis(positives, order, axis=1), axis=1)  # rank of the best positive
  num_candidates, num_positives = len(candidates), positives.sum(1)
  results = {}
  for k in ks:
    results[f"R@{k}"] = float(np.mean(first_hit < k))
    # P(no positive among k random draws without replacement) = Π_{i<k} (M − p − i) / (M − i)
    misses = np.prod(
      [
        np.clip(num_candidates - num_positives - i, 0, None) / (num_candidates - i)
        for i in range(min(k, num_candidates))
      ],
      axis=0,
    )
    results[f"R@{k}_chance"] = float(np.mean(1.0 - misses))
  return results
