"""Pre-norm transformer blocks shared by every sequence model."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.layers.attention import MultiHeadAttention
from storyjax.layers.mlp import MlpBlock, layer_norm

Dtype = Any
RESIDUAL_AXES = ("activation_batch", "activation_length", "activation_embed")


class StochasticDepth(nn.Module):
  """Drops a residual branch (B, ...) per sample with probability `rate`, rescaling the kept ones."""
  rate: float

  @nn.compact
  def __call__(self, branch, deterministic: bool = True):
    if deterministic or self.rate == 0.0:
      return branch
    keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.rate, (branch.shape[0],))
    scale = keep.astype(branch.dtype) / (1.0 - self.rate)
    return branch * scale.reshape((-1,) + (1,) * (branch.ndim - 1))


class TransformerBlock(nn.Module):
  """x += SA(LN(x)); x += MLP(LN(x)) on tokens (B, L, D) with key mask (B, L)."""
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0

  @nn.compact
  def __call__(self, tokens, key_mask=None, deterministic: bool = True):
    tokens = nn.with_logical_constraint(tokens, RESIDUAL_AXES)
    drop_path = StochasticDepth(self.stochastic_depth)
    dropout = nn.Dropout(self.dropout_rate)
    normed = layer_norm(self.dtype, name="attention_norm")(tokens)
    attended = MultiHeadAttention(self.num_heads, self.dtype, self.dropout_rate, name="attention")(
        normed, normed, key_mask, deterministic)
    tokens = tokens + drop_path(dropout(attended, deterministic=deterministic), deterministic)
    normed = layer_norm(self.dtype, name="mlp_norm")(tokens)
    transformed = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(normed, deterministic)
    tokens = tokens + drop_path(dropout(transformed, deterministic=deterministic), deterministic)
    return nn.with_logical_constraint(tokens, RESIDUAL_AXES)


class TransformerEncoder(nn.Module):
  """A stack of pre-norm blocks followed by a final LayerNorm: (B, L, D) → (B, L, D)."""
  num_layers: int
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0

  @nn.compact
  def __call__(self, tokens, key_mask=None, deterministic: bool = True):
    for index in range(self.num_layers):
      tokens = TransformerBlock(
          self.num_heads, self.mlp_dim, self.dtype, self.dropout_rate, self.stochastic_depth,
          name=f"block_{index}")(tokens, key_mask, deterministic)
    return layer_norm(self.dtype, name="final_norm")(tokens)
