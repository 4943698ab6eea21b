"""Classification metrics against brute-force references, scikit-learn's documented examples and hand cases."""

import itertools

import numpy as np
import pytest

from storyjax.errors import ConfigError, DataError
from storyjax.metrics import average_precision, classification


def _confusion(predicted, labels):
  """{(true, predicted): count} by an explicit loop."""
  counts = {}
  for truth, guess in zip(labels.tolist(), predicted.tolist()):
    counts[truth, guess] = counts.get((truth, guess), 0) + 1
  return counts


def _reference_f1(predicted, labels, positive):
  """Precision and recall from confusion counts, each 0 when undefined; F1 their harmonic mean, 0 when both are 0."""
  counts = _confusion(predicted, labels)
  true_positives = counts.get((positive, positive), 0)
  predicted_positives = sum(n for (_, guess), n in counts.items() if guess == positive)
  actual_positives = sum(n for (truth, _), n in counts.items() if truth == positive)
  precision = true_positives / predicted_positives if predicted_positives else 0.0
  recall = true_positives / actual_positives if actual_positives else 0.0
  return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _reference_weighted_f1(predicted, labels):
  classes = sorted(set(labels.tolist()) | set(predicted.tolist()))
  support = [int(np.sum(labels == value)) for value in classes]
  return sum(s * _reference_f1(predicted, labels, value) for s, value in zip(support, classes)) / sum(support)


def _reference_balanced_accuracy(predicted, labels):
  counts = _confusion(predicted, labels)
  recalls = []
  for value in sorted(set(labels.tolist())):
    row = sum(n for (truth, _), n in counts.items() if truth == value)
    recalls.append(counts.get((value, value), 0) / row)
  return sum(recalls) / len(recalls)


def _reference_auc(scores, labels):
  """Fraction of (positive, negative) pairs ordered correctly, ties counting half."""
  positives, negatives = scores[labels == 1], scores[labels == 0]
  wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)]
  return sum(wins) / len(wins)


def test_metrics_match_brute_force_references():
  rng = np.random.default_rng(0)
  for trial in range(20):
    num_classes = 2 + trial % 3
    labels = rng.integers(0, num_classes, size=30)
    # Noisy predictions, sometimes with a class that never occurs in labels.
    predicted = np.where(rng.random(30) < 0.6, labels, rng.integers(0, num_classes + trial % 2, size=30))
    np.testing.assert_allclose(classification.accuracy(predicted, labels), np.mean(predicted == labels))
    np.testing.assert_allclose(
      classification.balanced_accuracy(predicted, labels), _reference_balanced_accuracy(predicted, labels)
    )
    np.testing.assert_allclose(classification.f1_weighted(predicted, labels), _reference_weighted_f1(predicted, labels))
    for positive in range(num_classes):
      np.testing.assert_allclose(
        classification.f1_binary(predicted, labels, positive), _reference_f1(predicted, labels, positive)
      )
    binary = (labels == 0).astype(int)
    # Scores rounded to one decimal so that many are tied.
    scores = np.round(np.clip(0.3 * binary + rng.random(30) * 0.7, 0, 1), 1)
    np.testing.assert_allclose(classification.roc_auc(scores, binary), _reference_auc(scores, binary))


def test_scikit_learn_documented_values():
  # Examples from scikit-learn's docstrings of f1_score, balanced_accuracy_score and roc_auc_score.
  labels, predicted = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 2, 1, 0, 0, 1])
  np.testing.assert_allclose(classification.f1_weighted(predicted, labels), 0.26666666666666666)
  np.testing.assert_allclose(classification.balanced_accuracy([0, 1, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0]), 0.625)
  np.testing.assert_allclose(classification.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 0.75)


