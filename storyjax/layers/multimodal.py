"""The masked multimodal transformer: one token per modality (or per exam) with a presence mask, and a CLS token.

A missing modality or exam is masked as a key, so its values never reach the CLS output. CosEmb (learned
positions, a zeros-initialised CLS, ReLU feed-forward as wide as the model) and ADAPT (no positions, a
N(0, D⁻¹)-initialised CLS, GELU feed-forward, bias-free q/k/v) are both this module with different options
(storyjax/models/multimodal.py). Blocks are post-norm, as both models use PyTorch's encoder layer.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.attention import MASKINGS, MultiHeadAttention
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import ACTIVATIONS, MlpBlock
from storyjax.layers.norms import make_norm
from storyjax.layers.transformer import RESIDUAL_AXES

Dtype = Any
CLS_INITS = ("zeros", "normal")


class PostNormBlock(nn.Module):
  """PyTorch's TransformerEncoderLayer (post-LN) on tokens (B, L, D) with presence (B, L):
  x = LN(x + drop(SA(x))); x = LN(x + drop(FFN(x))), FFN = Dense(mlp_dim) → activation → drop → Dense(D).

  `masking` is the attention's (MASKINGS: "key" = −∞ logits for absent keys; "adapt_code" = ADAPT's code);
  LayerNorm eps 1e-5 as torch's.
  """

  num_heads: int
  mlp_dim: int
  activation: str = "relu"
  dropout_rate: float = 0.0
  masking: str = "key"
  qkv_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, present, deterministic: bool = True):
    tokens = nn.with_logical_constraint(tokens, RESIDUAL_AXES)
    dropout = Dropout(self.dropout_rate)
    attended = MultiHeadAttention(
      self.num_heads, self.dtype, masking=self.masking, use_bias=self.qkv_bias, name="attention"
    )(tokens, tokens, present, deterministic)
    tokens = make_norm("layer", self.dtype, "attention_norm", epsilon=1e-5)(
      tokens + dropout(attended, deterministic=deterministic)
    )
    transformed = MlpBlock(self.mlp_dim, self.dtype, self.dropout_rate, self.activation, name="mlp")(
      tokens, deterministic
    )
    tokens = make_norm("layer", self.dtype, "mlp_norm", epsilon=1e-5)(
      tokens + dropout(transformed, deterministic=deterministic)
    )
    return nn.with_logical_constraint(tokens, RESIDUAL_AXES)


class MaskedModalityTransformer(nn.Module):
  """Tokens (B, M, D) of M modalities or exams and presence (B, M) bool → (CLS output (B, D), tokens (B, M, D)).

  A learned CLS token (`cls_init`: one of CLS_INITS, "normal" = N(0, 1)·D^-½) is prepended and always present;
  `learned_positions` adds a (M + 1, D) table (xavier normal) followed by dropout. Absent tokens are masked as
  keys in every block: with "key" masking the CLS output is bitwise independent of their values.
  """

  num_layers: int
  num_heads: int
  mlp_dim: int
  activation: str = "relu"
  dropout_rate: float = 0.0
  masking: str = "key"
  qkv_bias: bool = True
  learned_positions: bool = False
  cls_init: str = "zeros"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens, present, deterministic: bool = True):
    if self.cls_init not in CLS_INITS:
      raise ValueError(f"cls_init={self.cls_init!r}; choose one of {CLS_INITS}")
    if self.masking not in MASKINGS or self.activation not in ACTIVATIONS:
      raise ValueError(
        f"masking={self.masking!r}, activation={self.activation!r}: choose from {MASKINGS} and {tuple(ACTIVATIONS)}"
      )
    if tokens.ndim != 3 or present.shape != tokens.shape[:2]:
      raise ValueError(f"tokens (B, M, D) and present (B, M) expected, got {tokens.shape} and {present.shape}")
    batch, _, width = tokens.shape
    cls_init = nn.initializers.zeros if self.cls_init == "zeros" else nn.initializers.normal(width**-0.5)
    cls = self.param("cls", nn.with_logical_partitioning(cls_init, ("embed",)), (width,))
    tokens = jnp.concatenate([jnp.broadcast_to(cls.astype(tokens.dtype), (batch, 1, width)), tokens], axis=1)
    present = jnp.concatenate([jnp.ones((batch, 1), bool), present.astype(bool)], axis=1)
    if self.learned_positions:
      positions = self.param(
        "position_embedding",
        nn.with_logical_partitioning(nn.initializers.xavier_normal(), ("length", "embed")),
        tokens.shape[1:],
      )
      tokens = Dropout(self.dropout_rate)(tokens + positions.astype(tokens.dtype), deterministic=deterministic)
    for index in range(self.num_layers):
      tokens = PostNormBlock(
        self.num_heads,
        self.mlp_dim,
        self.activation,
        self.dropout_rate,
        self.masking,
        self.qkv_bias,
        self.dtype,
        name=f"block_{index}",
      )(tokens, present, deterministic)
    return tokens[:, 0], tokens[:, 1:]
