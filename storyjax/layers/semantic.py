"""Semantic attention layers (SCAM, thesis eq 3.1): tokens carry integer labels and attend only to their own label.

Facts: shared/spec/facts/laeo-scam.md B.1. `SemanticAttention` is the authors' MaskedAttention (Q, K, V and output
Linear layers with bias around `storyjax.kernels.semantic_attention`); `MaskedTransformer` their post-LN block
x = LN(attn(x, y) + x); x = LN(FFN(x) + x). Label maps are resized with `nearest_resize`, PyTorch's legacy nearest
rule, so that a feature map's labels are those the authors' F.interpolate(mode="nearest") gives.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from storyjax.kernels import semantic_attention
from storyjax.layers.attention import HEAD_AXES
from storyjax.layers.mlp import dense
from storyjax.layers.norms import make_norm

Dtype = Any
TRANSFORMER_NORMS = ("joint", "token")
# PyTorch's default Linear/Conv2d weight init, U(±1/√fan_in) (kaiming_uniform with a = √5), which SCAM keeps
# (init_weight(change_init=False) is a no-op, B.4); biases start at zero here (torch draws them like the weights).
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
TORCH_NORM_EPSILON = 1e-5  # nn.LayerNorm / nn.InstanceNorm2d


@dataclasses.dataclass(frozen=True)
class SemanticOptions:
  """How every semantic attention of a model computes.

  num_heads; inner_dim: the Q/K/V width H·Dh (None: the query width); mask_value: the logit of a masked pair after
  the 1/√Dh scaling (−1e4 as coded, −1e9 in the thesis); implementation: "xla", "pallas" or "auto"
  (storyjax/kernels); semantic_masks: False gives every token the same label, i.e. plain attention (the baseline)
  with the same parameters; norm: the MaskedTransformer's LayerNorm, "joint" over (tokens, channels) with an (N, D)
  affine as coded, or "token" over channels only.
  """

  num_heads: int = 1
  inner_dim: int | None = None
  mask_value: float = -1e4
  implementation: str = "xla"
  semantic_masks: bool = True
  norm: str = "joint"


def nearest_resize(array, size: tuple[int, int]):
  """(B, H, W, ...) → (B, h, w, ...): output pixel (i, j) takes input pixel (⌊i·H/h⌋, ⌊j·W/w⌋) (torch "nearest")."""
  height, width = array.shape[1:3]
  rows = (np.arange(size[0]) * height) // size[0]  # static indices: numpy, so numpy inputs index too
  columns = (np.arange(size[1]) * width) // size[1]
  return jnp.asarray(array)[:, rows][:, :, columns]


def latent_labels(num_labels: int, latents_per_label: int):
  """(N_lat,) int32 label of each latent, N_lat = num_labels·latents_per_label: latent i belongs to i // k (B.2)."""
  return jnp.arange(num_labels * latents_per_label, dtype=jnp.int32) // latents_per_label


class JointLayerNorm(nn.Module):
  """torch's LayerNorm((N, D)): (B, N, D) normalised over tokens and channels together, affine of shape (N, D)."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens):
    shape = tokens.shape[1:]
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("length", "embed")), shape)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("length", "embed")), shape)
    values = tokens.astype(jnp.float32)
    mean = values.mean(axis=(1, 2), keepdims=True)
    variance = jnp.square(values - mean).mean(axis=(1, 2), keepdims=True)
    normalised = (values - mean) * jnp.reciprocal(jnp.sqrt(variance + TORCH_NORM_EPSILON))
    return (normalised * scale + bias).astype(self.dtype)


class SemanticAttention(nn.Module):
  """MaskedAttention (B.1): queries (B, Nq, Dq) attend context (B, Nk, Dk) of the same label → (B, Nq, Dq).

  query_labels (B, Nq), context_labels (B, Nk) int32. softmax(where(same label, QKᵀ/√Dh, mask_value))·V, then the
  output Linear; a query whose label no context token has attends uniformly to all of them.
  """

  options: SemanticOptions = SemanticOptions()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, queries, context, query_labels, context_labels):
    width = self.options.inner_dim or queries.shape[-1]
    num_heads = self.options.num_heads
    if width % num_heads:
      raise ValueError(f"semantic attention width {width} is not divisible by num_heads {num_heads}")

    def project(name, inputs):  # (B, L, D) → (B, L, H, Dh)
      projected = dense(width, ("embed", "heads"), self.dtype, name, TORCH_DEFAULT_INIT)(inputs)
      return nn.with_logical_constraint(
        projected.reshape(inputs.shape[:-1] + (num_heads, width // num_heads)), HEAD_AXES
      )

    if not self.options.semantic_masks:
      query_labels, context_labels = jnp.zeros_like(query_labels), jnp.zeros_like(context_labels)
    attended = semantic_attention(
      project("query", queries),
      project("key", context),
      project("value", context),
      query_labels.astype(jnp.int32),
      context_labels.astype(jnp.int32),
      mask_value=self.options.mask_value,
      implementation=self.options.implementation,
    )
    attended = attended.reshape(attended.shape[:-2] + (width,))
    return dense(queries.shape[-1], ("heads", "embed"), self.dtype, "out", TORCH_DEFAULT_INIT)(attended)


class MaskedTransformer(nn.Module):
  """Post-LN block (B.1) of tokens (B, N, D) over context (B, Nk, Dk) with labels (B, N), (B, Nk) → (B, N, D).

  x = LN(SemanticAttention(x, context) + x); x = LN(FFN(x) + x), FFN = Linear(D, D) → LReLU 0.2 → Linear(D, D) →
  LReLU 0.2. options.norm "joint" (as coded) couples all N tokens through the LayerNorm statistics, so a token's
  output depends on tokens of other labels; "token" keeps every token's output a function of its own label's
  context alone.
  """

  options: SemanticOptions = SemanticOptions()
  dtype: Dtype = jnp.float32

  def _norm(self, name: str):
    if self.options.norm == "joint":
      return JointLayerNorm(self.dtype, name=name)
    return make_norm("layer", self.dtype, name, epsilon=TORCH_NORM_EPSILON)

  @nn.compact
  def __call__(self, tokens, context, token_labels, context_labels):
    if self.options.norm not in TRANSFORMER_NORMS:
      raise ValueError(f"MaskedTransformer norm {self.options.norm!r}; choose one of {TRANSFORMER_NORMS}")
    width = tokens.shape[-1]
    attended = SemanticAttention(self.options, self.dtype, name="attention")(
      tokens, context, token_labels, context_labels
    )
    tokens = self._norm("attention_norm")(attended + tokens)
    hidden = nn.leaky_relu(dense(width, ("embed", "mlp"), self.dtype, "fc1", TORCH_DEFAULT_INIT)(tokens), 0.2)
    hidden = nn.leaky_relu(dense(width, ("mlp", "embed"), self.dtype, "fc2", TORCH_DEFAULT_INIT)(hidden), 0.2)
    return self._norm("mlp_norm")(hidden + tokens)
