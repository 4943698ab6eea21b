"""Classification metrics on host numpy: accuracy, balanced accuracy, F1, ROC AUC, average precision, stratified
folds and reports.

Definitions follow scikit-learn's (balanced_accuracy_score, f1_score with zero_division=0, roc_auc_score,
average_precision_score, StratifiedKFold(shuffle=True)'s fold sizes), written here so that nothing beyond numpy and
scipy is needed.
"""

import numpy as np
import scipy.stats

from storyjax.errors import ConfigError, DataError


def _pair(predicted, labels, name: str = "predicted") -> tuple[np.ndarray, np.ndarray]:
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  if predicted.ndim != 1 or predicted.shape != labels.shape or len(labels) == 0:
    raise DataError(
      f"{name} and labels must be non-empty (N,) arrays of one length, got {predicted.shape} and {labels.shape}"
    )
  return predicted, labels


def accuracy(predicted, labels) -> float:
  """Fraction of the (N,) predicted classes equal to the (N,) labels."""
  predicted, labels = _pair(predicted, labels)
  return float(np.mean(predicted == labels))


def balanced_accuracy(predicted, labels) -> float:
  """Mean over the classes present in labels (N,) of their recall (fraction of the class predicted as itself)."""
  predicted, labels = _pair(predicted, labels)
  return float(np.mean([np.mean(predicted[labels == value] == value) for value in np.unique(labels)]))


def _f1(predicted: np.ndarray, labels: np.ndarray, positive) -> float:
  """2·TP / (2·TP + FP + FN), 0 when there is no positive in either array (scikit-learn's zero_division=0)."""
  true_positives = np.sum((predicted == positive) & (labels == positive))
  false_positives = np.sum((predicted == positive) & (labels != positive))
  false_negatives = np.sum((predicted != positive) & (labels == positive))
  denominator = 2 * true_positives + false_positives + false_negatives
  return float(2 * true_positives / denominator) if denominator else 0.0


def f1_binary(predicted, labels, positive=1) -> float:
  """F1 of class `positive` from (N,) predicted classes and labels; 0 when undefined."""
  predicted, labels = _pair(predicted, labels)
  return _f1(predicted, labels, positive)


def f1_weighted(predicted, labels) -> float:
  """Per-class F1 averaged with weights = each class's count in labels (N,) (scikit-learn's average="weighted").

  Classes only ever predicted have weight 0.
  """
  predicted, labels = _pair(predicted, labels)
  classes, support = np.unique(labels, return_counts=True)
  scores = np.array([_f1(predicted, labels, value) for value in classes])
  return float(np.sum(scores * support) / np.sum(support))


def _binary_labels(labels: np.ndarray) -> np.ndarray:
  if not np.all((labels == 0) | (labels == 1)):
    raise DataError(f"binary labels must be 0/1 (or bool), got values {np.unique(labels)[:10]}")
  return labels.astype(bool)


def roc_auc(scores, labels) -> float:
  """Area under the ROC curve of (N,) scores for 0/1 labels (N,): P(score⁺ > score⁻) + ½ P(score⁺ = score⁻).

  Computed as the Mann–Whitney U / (n_pos · n_neg) with tied scores sharing their mean rank; nan when labels hold
  one class only.
  """
  scores, labels = _pair(scores, labels, "scores")
  positive = _binary_labels(labels)
  num_positive, num_negative = int(positive.sum()), int((~positive).sum())
  if num_positive == 0 or num_negative == 0:
    return float("nan")
  ranks = scipy.stats.rankdata(np.asarray(scores, np.float64))
  mann_whitney_u = ranks[positive].sum() - num_positive * (num_positive + 1) / 2
  return float(mann_whitney_u / (num_positive * num_negative))


