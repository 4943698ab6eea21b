"""Condition mapper: learned registers and condition tokens through a small transformer (Director C, TextRIN)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.embeddings import with_positions
from storyjax.layers.transformer import BlockOptions, TransformerEncoder

Dtype = Any


class ConditionMapper(nn.Module):
  """Registers (R, D) ‖ condition tokens (B, N, D) → pre-norm transformer → tokens (B, R+N, D), mask (B, R+N).

  `condition_mask` (B, N) bool marks valid condition tokens (None = all valid); registers are always valid,
  and the returned mask is the key mask for attending to the result. With `sinusoidal_positions`, positions
  0..R+N−1 are added before the transformer; `layer_scale_init` is the blocks' LayerScale (None = off);
  `options` are the blocks' BlockOptions.
  """

  num_registers: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_scale_init: float | None = None
  sinusoidal_positions: bool = True
  options: BlockOptions = BlockOptions()

  @nn.compact
  def __call__(self, condition_tokens, condition_mask=None, deterministic: bool = True):
    batch, num_conditions, width = condition_tokens.shape
    if condition_mask is None:
      condition_mask = jnp.ones((batch, num_conditions), bool)
    elif condition_mask.shape != (batch, num_conditions):
      raise ValueError(f"condition_mask must be (B, N) = {(batch, num_conditions)}, got {condition_mask.shape}")
    registers = self.param(
      "registers",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), ("length", "embed")),
      (self.num_registers, width),
    )
    tokens = jnp.concatenate(
      [jnp.broadcast_to(registers.astype(self.dtype), (batch,) + registers.shape), condition_tokens.astype(self.dtype)],
      axis=1,
    )
    key_mask = jnp.concatenate([jnp.ones((batch, self.num_registers), bool), condition_mask], axis=1)
    if self.sinusoidal_positions:
      tokens = with_positions(tokens)
    tokens = TransformerEncoder(
      self.num_layers,
      self.num_heads,
      self.mlp_dim,
      self.dtype,
      self.dropout_rate,
      self.stochastic_depth,
      self.layer_scale_init,
      self.options,
      name="encoder",
    )(tokens, key_mask, deterministic)
    return tokens, key_mask
