"""Distances between sets of features: Fréchet distance and precision / recall / density / coverage.

Standard definitions (Heusel et al. 2017; Naeem et al. 2020, as in clovaai/generative-evaluation-prdc), on
host numpy in float64. Director's FD_CLaTr and P/R/D/C apply them to CLaTr features.
"""
import numpy as np


def _as_features(features, name: str) -> np.ndarray:
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"{name} must be (N >= 2, D) features, got shape {features.shape}")
  return features


def frechet_distance(real, fake) -> float:
  """‖μr − μf‖² + Tr(Σr + Σf − 2 (Σr Σf)^½) of Gaussian fits to (N, D) and (M, D) features.

  Covariances use the (n − 1) divisor; Tr((Σr Σf)^½) is Σ √eig(Σr Σf), as in Director's evaluation.
  """
  real, fake = _as_features(real, "real"), _as_features(fake, "fake")
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
  mean_gap = real.mean(0) - fake.mean(0)
  cov_real, cov_fake = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
  sqrt_trace = np.sum(np.sqrt(np.linalg.eigvals(cov_real @ cov_fake).astype(np.complex128)).real)
  return float(mean_gap @ mean_gap + np.trace(cov_real) + np.trace(cov_fake) - 2.0 * sqrt_trace)


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.sqrt(np.maximum(squared, 0.0))


def _knn_radii(features: np.ndarray, k: int) -> np.ndarray:
  """Distance of each point to its k-th nearest other point."""
  distances = _pairwise_distances(features, features)
  return np.partition(distances, k, axis=1)[:, k]  # column 0 of the sorted row is the point itself


def prdc(real, fake, k: int = 3) -> dict[str, float]:
  """Precision, recall, density and coverage of fake (M, D) against real (N, D) k-NN manifolds."""
  real, fake = _as_features(real, "real"), _as_features(fake, "fake")
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"k={k} needs more than k samples on each side; got {len(real)} real, {len(fake)} fake")
  real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
  real_to_fake = _pairwise_distances(real, fake)  # (N, M)
  inside_real_balls = real_to_fake < real_radii[:, None]
  return {
      "precision": float(inside_real_balls.any(axis=0).mean()),
      "recall": float((real_to_fake < fake_radii[None, :]).any(axis=1).mean()),
      "density": float(inside_real_balls.sum(axis=0).mean() / k),
      "coverage": float((real_to_fake.min(axis=1) < real_radii).mean()),
  }
