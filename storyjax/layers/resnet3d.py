"""Hara-style 3-D ResNet (as in CosEmb's MRI encoder) and CosEmb's projection head, channels-last.

Convolutions pad symmetrically by kernel // 2 like the published PyTorch model: "SAME" padding (ConvBlock's) puts
a stride-2 conv's single pad on the far side for even sizes, which shifts the sampled grid by one voxel.
BatchNorm statistics live in the `batch_stats` collection: apply with mutable=["batch_stats"] when `train`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.conv import ACTIVATION_AXES, conv
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import dense
from storyjax.layers.norms import make_norm

Dtype = Any


def _conv_norm(inputs, features: int, kernel: int, stride: Sequence[int], train: bool, dtype: Dtype, name: str):
  """(B, D, H, W, C) → (B, ⌊(D − 1)/s_D⌋ + 1, …, features): bias-free kernel³ conv (PyTorch padding kernel // 2)
  → BatchNorm, as modules `{name}_conv` and `{name}_norm` of the calling compact module."""
  features_out = conv(
    features,
    (kernel,) * 3,
    stride,
    padding=((kernel // 2, kernel // 2),) * 3,
    dtype=dtype,
    name=f"{name}_conv",
    use_bias=False,
  )(inputs)
  features_out = nn.with_logical_constraint(features_out, ACTIVATION_AXES[3])
  return make_norm("batch", dtype, f"{name}_norm", axis_name="conv_out", train=train)(features_out)


class BasicBlock3D(nn.Module):
  """ResNet basic block (B, D, H, W, C) → (B, D/s, H/s, W/s, features): two 3³ conv → BN (ReLU between),
  plus the input, through a 1×1×1 strided conv → BN ("type B") when the stride or channel count changes; ReLU."""

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    strides = (self.stride,) * 3
    residual = nn.relu(_conv_norm(inputs, self.features, 3, strides, train, self.dtype, "first"))
    residual = _conv_norm(residual, self.features, 3, (1, 1, 1), train, self.dtype, "second")
    shortcut = inputs
    if inputs.shape[-1] != self.features or self.stride != 1:
      shortcut = _conv_norm(inputs, self.features, 1, strides, train, self.dtype, "shortcut")
    return nn.with_logical_constraint(nn.relu(residual + shortcut), ACTIVATION_AXES[3])


class ResNet3D(nn.Module):
  """volumes (B, D, H, W, C) → features (B, 8·width) float32 (ResNet-18 by default; width 64 → 512-d).

  Stem: 7³ conv, stride (1, 2, 2) → BN → ReLU → 3³ max-pool, stride 2 (pad 1); then len(stage_sizes) stages of
  BasicBlock3D with width·2^i channels, each stage but the first starting with stride 2; then the mean over the
  remaining grid (the published AvgPool3d over all of it).
  """

  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  dtype: Dtype = jnp.float32

  @nn.compact
  def feature_grid(self, volumes, train: bool = False):
    """volumes (B, D, H, W, C) → the last stage's grid (B, D', H', W', width·2^(n−1)), before the pooling;
    (96, 144, 192) → (6, 5, 6) with four stages."""
    if volumes.ndim != 5:
      raise ValueError(f"ResNet3D expects volumes (B, D, H, W, C), got shape {volumes.shape}; add a channel axis.")
    features = nn.relu(_conv_norm(volumes.astype(self.dtype), self.width, 7, (1, 2, 2), train, self.dtype, "stem"))
    features = nn.max_pool(features, (3, 3, 3), strides=(2, 2, 2), padding=((1, 1),) * 3)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        features = BasicBlock3D(
          self.width * 2**stage,
          stride=2 if stage > 0 and block == 0 else 1,
          dtype=self.dtype,
          name=f"stage_{stage}_block_{block}",
        )(features, train)
    return features

  def __call__(self, volumes, train: bool = False):
    return self.feature_grid(volumes, train).astype(jnp.float32).mean(axis=(1, 2, 3))


class ProjectionHead(nn.Module):
  """CosEmb's head, features (B, F) → (B, out_dim) float32: Dense → dropout → ReLU → Dense → dropout."""

  hidden_dim: int = 512
  out_dim: int = 256
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, deterministic: bool = True):
    hidden = dense(self.hidden_dim, ("embed", "mlp"), self.dtype, name="hidden")(features)
    hidden = nn.relu(Dropout(self.dropout_rate)(hidden, deterministic=deterministic))
    projected = dense(self.out_dim, ("mlp", "embed"), self.dtype, name="out")(hidden)
    return Dropout(self.dropout_rate)(projected, deterministic=deterministic).astype(jnp.float32)
