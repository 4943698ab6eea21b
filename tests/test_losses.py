"""The shared losses against numpy formulas written from their definitions."""

import jax.numpy as jnp
import numpy as np

from storyjax import losses


def _np_smooth_l1(x, y):
  d = np.abs(x - y)
  return np.where(d < 1, 0.5 * d**2, d - 0.5)


def test_smooth_l1_and_kl_match_numpy():
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(4, 6, 9)) * 2, rng.normal(size=(4, 6, 9))
  mask = rng.random((4, 6, 1)) < 0.7
  expected = (_np_smooth_l1(x, y) * mask).sum() / (mask.sum() * 9)
  np.testing.assert_allclose(losses.smooth_l1(jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)), expected, rtol=1e-5)
  m1, v1, m2, v2 = rng.normal(size=(4, 3, 8))
  # KL(N1‖N2) per element: log(σ2/σ1) + (σ1² + (μ1 − μ2)²) / (2σ2²) − 1/2
  s1, s2 = np.exp(0.5 * v1), np.exp(0.5 * v2)
  expected = np.mean(np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5)
  np.testing.assert_allclose(losses.gaussian_kl(m1, v1, m2, v2), expected, rtol=1e-5)
  np.testing.assert_allclose(losses.gaussian_kl(m1, v1), np.mean(-np.log(s1) + (s1**2 + m1**2) / 2 - 0.5), rtol=1e-5)
  assert abs(float(losses.gaussian_kl(m1, v1, m1, v1))) < 1e-6


def test_info_nce_matches_numpy_and_filters_duplicates():
  rng = np.random.default_rng(1)
  text, motion = rng.normal(size=(2, 5, 8))
  duplicates = np.eye(5, dtype=bool)
  duplicates[0, 3] = duplicates[3, 0] = True
  unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
  logits = unit(text) @ unit(motion).T / 0.1
  masked = np.where(duplicates & ~np.eye(5, dtype=bool), -np.inf, logits)
  log_softmax = lambda a, axis: (
    a - np.log(np.exp(a - a.max(axis, keepdims=True)).sum(axis, keepdims=True)) - a.max(axis, keepdims=True)
  )
  expected = -0.5 * (np.mean(np.diag(log_softmax(masked, 1))) + np.mean(np.diag(log_softmax(masked, 0))))
  ours = losses.info_nce(jnp.asarray(text), jnp.asarray(motion), jnp.asarray(duplicates), 0.1)
  np.testing.assert_allclose(ours, expected, rtol=1e-5)
  unfiltered = losses.info_nce(jnp.asarray(text), jnp.asarray(motion), jnp.eye(5, dtype=bool), 0.1)
  assert abs(float(unfiltered) - float(ours)) > 1e-4


def test_cosine_embedding_matches_its_definition():
  """torch.nn.CosineEmbeddingLoss: 1 − cos(a, b) for y = 1, max(0, cos(a, b) − margin) for y = −1; mean."""
  rng = np.random.default_rng(2)
  first, second = rng.normal(size=(2, 6, 5))
  same = np.array([True, False, True, False, False, True])
  cosine = np.array([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(first, second)])
  for margin in (0.0, 0.3):
    expected = np.mean(np.where(same, 1 - cosine, np.maximum(cosine - margin, 0)))
    np.testing.assert_allclose(losses.cosine_embedding(first, second, same, margin), expected, rtol=1e-5)
  assert float(losses.cosine_embedding(first, first, np.ones(6, bool))) < 1e-6
