"""Pre-norm transformer blocks shared by every sequence model.

One block serves three conditioning styles: plain self-attention, an extra cross-attention sub-layer to a
context sequence, and adaLN-zero modulation by a pooled condition vector (DiT).

BlockOptions says how the blocks of one model compute and regularise, without changing their parameters.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.layers.attention import MultiHeadAttention
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import MlpBlock, dense, layer_norm

Dtype = Any
RESIDUAL_AXES = ("activation_batch", "activation_length", "activation_embed")
# Rematerialisation of each block in the backward pass: "block" keeps only each block's input and recomputes
# the rest; "dots" keeps the matmul outputs without batch dimensions (the projections) and recomputes the
# attention and the elementwise ops.
REMAT_POLICIES = {
  "none": None,
  "block": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class BlockOptions:
  """Settings shared by every block of a model that leave its parameters unchanged.

  attention: one of ATTENTION_IMPLEMENTATIONS (storyjax/layers/attention.py; config `model.attention`);
  attention_dropout_rate: dropout on attention probabilities ("xla" and "cpu");
  residual_dropout: whether the blocks' `dropout_rate` also drops each residual branch (it always drops the
    MLP's hidden layer);
  remat: one of REMAT_POLICIES (config `model.remat`).
  """

  attention: str = "xla"
  attention_dropout_rate: float = 0.0
  residual_dropout: bool = True
  remat: str = "none"


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
  `self_attention=False` leaves only the cross-attention and the MLP (RIN's read and write; a `context` is
  then required); `attention_dim` is the attentions' inner width (default D).
  With `layer_scale_init` set, LayerScale (CaiT) multiplies each residual branch by a learned (D,) vector
  `<sub-layer>_layer_scale` starting at that value; None adds no parameters.
  `dropout_rate` drops the MLP's hidden layer and, unless options.residual_dropout is False, each residual
  branch; `options` also selects the attention implementation and its dropout (BlockOptions).
  """

  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_scale_init: float | None = None
  options: BlockOptions = BlockOptions()
  self_attention: bool = True
  attention_dim: int | None = None

  @nn.compact
  def __call__(
    self, tokens, key_mask=None, deterministic: bool = True, context=None, context_mask=None, condition=None
  ):
    if not self.self_attention and (context is None or condition is not None):
      raise ValueError("a block without self-attention needs a `context` and takes no adaLN `condition`")
    tokens = nn.with_logical_constraint(tokens, RESIDUAL_AXES)
    drop_path = StochasticDepth(self.stochastic_depth)
    dropout = Dropout(self.dropout_rate if self.options.residual_dropout else 0.0)
    width = tokens.shape[-1]
    attention = lambda name: MultiHeadAttention(
      self.num_heads,
      self.dtype,
      self.options.attention_dropout_rate,
      self.options.attention,
      self.attention_dim,
      name=name,
    )

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
        attention("cross_attention")(normed, context, context_mask, deterministic),
        "cross_attention",
      )
    if condition is None:
      if self.self_attention:
        normed = layer_norm(self.dtype, name="attention_norm")(tokens)
        attended = attention("attention")(normed, normed, key_mask, deterministic)
        tokens = residual(tokens, attended, "attention")
      normed = layer_norm(self.dtype, name="mlp_norm")(tokens)
      transformed = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(normed, deterministic)
      return nn.with_logical_constraint(residual(tokens, transformed, "mlp"), RESIDUAL_AXES)

    shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = modulation(
      condition, 6, width, self.dtype, "modulation"
    )
    normed = layer_norm(self.dtype, name="attention_norm", affine=False)(tokens) * (1 + scale_sa) + shift_sa
    attended = attention("attention")(normed, normed, key_mask, deterministic)
    tokens = residual(tokens, gate_sa * attended, "attention")
    normed = layer_norm(self.dtype, name="mlp_norm", affine=False)(tokens) * (1 + scale_mlp) + shift_mlp
    transformed = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, name="mlp")(normed, deterministic)
    return nn.with_logical_constraint(residual(tokens, gate_mlp * transformed, "mlp"), RESIDUAL_AXES)


class TransformerEncoder(nn.Module):
  """A stack of pre-norm blocks and a final LayerNorm: (B, L, D) → (B, L, D).

  `context`/`context_mask` and `condition` are passed to every block (see TransformerBlock, also for
  `layer_scale_init` and `options`); with a `condition` the final LayerNorm is adaLN-modulated too (shift and
  scale, zero at init).
  """

  num_layers: int
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  layer_scale_init: float | None = None
  options: BlockOptions = BlockOptions()

  @nn.compact
  def __call__(
    self, tokens, key_mask=None, deterministic: bool = True, context=None, context_mask=None, condition=None
  ):
    remat = self.options.remat
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat={remat!r}; choose one of {tuple(REMAT_POLICIES)}")
    block = TransformerBlock
    if remat != "none":  # argument 3 (counting self) is `deterministic`, a Python bool
      block = nn.remat(TransformerBlock, policy=REMAT_POLICIES[remat], static_argnums=(3,))
    for index in range(self.num_layers):
      tokens = block(
        self.num_heads,
        self.mlp_dim,
        self.dtype,
        self.dropout_rate,
        self.stochastic_depth,
        self.layer_scale_init,
        self.options,
        name=f"block_{index}",
      )(tokens, key_mask, deterministic, context, context_mask, condition)
    if condition is None:
      return layer_norm(self.dtype, name="final_norm")(tokens)
    shift, scale = modulation(condition, 2, tokens.shape[-1], self.dtype, "final_modulation")
    return layer_norm(self.dtype, name="final_norm", affine=False)(tokens) * (1 + scale) + shift
