"""FunnyNet-W (thesis §2.2): is a clip funny? Frozen audio, vision and text features fused by Cross-Attention Fusion.

As coded by the authors (facts funnynet-medical-sfd (a), `network.py`):
- projections to `width` (512): audio GatedDense(1024) → GatedDense(512) → LayerNorm; vision GatedDense(512) →
  GatedDense(512) → LayerNorm; text tokens (L, Dt) → LSTM(256) → flatten (L·256) → dropout 0.5 → GatedDense(512) →
  GatedDense(512) → LayerNorm. GatedDense = GELU(x·W₁ + b₁) ⊙ (x·W₂ + b₂).
- CAF: each projected feature is split into `num_tokens` (16) tokens of width/num_tokens (32). The query is the stack
  of all present modalities' L2-normalised tokens (M·16, 32), in MODALITIES order; each modality's un-normalised
  tokens are the keys and values of its own cross-attention, the M results are summed, then one self-attention with
  a residual. Attention is single-head q/k/v Linear layers with no output projection and, as coded, no 1/√d
  (`scaled_attention=True`: the thesis' softmax(QKᵀ/√d)). The M chunks of 16 tokens are flattened and summed (the
  thesis says averaged).
- classifier GatedDense(2) → logits.
Any non-empty subset of the modalities runs the same way (M = 1, 2 or 3), for the single-modality and pair models.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.data.funny import MODALITIES
from storyjax.layers.attention import MultiHeadAttention
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import GatedDense, layer_norm

Dtype = Any


def _unit_tokens(tokens):
  """(..., d) rows scaled to unit length, as torch's F.normalize (ε 1e-12)."""
  return tokens / jnp.maximum(jnp.linalg.norm(tokens, axis=-1, keepdims=True), 1e-12)


class CrossAttentionFusion(nn.Module):
  """{modality: (B, W)} (W = num_tokens·d, in MODALITIES order) → fused (B, W)."""

  num_tokens: int = 16
  scaled_attention: bool = False
  dtype: Dtype = jnp.float32

  def _attention(self, name: str) -> MultiHeadAttention:
    scale = None if self.scaled_attention else 1.0
    return MultiHeadAttention(1, self.dtype, logit_scale=scale, output_projection=False, name=name)

  @nn.compact
  def __call__(self, features: dict):
    batch, width = next(iter(features.values())).shape
    if width % self.num_tokens:
      raise ValueError(f"feature width {width} is not divisible by num_tokens {self.num_tokens}")
    tokens = {name: feature.reshape(batch, self.num_tokens, -1) for name, feature in features.items()}
    stack = jnp.concatenate([_unit_tokens(token) for token in tokens.values()], axis=1)  # (B, M·n, d)
    fused = sum(self._attention(f"cross_{name}")(stack, token) for name, token in tokens.items())
    fused = fused + self._attention("self")(fused, fused)
    return fused.reshape(batch, len(tokens), width).sum(axis=1)


class FunnyNet(nn.Module):
  """Clips {"audio" (B, Da), "vision" (B, Dv), "text" (B, L, Dt)} → (logits (B, 2), projected {modality: (B, W)}).

  Only `modalities` are read (and must be given).
  """

  modalities: tuple[str, ...] = MODALITIES
  width: int = 512
  audio_hidden: int = 1024
  lstm_width: int = 256
  num_tokens: int = 16
  text_dropout: float = 0.5
  scaled_attention: bool = False
  dtype: Dtype = jnp.float32

  def _projection(self, name: str, inputs, deterministic: bool):
    if name == "text":
      hidden = nn.RNN(nn.OptimizedLSTMCell(self.lstm_width, dtype=self.dtype, name="text_lstm"))(inputs)
      inputs = Dropout(self.text_dropout)(hidden.reshape(hidden.shape[0], -1), deterministic=deterministic)
    hidden_width = self.audio_hidden if name == "audio" else self.width
    hidden = GatedDense(hidden_width, self.dtype, ("io", "mlp"), name=f"{name}_hidden")(inputs)
    projected = GatedDense(self.width, self.dtype, ("mlp", "embed"), name=f"{name}_out")(hidden)
    return layer_norm(self.dtype, name=f"{name}_norm")(projected)

  @nn.compact
  def __call__(self, clips: dict, deterministic: bool = True):
    projected = {name: self._projection(name, clips[name], deterministic) for name in self.modalities}
    fused = CrossAttentionFusion(self.num_tokens, self.scaled_attention, self.dtype, name="fusion")(projected)
    logits = GatedDense(2, self.dtype, ("embed", "io"), name="classifier")(fused)
    return logits.astype(jnp.float32), projected
