"""Pre-norm transformer blocks shared by every sequence model.

One block serves three conditioning styles: plain self-attention, an extra cross-attention sub-layer to a
context sequence, and adaLN-zero modulation by a pooled condition vector (DiT).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.layers.attention import MultiHeadAttention
from storyjax.layers.mlp import MlpBlock, dense, layer_norm

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


def modulation(condition, num_chunks: int, width: int, dtype: Dtype, name: str) -> list:
  """adaLN-zero: condition (B, C) → `num_chunks` (B, 1, width) shift/scale/gate terms, zero at init."""
  terms = dense(num_chunks * width, ("embed", "mlp"), dtype, name, nn.initializers.zeros)(nn.silu(condition))
  return jnp.split(terms[:, None, :], num_chunks, axis=-1)


class TransformerBlock(nn.Module):
  """Pre-norm block on tokens (B, L, D) with key mask (B, L).

  Plain: x += SA(LN(x)); x += MLP(LN(x)). With `context` (B, Lc, D) and `context_mask` (B, Lc), a
  cross-attention sub-layer x += CA(LN(x), context) comes first. With `condition` (B, C), the LayerNorms lose
  their affine terms and adaLN-zero modulates each sub-layer: x += gate·F(LN(x)·(1 + scale) + shift).
  With `layer_scale_init` set, LayerScale (CaiT) multiplies each residual branch by a learned (D,) vector
  `<sub-layer>_layer_scale` starting at that value; None adds no parameters.
  """

  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_scale_init: float | None = None

  @nn.compact
  def __call__(
    self, tokens, key_mask=None, deterministic: bool = True, context=None, context_mask=None, condition=None
  ):
    tokens = nn.with_logical_constraint(tokens, RESIDUAL_AXES)
    drop_path = StochasticDepth(self.stochastic_depth)
    dropout = nn.Dropout(self.dropout_rate)
    width = tokens.shape[-1]

    def residual(tokens, branch, sublayer):
      if self.layer_scale_init is not None:
        layer_scale = self.param(
          f"{sublayer}_layer_scale",
          nn.with_logical_partitioning(nn.initializers.constant(self.layer_scale_init), ("embed",)),
          (width,),
        )
        branch = branch * layer_scale.astype(branch.dtype)
      return tokens + drop_path(dropout(branch, deterministic=deterministic), deterministic)

    if context is not None:
      normed = layer_norm(self.dtype, name="cross_attention_norm")(tokens)
      tokens = residual(
        tokens,
        MultiHeadAttention(self.num_heads, self.dtype, self.dropout_rate, name="cross_attention")(
          normed, context, context_mask, deterministic
        ),
        "cross_attention",
      )
    if condition is None:
      normed = layer_norm(self.dtype, name="attention_norm")(tokens)
      attended = MultiHeadAttention(self.num_heads, self.dtype, self.dropout_rate, name="attention")(
        normed, normed, key_mask, deterministic
      )
      tokens = residual(tokens, attended, "attention")
      normed = layer_norm(self.dtype, name="mlp_norm")(tokens)
      transformed = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(normed, deterministic)
      return nn.with_logical_constraint(residual(tokens, transformed, "mlp"), RESIDUAL_AXES)

    shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = modulation(
      condition, 6, width, self.dtype, "modulation"
    )
    normed = layer_norm(self.dtype, name="attention_norm", affine=False)(tokens) * (1 + scale_sa) + shift_sa
    attended = MultiHeadAttention(self.num_heads, self.dtype, self.dropout_rate, name="attention")(
      normed, normed, key_mask, deterministic
    )
    tokens = residual(tokens, gate_sa * attended, "attention")
    normed = layer_norm(self.dtype, name="mlp_norm", affine=False)(tokens) * (1 + scale_mlp) + shift_mlp
    transformed = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(normed, deterministic)
    return nn.with_logical_constraint(residual(tokens, gate_mlp * transformed, "mlp"), RESIDUAL_AXES)


class TransformerEncoder(nn.Module):
  """A stack of pre-norm blocks and a final LayerNorm: (B, L, D) → (B, L, D).

  `context`/`context_mask` and `condition` are passed to every block (see TransformerBlock, also for
  `layer_scale_init`); with a `condition` the final LayerNorm is adaLN-modulated too (shift and scale, zero at
  init).
  """

  num_layers: int
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_scale_init: float | None = None

  @nn.compact
  def __call__(
    self, tokens, key_mask=None, deterministic: bool = True, context=None, context_mask=None, condition=None
  ):
    for index in range(self.num_layers):
      tokens = TransformerBlock(
        self.num_heads,
        self.mlp_dim,
        self.dtype,
        self.dropout_rate,
        self.stochastic_depth,
        self.layer_scale_init,
        name=f"block_{index}",
      )(tokens, key_mask, deterministic, context, context_mask, condition)
    if condition is None:
      return layer_norm(self.dtype, name="final_norm")(tokens)
    shift, scale = modulation(condition, 2, tokens.shape[-1], self.dtype, "final_modulation")
    return layer_norm(self.dtype, name="final_norm", affine=False)(tokens) * (1 + scale) + shift
