"""Sinusoidal position / noise-level embeddings."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.mlp import dense

Dtype = Any


def sinusoidal_embedding(positions, dim: int, max_period: float = 10_000.0):
  """positions (...,) → (..., dim) = [cos(p·f_i) ‖ sin(p·f_i)], f_i = max_period^(−i/(dim/2))."""
  if dim % 2:
    raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
  half = dim // 2
  frequencies = (1.0 / max_period) ** (jnp.arange(half, dtype=jnp.float32) / half)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * frequencies
  return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)


def with_positions(tokens):
  """(B, L, D) + the sinusoidal embedding of positions 0..L−1."""
  return tokens + sinusoidal_embedding(jnp.arange(tokens.shape[1]), tokens.shape[-1]).astype(tokens.dtype)


class NoiseLevelEmbedding(nn.Module):
  """EDM noise level c_noise (B,) → (B, D): sinusoid of time_scale·c_noise, normalised, then a SiLU MLP."""
  width: int
  frequency_dim: int = 128
  time_scale: float = 1000.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, c_noise):
    features = sinusoidal_embedding(self.time_scale * c_noise, self.frequency_dim)
    features = (features - features.mean(-1, keepdims=True)) / (features.std(-1, keepdims=True) + 1e-6)
    hidden = nn.silu(dense(self.width, ("io", "mlp"), self.dtype, name="fc1")(features))
    return dense(self.width, ("mlp", "embed"), self.dtype, name="fc2")(hidden)
