"""Losses shared by the models: robust regression, Gaussian KL, contrastive (InfoNCE) and cosine embedding."""

import jax
import jax.numpy as jnp


def smooth_l1(prediction, target, mask=None):
  """Mean Huber loss with β = 1 (torch's SmoothL1Loss) over the entries where mask (broadcastable) is true."""
  difference = jnp.abs(prediction - target)
  loss = jnp.where(difference < 1.0, 0.5 * difference**2, difference - 0.5)
  if mask is None:
    return loss.mean()
  mask = jnp.broadcast_to(mask, loss.shape).astype(loss.dtype)
  return (loss * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def gaussian_kl(mean, logvar, other_mean=None, other_logvar=None):
  """Mean over elements of KL(N(mean, e^logvar) ‖ N(other)), other = N(0, I) by default."""
  if other_mean is None:
    other_mean, other_logvar = jnp.zeros_like(mean), jnp.zeros_like(logvar)
  return 0.5 * jnp.mean(
    other_logvar - logvar + (jnp.exp(logvar) + (mean - other_mean) ** 2) / jnp.exp(other_logvar) - 1.0
  )


def unit_rows(features):
  """(B, D) rows scaled to unit length."""
  return features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-8)


def info_nce(queries, keys, duplicates, temperature: float):
  """Symmetric InfoNCE over (B, D) pairs with cosine logits; duplicates (B, B) bool pairs are not negatives."""
  logits = unit_rows(queries) @ unit_rows(keys).T / temperature
  diagonal = jnp.eye(len(logits), dtype=bool)
  logits = jnp.where(duplicates & ~diagonal, -jnp.inf, logits)
  query_to_key = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
  key_to_query = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
  return 0.5 * (query_to_key + key_to_query)


def cosine_embedding(first, second, same, margin: float = 0.0):
  """torch's CosineEmbeddingLoss, mean over B: 1 − cos for same (B,) pairs, max(0, cos − margin) for the others."""
  cosine = jnp.sum(unit_rows(first) * unit_rows(second), axis=-1)
  return jnp.mean(jnp.where(same, 1.0 - cosine, jnp.maximum(cosine - margin, 0.0)))