def test_hand_checked_cases():
  labels = np.array([0, 0, 1, 1, 1])
  # Perfect.
  assert classification.accuracy(labels, labels) == 1.0
  assert classification.f1_binary(labels, labels) == 1.0
  assert classification.roc_auc([0.1, 0.2, 0.7, 0.8, 0.9], labels) == 1.0
  # Inverted.
  assert classification.accuracy(1 - labels, labels) == 0.0
  assert classification.balanced_accuracy(1 - labels, labels) == 0.0
  assert classification.f1_binary(1 - labels, labels) == 0.0
  assert classification.roc_auc([0.9, 0.8, 0.3, 0.2, 0.1], labels) == 0.0
  # Constant scores: every pair tied.
  assert classification.roc_auc(np.full(5, 0.3), labels) == 0.5
  # Always predicting one class: recall 1 for it, 0 for the other.
  ones = np.ones(5, int)
  assert classification.balanced_accuracy(ones, labels) == 0.5
  np.testing.assert_allclose(classification.f1_binary(ones, labels), 2 * 3 / (2 * 3 + 2))
  np.testing.assert_allclose(classification.f1_weighted(ones, labels), 3 / 5 * 0.75)
  # No positive anywhere: F1 undefined → 0 (zero_division=0).
  assert classification.f1_binary(np.zeros(5, int), np.zeros(5, int)) == 0.0
  # All one class in labels: AUC undefined → nan, no error.
  assert np.isnan(classification.roc_auc([0.1, 0.5, 0.9], [1, 1, 1]))
  assert np.isnan(classification.binary_report([0.1, 0.5, 0.9], [0, 0, 0])["auc"])


