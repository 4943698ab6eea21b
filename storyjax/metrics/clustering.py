"""Clustering metrics on host numpy: normalized mutual information and weighted cluster purity.

Both read only the nonzero cells of the contingency table (one per distinct (true, predicted) pair), so they stay
O(N log N) in time and O(N) in memory however many clusters either labelling has.
"""

import math

import numpy as np


def _contingency_cells(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
  """The nonzero cells of the contingency table of two (N,) integer labellings.

  Returns (true_index, pred_index, count) per cell, in row-major order, and the numbers of distinct true and
  predicted labels. Indices are ranks among the sorted distinct labels, so any ints (negative too) are accepted.
  """
  labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
  if labels_true.ndim != 1 or labels_pred.ndim != 1 or labels_true.shape != labels_pred.shape:
    raise ValueError(
      f"labels_true and labels_pred must be (N,) arrays of one length, got shapes {labels_true.shape} and "
      f"{labels_pred.shape}; flatten them or check they label the same items"
    )
  if len(labels_true) == 0:
    raise ValueError("labels_true and labels_pred are empty; a clustering metric needs at least one item")
  for name, labels in (("labels_true", labels_true), ("labels_pred", labels_pred)):
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
      raise ValueError(f"{name} must hold integer cluster ids, got dtype {labels.dtype}; cast them with astype(int)")
  true_values, true_index = np.unique(labels_true, return_inverse=True)
  pred_values, pred_index = np.unique(labels_pred, return_inverse=True)
  num_true, num_pred = len(true_values), len(pred_values)
  cell_codes, counts = np.unique(true_index.astype(np.int64) * num_pred + pred_index, return_counts=True)
  return cell_codes // num_pred, cell_codes % num_pred, counts, num_true, num_pred


def _entropy(cluster_sizes: np.ndarray) -> float:
  """Entropy in nats of a labelling given its (K,) cluster sizes."""
  total = cluster_sizes.sum()
  return float(-np.sum((cluster_sizes / total) * (np.log(cluster_sizes) - math.log(total))))


def nmi(labels_true, labels_pred) -> float:
  """Normalized mutual information MI / ((H(true) + H(pred)) / 2) of two (N,) labellings, in nats.

  Equal to scikit-learn's normalized_mutual_info_score (average_method="arithmetic"), edge cases included: 1.0 when
  both labellings are one cluster, 0.0 when only one of them is.
  """
  true_index, pred_index, counts, num_true, num_pred = _contingency_cells(labels_true, labels_pred)
  if num_true == num_pred == 1:
    return 1.0
  if num_true == 1 or num_pred == 1:
    return 0.0
  true_sizes = np.bincount(true_index, weights=counts).astype(np.int64)
  pred_sizes = np.bincount(pred_index, weights=counts).astype(np.int64)
  total = int(counts.sum())
  # Each cell's term c/N·log(N·c / (a·b)), written in scikit-learn's order of operations (logs of the parts, the
  # product a·b in int64) so that the two agree to the last bits; terms under float eps are zeroed as it does.
  cell_fraction = counts / total
  log_outer = -np.log(true_sizes[true_index] * pred_sizes[pred_index]) + math.log(total) + math.log(total)
  terms = cell_fraction * (np.log(counts) - math.log(total)) + cell_fraction * log_outer
  terms = np.where(np.abs(terms) < np.finfo(terms.dtype).eps, 0.0, terms)
  mutual_information = max(float(terms.sum()), 0.0)
  if mutual_information == 0.0:
    return 0.0
  return mutual_information / float(np.mean([_entropy(true_sizes), _entropy(pred_sizes)]))


def weighted_cluster_purity(labels_true, labels_pred) -> float:
  """Σ over predicted clusters of the count of their most frequent true label, divided by N; in (0, 1].

  Each predicted cluster's purity weighted by its size; 1 when every predicted cluster holds one true label.
  """
  _, pred_index, counts, _, num_pred = _contingency_cells(labels_true, labels_pred)
  majority_counts = np.zeros(num_pred, np.int64)
  np.maximum.at(majority_counts, pred_index, counts)
  return float(majority_counts.sum() / counts.sum())
