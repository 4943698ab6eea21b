"""The public clustering entry points: C1C (constrained) and FINCH-style (unconstrained) first-neighbour clustering.

  labels = storyjax.clustering.c1c(features, track_ids, cannot_link)           # (N,) per detection
  labels = storyjax.clustering.finch(features, num_clusters=12)

The algorithm, the hierarchy and the rule that picks one partition are in storyjax/clustering/hierarchy.py.
"""

import numpy as np

from storyjax.clustering import hierarchy
from storyjax.clustering.neighbours import NeighbourSearch


def _check(features, track_ids, cannot_link, num_clusters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  features = np.asarray(features)
  if features.ndim != 2 or not len(features):
    raise ValueError(f"features must be (N, D) with N ≥ 1, got shape {features.shape}")
  if not np.isfinite(features).all():
    raise ValueError("features contain NaN or infinite values")
  track_ids = np.arange(len(features)) if track_ids is None else np.asarray(track_ids)
  if track_ids.shape != (len(features),) or not np.issubdtype(track_ids.dtype, np.integer):
    raise ValueError(f"track_ids must be ({len(features)},) integers, got {track_ids.dtype} {track_ids.shape}")
  cannot_link = np.zeros((0, 2), np.int64) if cannot_link is None else np.asarray(cannot_link)
  if cannot_link.size and (cannot_link.ndim != 2 or cannot_link.shape[1] != 2):
    raise ValueError(f"cannot_link must be (P, 2) pairs of track ids, got shape {cannot_link.shape}")
  cannot_link = cannot_link.reshape(-1, 2).astype(np.int64)
  if (cannot_link[:, 0] == cannot_link[:, 1]).any():
    raise ValueError(f"cannot_link pairs a track with itself: {cannot_link[cannot_link[:, 0] == cannot_link[:, 1]][0]}")
  if num_clusters is not None and (int(num_clusters) != num_clusters or num_clusters < 1):
    raise ValueError(f"num_clusters must be a positive integer or None, got {num_clusters!r}")
  return features, track_ids, cannot_link


def c1c_partitions(
  features: np.ndarray,
  track_ids: np.ndarray,
  cannot_link: np.ndarray,
  *,
  max_distance: float | None = None,
  search: NeighbourSearch = NeighbourSearch(),
) -> list[np.ndarray]:
  """C1C's hierarchy: features (N, D) per detection, track_ids (N,), cannot_link (P, 2) pairs of track ids →
  [the tracks, level 1, …], each (N,) labels."""
  features, track_ids, cannot_link = _check(features, track_ids, cannot_link, None)
  return hierarchy.partitions(features, track_ids, cannot_link, max_distance=max_distance, search=search)


def c1c(
  features: np.ndarray,
  track_ids: np.ndarray,
  cannot_link: np.ndarray,
  num_clusters: int | None = None,
  *,
  max_distance: float | None = None,
  search: NeighbourSearch = NeighbourSearch(),
) -> np.ndarray:
  """C1C: (N, D) detections, (N,) track ids, (P, 2) cannot-linked track-id pairs → (N,) cluster labels.

  num_clusters: exactly that many clusters where the cannot-links allow; None: the coarsest level (stopped at
  max_distance if given). No cannot-linked pair ever shares a cluster."""
  features, track_ids, cannot_link = _check(features, track_ids, cannot_link, num_clusters)
  levels = hierarchy.partitions(features, track_ids, cannot_link, max_distance=max_distance, search=search)
  forbidden_rows = hierarchy.group_rows(track_ids, cannot_link) if len(cannot_link) else cannot_link
  return hierarchy.select(features, levels, forbidden_rows, num_clusters, search)


def finch(
  features: np.ndarray,
  num_clusters: int | None = None,
  *,
  max_distance: float | None = None,
  search: NeighbourSearch = NeighbourSearch(),
) -> np.ndarray:
  """Unconstrained first-neighbour clustering (FINCH's rule, every row its own point): (N, D) → (N,) labels."""
  return c1c(features, None, None, num_clusters, max_distance=max_distance, search=search)
