"""Multi-head attention with logical axis names; softmax in fp32."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def _partitioned(init, names):
  return nn.with_logical_partitioning(init, names)


class MultiHeadAttention(nn.Module):
  """Attention of queries (B, Lq, D) over context (B, Lk, D) → (B, Lq, D).

  `key_mask` (B, Lk) bool marks valid context tokens; masked keys get no weight.
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
    project = lambda name: nn.DenseGeneral(
        features=(self.num_heads, head_dim), dtype=self.dtype, name=name,
        kernel_init=_partitioned(nn.initializers.xavier_uniform(), ("embed", "heads", "kv")),
        bias_init=_partitioned(nn.initializers.zeros, ("heads", "kv")))
    query = project("query")(queries)
    key = project("key")(context)
    value = project("value")(context)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key).astype(jnp.float32) / jnp.sqrt(head_dim)
    if key_mask is not None:
      logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    return nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype, name="out",
        kernel_init=_partitioned(nn.initializers.xavier_uniform(), ("heads", "kv", "embed")),
        bias_init=_partitioned(nn.initializers.zeros, ("embed",)))(attended)
