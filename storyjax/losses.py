"""Shared losses: robust regression, Gaussian KL, contrastive (InfoNCE, NT-Xent, CLIP), cosine embedding, perceptual."""

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


def masked_mean(values, mask):
  """Mean of `values` over the True entries of `mask` (same shape); 0 when there are none."""
  return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


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


def cosine_embedding(first, second, same, margin: float = 0.0, mask=None):
  """torch's CosineEmbeddingLoss, mean over B: 1 − cos for same (B,) pairs, max(0, cos − margin) for the others;
  with `mask` (B,) bool, the mean over the masked-in pairs only."""
  cosine = jnp.sum(unit_rows(first) * unit_rows(second), axis=-1)
  losses = jnp.where(same, 1.0 - cosine, jnp.maximum(cosine - margin, 0.0))
  return jnp.mean(losses) if mask is None else masked_mean(losses, mask)


PERCEPTUAL_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # SCAM's VGGLoss on relu1_1 … relu5_1 (facts B.6)


def perceptual_l1(features_a, features_b, weights=PERCEPTUAL_WEIGHTS):
  """Σ_l weights[l] · mean|features_a[l] − features_b[l]| in fp32 over L paired feature maps of any (equal) shapes.

  SCAM's VGGLoss (facts B.6) with the default weights on VGG19Features' relu1_1 … relu5_1; any feature network
  returning a list of maps can be used.
  """
  if not len(features_a) == len(features_b) == len(weights):
    raise ValueError(
      f"perceptual_l1 needs as many weights as feature maps: got {len(features_a)} and {len(features_b)} maps, "
      f"{len(weights)} weights"
    )
  total = jnp.zeros((), jnp.float32)
  for level, (weight, first, second) in enumerate(zip(weights, features_a, features_b)):
    if first.shape != second.shape:
      raise ValueError(f"perceptual_l1 feature maps {level} differ in shape: {first.shape} and {second.shape}")
    total += weight * jnp.mean(jnp.abs(first.astype(jnp.float32) - second.astype(jnp.float32)))
  return total


def nt_xent(first, second, temperature):
  """SimCLR's NT-Xent over the 2B views of (B, D) pairs: mean over anchors of −log softmax of the positive.

  Logits are cosine similarities / temperature; each view's positive is its pair, its negatives the other 2B − 2
  views (its similarity with itself is excluded).
  """
  views = unit_rows(jnp.concatenate([first, second]).astype(jnp.float32))
  logits = views @ views.T / temperature
  logits = jnp.where(jnp.eye(len(views), dtype=bool), -jnp.inf, logits)
  batch = len(first)
  pair = jnp.concatenate([jnp.arange(batch, 2 * batch), jnp.arange(batch)])
  log_probabilities = jax.nn.log_softmax(logits, axis=1)
  return -jnp.mean(jnp.take_along_axis(log_probabilities, pair[:, None], axis=1))


def clip_contrastive(image_features, text_features, logit_scale):
  """CLIP's loss on (B, D) pairs: ½[CE(L, arange) + CE(Lᵀ, arange)], L = exp(logit_scale) · unit(I) · unit(T)ᵀ.

  This is info_nce with temperature exp(−logit_scale) and no duplicates; logit_scale may be a learned scalar.
  """
  no_duplicates = jnp.zeros((len(image_features), len(text_features)), bool)
  return info_nce(image_features, text_features, no_duplicates, jnp.exp(-logit_scale))


def noisy_unit_rows(features, rng, noise_scale: float):
  """ADAPT's augmentation before InfoNCE: (B, D) rows l2-normalised, plus N(0, 1) · noise_scale, l2-normalised again."""
  unit = unit_rows(features)
  return unit_rows(unit + noise_scale * jax.random.normal(rng, unit.shape, unit.dtype))
