"""Position embeddings (sinusoidal 1-D and 2-D, learned) and the noise-level embedding."""

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


def sinusoidal_embedding_2d(height: int, width: int, dim: int, max_period: float = 10_000.0):
  """Positions of an (H, W) grid → (H·W, dim), rows first: [row embedding ‖ column embedding].

  As in MAE/ViT, half the channels encode the row and half the column, each a `sinusoidal_embedding` of
  dim/2 channels (so dim must be a multiple of 4); token index = row·W + column, the order of `patchify`.
  """
  if dim % 4:
    raise ValueError(f"2-D sinusoidal embedding dim must be a multiple of 4, got {dim}")
  rows, columns = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
  return jnp.concatenate(
    [
      sinusoidal_embedding(rows.reshape(-1), dim // 2, max_period),
      sinusoidal_embedding(columns.reshape(-1), dim // 2, max_period),
    ],
    axis=-1,
  )


class LearnedPositions(nn.Module):
  """Tokens (B, L, D) + rows 0..L−1 of a learned (max_length, D) table on logical axes ("length", "embed")."""

  max_length: int

  @nn.compact
  def __call__(self, tokens):
    length, width = tokens.shape[1:]
    if length > self.max_length:
      raise ValueError(f"{length} tokens exceed the {self.max_length} learned positions; raise max_length.")
    table = self.param(
      "embedding",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), ("length", "embed")),
      (self.max_length, width),
    )
    return tokens + table[:length].astype(tokens.dtype)


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


def sinusoidal_grid_embedding(height: int, width: int, dim: int, max_period: float = 10_000.0):
  """An (H, W) grid with coordinates linspace(−1, 1) → (H, W, dim) = [sin(w·f) ‖ sin(h·f) ‖ cos(w·f) ‖ cos(h·f)].

  SCAM's SinusoidalPositionalEmbedding (shared/spec/facts/laeo-scam.md B.3): f_i = max_period^(−2i/(dim/2)),
  i < dim/4, so dim must be a multiple of 4.
  """
  if dim % 4:
    raise ValueError(f"sinusoidal grid embedding dim must be a multiple of 4, got {dim}")
  half = dim // 2
  frequencies = 1.0 / max_period ** (jnp.arange(0, half, 2, dtype=jnp.float32) / half)
  rows = jnp.linspace(-1.0, 1.0, height, dtype=jnp.float32)[:, None] * frequencies  # (H, dim/4)
  columns = jnp.linspace(-1.0, 1.0, width, dtype=jnp.float32)[:, None] * frequencies  # (W, dim/4)
  rows = jnp.broadcast_to(rows[:, None], (height, width, dim // 4))
  columns = jnp.broadcast_to(columns[None], (height, width, dim // 4))
  return jnp.concatenate([jnp.sin(columns), jnp.sin(rows), jnp.cos(columns), jnp.cos(rows)], axis=-1)