def test_reports():
  labels = np.array([0, 1, 1, 0, 1, 0])
  probabilities = np.array([0.2, 0.9, 0.5, 0.6, 0.4, 0.1])
  report = classification.binary_report(probabilities, labels)
  predicted = np.array([0, 1, 1, 1, 0, 0])  # >= 0.5
  assert report == {
    "accuracy": pytest.approx(4 / 6),
    "balanced_accuracy": pytest.approx(_reference_balanced_accuracy(predicted, labels)),
    "f1": pytest.approx(_reference_f1(predicted, labels, 1)),
    "weighted_f1": pytest.approx(_reference_weighted_f1(predicted, labels)),
    "auc": pytest.approx(_reference_auc(probabilities, labels)),
    # ranked 0.9+ 0.6− 0.5+ 0.4+ 0.2− 0.1−: (1/1 + 2/3 + 3/4) / 3
    "ap": pytest.approx(29 / 36),
  }
  assert all(type(value) is float for value in report.values())
  assert classification.binary_report(probabilities, labels, threshold=0.95)["f1"] == 0.0
  two_class = classification.multiclass_report(np.stack([1 - probabilities, probabilities], 1), labels)
  # argmax breaks the 0.5 tie toward class 0, unlike the >= threshold.
  tie_broken = np.array([0, 1, 0, 1, 0, 0])
  assert two_class["accuracy"] == pytest.approx(np.mean(tie_broken == labels))
  assert two_class["auc"] == pytest.approx(report["auc"])
  three_class = classification.multiclass_report(np.eye(3)[[0, 2, 1, 1]] * 0.8 + 0.05, [0, 2, 1, 0])
  assert set(three_class) == {"accuracy", "balanced_accuracy", "weighted_f1"}
  assert three_class["accuracy"] == 0.75
  assert three_class["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
  with pytest.raises(DataError, match="0/1"):
    classification.binary_report(probabilities, labels + 1)
  with pytest.raises(DataError, match="one length"):
    classification.accuracy([0, 1], [0, 1, 1])


def test_stratified_folds_are_balanced_deterministic_and_a_partition():
  rng = np.random.default_rng(3)
  labels = rng.choice(np.array([3, 7, 9]), size=53, p=[0.5, 0.3, 0.2])
  num_folds = 5
  folds = classification.stratified_folds(labels, num_folds, seed=11)
  assert folds.shape == labels.shape and folds.dtype == np.int32
  # A partition: each example in exactly one fold, every fold used.
  assert set(folds.tolist()) == set(range(num_folds))
  assert sum(np.sum(folds == fold) for fold in range(num_folds)) == len(labels)
  for value in np.unique(labels):
    per_fold = np.bincount(folds[labels == value], minlength=num_folds)
    assert per_fold.max() - per_fold.min() <= 1
  sizes = np.bincount(folds, minlength=num_folds)
  assert sizes.max() - sizes.min() <= 1
  # Same fold sizes as scikit-learn's StratifiedKFold: the class-sorted labels dealt round-robin.
  sorted_labels = np.sort(labels)
  for fold in range(num_folds):
    np.testing.assert_array_equal(
      [np.sum(folds[labels == value] == fold) for value in (3, 7, 9)],
      [np.sum(sorted_labels[fold::num_folds] == value) for value in (3, 7, 9)],
    )
  np.testing.assert_array_equal(folds, classification.stratified_folds(labels, num_folds, seed=11))
  assert not np.array_equal(folds, classification.stratified_folds(labels, num_folds, seed=12))


def test_stratified_folds_errors():
  with pytest.raises(ConfigError, match="num_folds >= 2"):
    classification.stratified_folds([0, 1, 0, 1], 1, seed=0)
  with pytest.raises(ConfigError, match="class 1 has 2 examples, fewer than num_folds=3"):
    classification.stratified_folds([0, 0, 0, 1, 1], 3, seed=0)


def test_average_precision_matches_scikit_learn():
  metrics = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(5)
  for trial in range(30):
    size = 5 + trial * 7
    labels = (rng.random(size) < 0.1 + 0.8 * rng.random()).astype(int)
    labels[trial % size] = 1  # at least one positive
    # Scores on a coarse grid so that many are tied, positives a little higher on average.
    scores = np.round(0.3 * labels + rng.random(size), 1 if trial % 2 else 2)
    np.testing.assert_allclose(
      average_precision(labels, scores), metrics.average_precision_score(labels, scores), rtol=1e-12
    )
  for scores in ([0.4, 0.4, 0.4, 0.4], [0.9, 0.8, 0.2, 0.1], [0.2, 0.5, 0.5, 0.5]):
    labels = [0, 1, 1, 0]
    np.testing.assert_allclose(
      average_precision(labels, scores), metrics.average_precision_score(labels, scores), rtol=1e-12
    )


def test_average_precision_hand_cases():
  labels = np.array([0, 1, 1, 0, 1])
  # Perfect ranking, with or without ties inside each class.
  assert average_precision(labels, [0.1, 0.9, 0.8, 0.2, 0.7]) == 1.0
  assert average_precision(labels, [0.1, 0.9, 0.9, 0.1, 0.9]) == 1.0
  # All scores equal: one threshold, recall 1 at the positive rate.
  assert average_precision(labels, np.full(5, 0.3)) == pytest.approx(3 / 5)
  # Worst ranking: positives at ranks 3, 4, 5.
  assert average_precision(labels, [0.9, 0.1, 0.2, 0.8, 0.3]) == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)
  # A tie between a positive and a negative at the top: both enter at once, precision 1/2 for the first third.
  assert average_precision(labels, [0.9, 0.9, 0.5, 0.1, 0.4]) == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
  # Infinite scores rank like any other (scikit-learn rejects them): +inf⁺, then 3⁺ tied with 3⁻, then −inf⁻.
  assert average_precision([0, 1, 1, 0], [-np.inf, 3.0, np.inf, 3.0]) == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)
  # Booleans are labels too; no positive → nan (scikit-learn warns and returns 0.0); a nan score → nan.
  assert average_precision(labels.astype(bool), [0.1, 0.9, 0.8, 0.2, 0.7]) == 1.0
  assert np.isnan(average_precision([0, 0, 0], [0.2, 0.5, 0.1]))
  assert np.isnan(average_precision(labels, [0.1, np.nan, 0.8, 0.2, 0.7]))
  with pytest.raises(DataError, match="0/1"):
    average_precision([0, 2, 1], [0.2, 0.5, 0.1])
  with pytest.raises(DataError, match="one length"):
    average_precision([0, 1], [0.2, 0.5, 0.1])
