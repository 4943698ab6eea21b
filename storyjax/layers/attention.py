"""Multi-head attention with logical axis names; softmax in fp32."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.mlp import dense

Dtype = Any
HEAD_AXES = ("activation_batch", "activation_length", "activation_heads", "activation_kv")


class MultiHeadAttention(nn.Module):
  """Attention of queries (B, Lq, D) over context (B, Lk, D) → (B, Lq, D).

  `key_mask` (B, Lk) bool marks valid context tokens; masked keys get no weight. Projection kernels are
  (D, H·Dh) with the head-major output axis named `heads`, so tensor parallelism splits whole heads.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, queries, context, key_mask=None, deterministic: bool = True):
    width = queries.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
    head_dim = width // self.num_heads

    def project(name, inputs):  # (B, L, D) → (B, L, H, Dh)
      projected = dense(width, ("embed", "heads"), self.dtype, name, nn.initializers.xavier_uniform())(inputs)
      return nn.with_logical_constraint(projected.reshape(inputs.shape[:-1] + (self.num_heads, head_dim)), HEAD_AXES)

    query, key, value = project("query", queries), project("key", context), project("value", context)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) / jnp.sqrt(head_dim)
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    attended = attended.reshape(attended.shape[:-2] + (width,))
    return dense(width, ("heads", "embed"), self.dtype, "out", nn.initializers.xavier_uniform())(attended)
