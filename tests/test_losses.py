"""The shared losses against numpy formulas written from their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax import losses

pytestmark = pytest.mark.usefixtures("fast_compile")


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


def _np_unit(rows):
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _np_logsumexp(values):
  top = max(values)
  return top + np.log(sum(np.exp(value - top) for value in values))


def _np_nt_xent(first, second, temperature):
  """Loop over the 2B anchors: −sim(anchor, pair) / τ + logsumexp over every other view of sim / τ."""
  views = _np_unit(np.concatenate([first, second]).astype(np.float64))
  batch, total = len(first), 0.0
  for anchor in range(2 * batch):
    pair = (anchor + batch) % (2 * batch)
    others = [views[anchor] @ views[k] / temperature for k in range(2 * batch) if k != anchor]
    total += -views[anchor] @ views[pair] / temperature + _np_logsumexp(others)
  return total / (2 * batch)


def _np_clip(image, text, logit_scale):
  """CLIP's pseudo-code: logits = exp(t) · I_e · T_eᵀ; (CE over rows + CE over columns) / 2, one anchor at a time."""
  logits = np.exp(logit_scale) * _np_unit(image.astype(np.float64)) @ _np_unit(text.astype(np.float64)).T
  batch = len(logits)
  image_to_text = np.mean([_np_logsumexp(logits[i]) - logits[i, i] for i in range(batch)])
  text_to_image = np.mean([_np_logsumexp(logits[:, j]) - logits[j, j] for j in range(batch)])
  return 0.5 * (image_to_text + text_to_image)


def test_nt_xent_matches_numpy_loop():
  rng = np.random.default_rng(3)
  nt_xent = jax.jit(losses.nt_xent)  # one compile per shape instead of op-by-op dispatch
  first, second = rng.normal(size=(2, 6, 8)).astype(np.float32)
  for temperature in (0.1, 0.5, 2.0):
    expected = _np_nt_xent(first, second, temperature)
    np.testing.assert_allclose(nt_xent(first, second, temperature), expected, rtol=1e-5)
  # Symmetric in the two views and invariant to the order of the pairs.
  order = rng.permutation(6)
  np.testing.assert_allclose(nt_xent(second, first, 0.5), nt_xent(first, second, 0.5), rtol=1e-6)
  np.testing.assert_allclose(nt_xent(first[order], second[order], 0.5), nt_xent(first, second, 0.5), rtol=1e-6)
  # Hand case: identical orthonormal views, so the positive has cosine 1 and the 2B − 2 negatives cosine 0.
  batch, temperature = 3, 0.2
  basis = np.eye(batch, 5, dtype=np.float32)
  expected = -1 / temperature + np.log(np.exp(1 / temperature) + 2 * batch - 2)
  np.testing.assert_allclose(nt_xent(basis, 4 * basis, temperature), expected, rtol=1e-5)


def test_clip_contrastive_is_clips_loss():
  rng = np.random.default_rng(4)
  image, text = rng.normal(size=(2, 7, 16)).astype(np.float32)
  clip_contrastive = jax.jit(losses.clip_contrastive)
  for logit_scale in (0.0, np.log(1 / 0.07), np.log(100.0)):
    expected = _np_clip(image, text, logit_scale)
    np.testing.assert_allclose(clip_contrastive(image, text, logit_scale), expected, rtol=1e-5)


def test_learnable_temperature_gradients_are_finite():
  rng = np.random.default_rng(5)
  first, second = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
  for loss, scalar in (
    (lambda t: losses.nt_xent(first, second, t), 0.07),
    (lambda s: losses.clip_contrastive(first, second, s), float(np.log(1 / 0.07))),
  ):
    gradient = jax.jit(jax.grad(loss))(jnp.float32(scalar))
    assert np.isfinite(gradient) and gradient != 0
    # The gradient agrees with a central difference (float32, step 1e-2 of the scalar's scale).
    step = 1e-2 * abs(scalar)
    values = jax.jit(jax.vmap(loss))(jnp.float32([scalar + step, scalar - step]))
    central = (values[0] - values[1]) / (2 * step)
    np.testing.assert_allclose(gradient, central, rtol=2e-2)


def test_cosine_embedding_hand_cases_with_margin():
  """torch's CosineEmbeddingLoss with y = ±1 and margin 0.5 on pairs of known cosine."""
  angle = lambda cosine: np.array([cosine, np.sqrt(1 - cosine**2)])
  first = np.tile([1.0, 0.0], (5, 1))
  cosines = np.array([1.0, -1.0, 0.8, 0.2, 0.5])
  second = np.stack([3 * angle(c) for c in cosines])
  targets = np.array([1, 1, -1, -1, -1])
  # y = 1: 1 − cos → 0, 2; y = −1: max(0, cos − 0.5) → 0.3, 0, 0.
  expected = np.mean([0.0, 2.0, 0.3, 0.0, 0.0])
  np.testing.assert_allclose(losses.cosine_embedding(first, second, targets == 1, 0.5), expected, rtol=1e-5)


def test_noisy_unit_rows():
  rng = np.random.default_rng(6)
  features = jnp.asarray(rng.normal(size=(4, 32)) * 5, jnp.float32)
  key = jax.random.key(0)
  noisy = losses.noisy_unit_rows(features, key, 0.1)
  np.testing.assert_allclose(np.linalg.norm(noisy, axis=1), 1.0, rtol=1e-5)
  noise = np.asarray(jax.random.normal(key, features.shape, features.dtype))
  expected = _np_unit(_np_unit(np.asarray(features)) + 0.1 * noise)
  np.testing.assert_allclose(noisy, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses.noisy_unit_rows(features, key, 0.0), _np_unit(np.asarray(features)), rtol=1e-5)
  assert not np.allclose(noisy, losses.noisy_unit_rows(features, jax.random.key(1), 0.1))
