"""Distances between sets of features: Fréchet distance and precision / recall / density / coverage.

Standard definitions (Heusel et al. 2017; Naeem et al. 2020, as in clovaai/generative-evaluation-prdc), on
host numpy in float64. Director's FD_CLaTr and P/R/D/C apply them to CLaTr features; prdc(published_quirks=True)
reproduces Director's released P/R/D/C.
"""

import numpy as np

PUBLISHED_CHUNKS = 5  # Director computes P/R/D/C on 5 chunks of the features and averages them


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


def _standard_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
  real_radii, fake_radii = _knn_radii(real, k), _knn_radii(fake, k)
  real_to_fake = _pairwise_distances(real, fake)  # (N, M)
  inside_real_balls = real_to_fake < real_radii[:, None]
  return {
    "precision": float(inside_real_balls.any(axis=0).mean()),
    "recall": float((real_to_fake < fake_radii[None, :]).any(axis=1).mean()),
    "density": float(inside_real_balls.sum(axis=0).mean() / k),
    "coverage": float((real_to_fake.min(axis=1) < real_radii).mean()),
  }


def _published_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
  """Director's released P/R/D/C: roles swapped, recall radius indexed by the real sample, chunked."""
  if len(real) != len(fake):
    raise ValueError(
      f"published_quirks pairs the recall radius of reference sample i with generated sample i, so "
      f"it needs as many real as fake samples; got {len(real)} real, {len(fake)} fake"
    )
  chunk_size = -(-len(real) // PUBLISHED_CHUNKS)  # torch.chunk: ceil(N / chunks) per chunk, possibly fewer chunks
  if len(real) - chunk_size * ((len(real) - 1) // chunk_size) <= k:
    raise ValueError(
      f"published_quirks splits {len(real)} samples into chunks of {chunk_size}; the last one needs "
      f"more than k={k} samples"
    )
  results = []
  for start in range(0, len(real), chunk_size):
    generated, reference = fake[start : start + chunk_size], real[start : start + chunk_size]
    chunk = _standard_prdc(generated, reference, k)  # quirk 1: the generated features play "real"
    generated_to_reference = _pairwise_distances(generated, reference)
    reference_radii = _knn_radii(reference, k)
    # quirk 2: distance (i, j) is compared with the radius of reference sample i instead of j
    chunk["recall"] = float((generated_to_reference < reference_radii[:, None]).any(axis=1).mean())
    results.append(chunk)
  return {name: float(np.mean([chunk[name] for chunk in results])) for name in results[0]}


def prdc(real, fake, k: int = 3, published_quirks: bool = False) -> dict[str, float]:
  """Precision, recall, density and coverage of fake (M, D) against real (N, D) k-NN manifolds.

  A k-NN radius is the distance to the k-th nearest other point (clovaai's (k+1)-th smallest distance counting
  the point itself; Director's code computes the same radius).

  published_quirks=True reproduces Director's released evaluation (DIRECTOR src/metrics/modules/prdc.py as its
  metric callback calls it), with real = reference and fake = generated as here:
    1. the callback passes the generated features as "real" and the reference as "fake", so its precision is
       the standard recall (reference samples inside generated balls) and density/coverage swap roles too;
    2. its recall tests d(generated_i, reference_j) < radius(reference_i) instead of radius(reference_j),
       pairing radius and sample by index (so it needs N = M);
    3. the features are cut into 5 consecutive chunks the way torch.chunk does (ceil(N / 5) samples each, so
       there may be fewer chunks), and P/R/D/C are averaged over chunks.
  Its float32 distances are float64 here.
  """
  real, fake = _as_features(real, "real"), _as_features(fake, "fake")
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"k={k} needs more than k samples on each side; got {len(real)} real, {len(fake)} fake")
  if published_quirks:
    return _published_prdc(real, fake, k)
  return _standard_prdc(real, fake, k)
