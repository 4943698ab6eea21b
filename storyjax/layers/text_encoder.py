"""A small caption transformer trained from scratch (the default text encoder)."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.transformer import BlockOptions, TransformerEncoder

Dtype = Any
# Where caption features come from, one vocabulary for configs, data and models: a small transformer trained
# with the model on word ids, or frozen CLIP text features (B, L, Dt) computed outside the model.
TEXT_ENCODERS = ("scratch", "clip")


def pool_last_valid(features, mask):
  """(B, L, D) features, (B, L) mask → (B, D) at the last valid position (CLIP's end-of-text token)."""
  last_valid = jnp.maximum(mask.sum(-1) - 1, 0)
  return jnp.take_along_axis(features, last_valid[:, None, None], axis=1)[:, 0]


class ScratchTextEncoder(nn.Module):
  """Token ids (B, L) int32 + mask (B, L) → token features (B, L, D) and pooled (B, D).

  The pooled feature is the output at the last valid token ([EOS]), as CLIP pools at end-of-text. `options`
  are the blocks' BlockOptions.
  """

  vocab_size: int
  width: int
  num_layers: int
  num_heads: int
  max_length: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  options: BlockOptions = BlockOptions()

  @nn.compact
  def __call__(self, token_ids, token_mask, deterministic: bool = True):
    if token_ids.shape[-1] > self.max_length:
      raise ValueError(f"caption has {token_ids.shape[-1]} tokens, more than max_length={self.max_length}")
    embed = nn.Embed(
      self.vocab_size,
      self.width,
      dtype=self.dtype,
      name="token_embedding",
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
    )
    positions = self.param(
      "position_embedding",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), ("length", "embed")),
      (self.max_length, self.width),
    )
    tokens = embed(token_ids) + positions[: token_ids.shape[-1]].astype(self.dtype)
    features = TransformerEncoder(
      self.num_layers,
      self.num_heads,
      4 * self.width,
      self.dtype,
      self.dropout_rate,
      options=self.options,
      name="encoder",
    )(tokens, token_mask, deterministic)
    return features, pool_last_valid(features, token_mask)