def average_precision(labels, scores) -> float:
  """Average precision of (N,) scores for 0/1 labels (N,), as scikit-learn's average_precision_score.

  AP = Σ_n (R_n − R_{n−1}) · P_n over the distinct scores taken as thresholds from the highest down (R_0 = 0), where
  P_n and R_n are the precision and recall of predicting positive every example scored >= the n-th threshold; tied
  scores therefore enter together. No interpolation (unlike VOC AP). nan when labels hold no positive: recall is
  undefined there (scikit-learn warns and returns 0.0, which would read as a worst-possible ranking); nan too when a
  score is nan, as roc_auc (scikit-learn raises).
  Note the argument order, scikit-learn's (y_true, y_score), not roc_auc's (scores, labels).
  """
  scores, labels = _pair(scores, labels, "scores")
  positive = _binary_labels(labels)
  scores = scores.astype(np.float64)
  if not positive.any() or np.isnan(scores).any():
    return float("nan")
  order = np.argsort(-scores, kind="stable")
  ranked_scores, ranked_positive = scores[order], positive[order]
  last_of_tie = np.append(ranked_scores[1:] != ranked_scores[:-1], True)
  true_positives = np.cumsum(ranked_positive)[last_of_tie]
  precision = true_positives / (np.flatnonzero(last_of_tie) + 1)
  recall_gain = np.diff(true_positives, prepend=0) / true_positives[-1]
  return float(np.sum(recall_gain * precision))


def stratified_folds(labels, num_folds: int, seed: int) -> np.ndarray:
  """(N,) int32 fold in [0, num_folds) of each example, class proportions kept in every fold.

  As scikit-learn's StratifiedKFold(shuffle=True): the examples sorted by class are dealt round-robin to the folds
  (so per-class and total fold sizes differ by at most 1), and each class's examples are shuffled before dealing.
  The folds depend only on (labels, num_folds, seed).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise DataError(f"labels must be (N,), got shape {labels.shape}")
  if num_folds < 2:
    raise ConfigError(f"stratified_folds needs num_folds >= 2, got {num_folds}")
  classes, counts = np.unique(labels, return_counts=True)
  if len(classes) and counts.min() < num_folds:
    smallest = classes[np.argmin(counts)].item()
    raise ConfigError(
      f"class {smallest!r} has {counts.min()} examples, fewer than num_folds={num_folds}: every fold needs one of "
      f"each class; use at most {counts.min()} folds (class counts: {dict(zip(classes.tolist(), counts.tolist()))})"
    )
  rng = np.random.default_rng(seed)
  folds = np.empty(len(labels), np.int32)
  dealt = 0
  for value, count in zip(classes, counts):
    members = rng.permutation(np.flatnonzero(labels == value))
    folds[members] = (dealt + np.arange(count)) % num_folds
    dealt += count
  return folds


def binary_report(probabilities, labels, threshold: float = 0.5) -> dict[str, float]:
  """accuracy, balanced_accuracy, f1, weighted_f1, auc and ap of (N,) positive-class probabilities for 0/1 labels
  (N,).

  An example is predicted positive when its probability is >= threshold; auc and ap (average precision) use the
  probabilities themselves.
  """
  probabilities, labels = _pair(probabilities, labels, "probabilities")
  labels = _binary_labels(labels).astype(np.int64)
  predicted = (probabilities >= threshold).astype(np.int64)
  return {
    "accuracy": accuracy(predicted, labels),
    "balanced_accuracy": balanced_accuracy(predicted, labels),
    "f1": f1_binary(predicted, labels),
    "weighted_f1": f1_weighted(predicted, labels),
    "auc": roc_auc(probabilities, labels),
    "ap": average_precision(labels, probabilities),
  }


def multiclass_report(probabilities, labels) -> dict[str, float]:
  """accuracy, balanced_accuracy and weighted_f1 of argmax predictions from (N, C) probabilities for labels (N,).

  With C == 2 also auc of probabilities[:, 1] for the class-1 labels.
  """
  probabilities, labels = np.asarray(probabilities), np.asarray(labels)
  if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
    raise DataError(f"probabilities must be (N, C) for labels (N,), got {probabilities.shape} and {labels.shape}")
  predicted = np.argmax(probabilities, axis=1)
  report = {
    "accuracy": accuracy(predicted, labels),
    "balanced_accuracy": balanced_accuracy(predicted, labels),
    "weighted_f1": f1_weighted(predicted, labels),
  }
  if probabilities.shape[1] == 2:
    report["auc"] = roc_auc(probabilities[:, 1], labels)
  return report
