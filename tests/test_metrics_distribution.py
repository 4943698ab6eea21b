"""Fréchet distance and PRDC against closed forms and brute-force loops."""

import numpy as np
import pytest

from storyjax.metrics.distribution import frechet_distance, prdc


def test_frechet_distance_of_gaussians_matches_the_closed_form():
  rng = np.random.default_rng(0)
  std_real, std_fake, shift = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5]), np.array([0.3, -1.0, 2.0])
  real = rng.normal(size=(200_000, 3)) * std_real
  fake = rng.normal(size=(200_000, 3)) * std_fake + shift
  expected = shift @ shift + np.sum((std_real - std_fake) ** 2)  # diagonal covariances
  assert frechet_distance(real, fake) == pytest.approx(expected, rel=0.02)
  assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)


def _brute_force_prdc(real, fake, k):
  def radii(points):
    return np.array([sorted(np.linalg.norm(points - p, axis=1))[k] for p in points])

  real_radii, fake_radii = radii(real), radii(fake)
  dist = np.array([[np.linalg.norm(r - f) for f in fake] for r in real])
  precision = np.mean([any(dist[i, j] < real_radii[i] for i in range(len(real))) for j in range(len(fake))])
  recall = np.mean([any(dist[i, j] < fake_radii[j] for j in range(len(fake))) for i in range(len(real))])
  density = np.mean([sum(dist[i, j] < real_radii[i] for i in range(len(real))) for j in range(len(fake))]) / k
  coverage = np.mean([min(dist[i]) < real_radii[i] for i in range(len(real))])
  return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def test_prdc_matches_brute_force_and_extremes():
  rng = np.random.default_rng(1)
  real, fake = rng.normal(size=(40, 4)), rng.normal(size=(30, 4)) * 1.5 + 0.5
  expected = _brute_force_prdc(real, fake, k=3)
  for name, value in prdc(real, fake, k=3).items():
    assert value == pytest.approx(expected[name]), name
  far = prdc(real, real + 100.0, k=3)
  assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
  same = prdc(real, real + 1e-9, k=3)
  assert same["precision"] == same["recall"] == same["coverage"] == 1.0


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="feature sizes differ"):
    frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match="k=3 needs more than k samples"):
    prdc(np.zeros((3, 2)), np.zeros((10, 2)))


def _brute_force_published_prdc(reference, generated, k, chunks=5):
  """Director's released code path, written as loops: torch.chunk, roles swapped, recall radius indexed by row."""
  size = int(np.ceil(len(reference) / chunks))
  values = []
  for start in range(0, len(reference), size):
    real, fake = generated[start : start + size], reference[start : start + size]  # update(pred, ref)

    def radii(points):
      return np.array([sorted(np.linalg.norm(points - p, axis=1))[k] for p in points])

    real_radii, fake_radii = radii(real), radii(fake)
    dist = np.array([[np.linalg.norm(r - f) for f in fake] for r in real])
    n = len(real)
    values.append(
      {
        "precision": np.mean([any(dist[i, j] < real_radii[i] for i in range(n)) for j in range(n)]),
        "recall": np.mean([any(dist[i, j] < fake_radii[i] for j in range(n)) for i in range(n)]),
        "density": np.mean([sum(dist[i, j] < real_radii[i] for i in range(n)) for j in range(n)]) / k,
        "coverage": np.mean([min(dist[i]) < real_radii[i] for i in range(n)]),
      }
    )
  return {name: np.mean([chunk[name] for chunk in values]) for name in values[0]}


def test_published_quirks_match_directors_code_path():
  rng = np.random.default_rng(2)
  reference, generated = rng.normal(size=(42, 4)), rng.normal(size=(42, 4)) * 1.3 + 0.4  # chunks 9,9,9,9,6
  expected = _brute_force_published_prdc(reference, generated, k=3)
  quirky = prdc(reference, generated, k=3, published_quirks=True)
  for name, value in quirky.items():
    assert value == pytest.approx(expected[name]), name
  assert quirky != prdc(reference, generated, k=3)


def test_published_quirks_swap_precision_and_recall_under_mode_collapse():
  rng = np.random.default_rng(3)
  reference = rng.normal(size=(50, 2))
  collapsed = 1e-3 * rng.normal(size=(50, 2))  # every generated sample at the reference mode
  standard = prdc(reference, collapsed, k=3)
  assert standard["precision"] == 1.0 and standard["recall"] == 0.0
  quirky = prdc(reference, collapsed, k=3, published_quirks=True)
  assert quirky["precision"] == 0.0  # reference samples inside the tiny generated balls: none
  assert quirky["coverage"] == 0.0 and quirky["density"] == 0.0
  assert quirky["recall"] == 1.0  # generated samples inside reference balls: the standard precision


def test_published_quirks_need_paired_chunks():
  with pytest.raises(ValueError, match="as many real as fake"):
    prdc(np.zeros((20, 2)), np.zeros((21, 2)), published_quirks=True)
  with pytest.raises(ValueError, match="chunks of 3"):
    prdc(np.random.default_rng(0).normal(size=(12, 2)), np.zeros((12, 2)), published_quirks=True)
