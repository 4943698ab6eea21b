"""Clustering metrics against scikit-learn and brute-force loops; a self-check of the dense clustering reference."""

import clustering_reference as reference
import numpy as np
import pytest

from storyjax import metrics


def _random_labellings(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
  """About 70 (true, predicted) pairs: random sizes and cluster counts, and the edge cases by hand."""
  rng = np.random.default_rng(seed)
  pairs = []
  for _ in range(50):
    size = int(rng.integers(1, 400))
    num_true, num_pred = (int(rng.integers(1, size + 1)) for _ in range(2))
    pairs.append((rng.integers(-num_true, num_true, size), rng.integers(-5, num_pred - 5, size)))
  for size in (1, 2, 7, 100):
    singletons, one_cluster = np.arange(size) - 3, np.full(size, -4)
    random_labels = rng.integers(0, 3, size)
    pairs += [
      (one_cluster, one_cluster),
      (one_cluster, singletons),
      (singletons, one_cluster),
      (singletons, singletons),
      (random_labels, one_cluster),
      (singletons, random_labels),
    ]
  labels = rng.integers(0, 6, 300)
  permuted = rng.permutation(6)[labels] * 7 - 20
  pairs += [(labels, permuted), (labels, np.where(rng.random(300) < 0.1, 9, permuted))]
  return pairs


def test_nmi_equals_sklearn():
  sklearn_metrics = pytest.importorskip("sklearn.metrics")
  for labels_true, labels_pred in _random_labellings():
    expected = sklearn_metrics.normalized_mutual_info_score(labels_true, labels_pred)
    np.testing.assert_allclose(metrics.nmi(labels_true, labels_pred), expected, rtol=0, atol=1e-12)


def test_nmi_edge_cases():
  one_cluster, singletons = np.zeros(5, int), np.arange(5)
  assert metrics.nmi(one_cluster, one_cluster) == 1.0
  assert metrics.nmi([3], [-1]) == 1.0
  assert metrics.nmi(one_cluster, singletons) == 0.0
  assert metrics.nmi(singletons, one_cluster) == 0.0
  assert metrics.nmi(singletons, singletons[::-1]) == pytest.approx(1.0, abs=1e-15)
  # Independent labellings: every cell's term is exactly 0, so MI = 0 and NMI = 0.
  assert metrics.nmi([0, 0, 1, 1], [0, 1, 0, 1]) == 0.0


def _brute_force_purity(labels_true, labels_pred) -> float:
  total = 0
  for cluster in set(labels_pred.tolist()):
    members = [truth for truth, guess in zip(labels_true.tolist(), labels_pred.tolist()) if guess == cluster]
    total += max(members.count(truth) for truth in set(members))
  return total / len(labels_true)


def test_weighted_cluster_purity_by_hand():
  assert metrics.weighted_cluster_purity([0, 0, 1, 1], [0, 0, 0, 1]) == 0.75
  assert metrics.weighted_cluster_purity([0, 1, 2, 0, 1, 2], [5, 5, 5, 5, 5, 5]) == pytest.approx(2 / 6)
  assert metrics.weighted_cluster_purity([0, 0, 1, 2, 2, 2], [-1, -1, -1, 4, 4, 7]) == pytest.approx(5 / 6)
  assert metrics.weighted_cluster_purity([4], [9]) == 1.0


def test_weighted_cluster_purity_singletons_permutations_and_brute_force():
  rng = np.random.default_rng(1)
  for labels_true, labels_pred in _random_labellings(seed=1)[:50]:
    assert metrics.weighted_cluster_purity(labels_true, np.arange(len(labels_true))) == 1.0
    purity = metrics.weighted_cluster_purity(labels_true, labels_pred)
    assert purity == pytest.approx(_brute_force_purity(labels_true, labels_pred), abs=1e-12)
    true_values, true_index = np.unique(labels_true, return_inverse=True)
    pred_values, pred_index = np.unique(labels_pred, return_inverse=True)
    relabelled_true = rng.permutation(len(true_values))[true_index] - 3
    relabelled_pred = rng.permutation(len(pred_values))[pred_index] * 2
    assert metrics.weighted_cluster_purity(relabelled_true, relabelled_pred) == purity
    assert metrics.nmi(relabelled_true, relabelled_pred) == pytest.approx(metrics.nmi(labels_true, labels_pred))


@pytest.mark.parametrize("metric", [metrics.nmi, metrics.weighted_cluster_purity])
def test_bad_inputs_raise(metric):
  with pytest.raises(ValueError, match="one length"):
    metric([0, 1, 2], [0, 1])
  with pytest.raises(ValueError, match="one length"):
    metric(np.zeros((2, 2), int), np.zeros((2, 2), int))
  with pytest.raises(ValueError, match="empty"):
    metric([], [])
  with pytest.raises(ValueError, match="integer"):
    metric([0.5, 1.0], [0, 1])


def _blobs() -> np.ndarray:
  """(9, 2) points: three tight blobs of 3 directions, around 0°, 120° and 240°, lengths varied.

  Within a blob the directions sit at +0°, +1° and +3°, so the blob's first-neighbour graph is a↔b (1°) and c→b (2°).
  """
  angles = np.deg2rad(np.array([center + offset for center in (0, 120, 240) for offset in (0, 1, 3)]))
  lengths = np.array([1.0, 2.0, 0.5] * 3)
  return lengths[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def test_reference_blobs():
  points = _blobs()
  neighbour, distance = reference.first_neighbours(points)
  np.testing.assert_array_equal(neighbour, [1, 0, 1, 4, 3, 4, 7, 6, 7])
  np.testing.assert_allclose(distance[:3], 1 - np.cos(np.deg2rad([1, 1, 2])), atol=1e-12)
  levels = reference.hierarchy(points)
  np.testing.assert_array_equal(levels[0], np.arange(9))
  np.testing.assert_array_equal(levels[1], [0, 0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(levels[2], np.zeros(9))
  assert len(levels) == 3
  np.testing.assert_array_equal(reference.merge_to(points, None, None, levels[0], 3), levels[1])
  # A cap below the 2° edge leaves c alone in every blob; the hierarchy stops once the count stops falling.
  capped = reference.hierarchy(points, max_distance=1 - np.cos(np.deg2rad(1.5)))
  np.testing.assert_array_equal(capped[1], [0, 0, 1, 2, 2, 3, 4, 4, 5])


def test_reference_cannot_link_cuts_the_weakest_edge():
  points = _blobs()
  # Forbid a–c inside the first blob: the path a–b–c loses b–c (2°), the larger of its two edges.
  neighbour, distance = reference.first_neighbours(points, {(2, 0)})
  np.testing.assert_array_equal(neighbour[:3], [1, 0, 1])
  np.testing.assert_array_equal(reference.link(neighbour, distance, {(2, 0)}), [0, 0, 1, 2, 2, 2, 3, 3, 3])
  # As groups: rows 0 and 1 form one group (a track), cannot-linked with row 2's group.
  groups = np.array([10, 10, 11, 12, 13, 14, 15, 16, 17])
  levels = reference.hierarchy(points, groups, cannot_link=[[11, 10]])
  np.testing.assert_array_equal(levels[0], [0, 0, 1, 2, 3, 4, 5, 6, 7])
  # Row 2 (3°), barred from its own blob, takes row 3 (117° away) and pulls the 120° blob with it; the 240° blob
  # joins rows 0–1; the two clusters left are cannot-linked, so the hierarchy ends there.
  assert len(levels) == 2
  np.testing.assert_array_equal(levels[1], [0, 0, 1, 1, 1, 1, 0, 0, 0])
  merged = reference.merge_to(points, groups, [[11, 10]], levels[0], 1)
  np.testing.assert_array_equal(merged, levels[1])


def test_reference_link_ties_cut_the_first_edge_from_a():
  # Path 0–1–2 with equal weights: the edge met first walking from 0 goes.
  np.testing.assert_array_equal(reference.link([1, 0, 1], [1.0, 1.0, 1.0], {(0, 2)}), [0, 1, 1])
  np.testing.assert_array_equal(reference.link([1, 0, 1], [1.0, 1.0, 1.0], {(2, 0), (0, 2)}), [0, 1, 1])
