"""Encoders of 1-D physiological signals (ADAPT's ResnetTS) and of log-mel audio (BYOL-A's AudioNTT2020), channels-last.

Both end in a pooling over time, so a model trained on windows also encodes whole recordings (ADAPT tests that
way). BatchNorm statistics live in the `batch_stats` collection: apply with mutable=["batch_stats"] when `train`.
Their convs carry no bias before BatchNorm (layers.conv.ConvBlock); a published conv bias b folds into the running
mean (mean − b) when weights are ported.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.conv import ACTIVATION_AXES, ConvBlock
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import dense

Dtype = Any


class TimeSeriesBlock(nn.Module):
  """Fawaz-style residual block (B, T, C) → (B, T, features): one ConvBlock ("SAME" conv → BN) per kernel size,
  ReLU after all but the last; plus the input through a 1-tap conv → BN (always, as ADAPT codes it); ReLU."""

  features: int
  kernel_sizes: Sequence[int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    residual = inputs
    for index, kernel in enumerate(self.kernel_sizes):
      activation = "relu" if index < len(self.kernel_sizes) - 1 else "none"
      residual = ConvBlock(self.features, (kernel,), "batch", activation, dtype=self.dtype, name=f"conv_{index}")(
        residual, train
      )
    shortcut = ConvBlock(self.features, (1,), "batch", "none", dtype=self.dtype, name="shortcut")(inputs, train)
    return nn.with_logical_constraint(nn.relu(residual + shortcut), ACTIVATION_AXES[1])


class TimeSeriesResNet(nn.Module):
  """ADAPT's ResnetTS: signals (B, T) or (B, T, C) → features (B, channels[-1]) float32 (32-d by default).

  One TimeSeriesBlock per entry of `channels`, each with convs of `kernel_sizes` taps (published for 500 Hz
  signals; scale them with the sampling rate), then the mean over time.
  """

  channels: Sequence[int] = (16, 32, 32)
  kernel_sizes: Sequence[int] = (200, 101, 51)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, signals, train: bool = False):
    if signals.ndim == 2:
      signals = signals[..., None]
    if signals.ndim != 3:
      raise ValueError(f"TimeSeriesResNet expects signals (B, T) or (B, T, C), got shape {signals.shape}.")
    features = signals.astype(self.dtype)
    for block, channels in enumerate(self.channels):
      features = TimeSeriesBlock(channels, self.kernel_sizes, self.dtype, name=f"block_{block}")(features, train)
    return features.astype(jnp.float32).mean(axis=1)


class LogMelCNN(nn.Module):
  """BYOL-A's AudioNTT2020: log-mels (B, num_mels, frames) → features (B, out_dim) float32.

  The spectrogram is an image (B, M, F, 1): `num_blocks` × [3×3 conv → BN → ReLU (a ConvBlock) → 2×2 max-pool]
  give (B, M/2ⁿ, F/2ⁿ, width) (sizes floored); each time step's (M/2ⁿ · width) values, mel-major as in the
  original's (mel, channel) flattening, go through Dense → ReLU → dropout → Dense → ReLU, (B, F/2ⁿ, out_dim);
  the result is the max plus the mean over time. `train` switches BN to batch statistics and turns dropout on
  (then the "dropout" rng is needed).
  """

  width: int = 64
  num_blocks: int = 3
  out_dim: int = 512
  dropout_rate: float = 0.3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, log_mels, train: bool = False):
    if log_mels.ndim != 3:
      raise ValueError(f"LogMelCNN expects log-mels (B, num_mels, frames), got shape {log_mels.shape}.")
    if min(log_mels.shape[1:]) < 2**self.num_blocks:
      raise ValueError(
        f"LogMelCNN's {self.num_blocks} 2×2 poolings need at least {2**self.num_blocks} mel bins and frames, "
        f"got (num_mels, frames) = {log_mels.shape[1:]}."
      )
    features = log_mels.astype(self.dtype)[..., None]
    for block in range(self.num_blocks):
      features = ConvBlock(self.width, (3, 3), "batch", dtype=self.dtype, name=f"block_{block}")(features, train)
      features = nn.max_pool(features, (2, 2), strides=(2, 2))
    batch, mels, frames, channels = features.shape
    frame_features = features.transpose(0, 2, 1, 3).reshape(batch, frames, mels * channels)
    hidden = nn.relu(dense(self.out_dim, ("embed", "mlp"), self.dtype, name="fc_0")(frame_features))
    hidden = Dropout(self.dropout_rate)(hidden, deterministic=not train)
    frame_features = nn.relu(dense(self.out_dim, ("mlp", "embed"), self.dtype, name="fc_1")(hidden))
    frame_features = frame_features.astype(jnp.float32)
    return frame_features.max(axis=1) + frame_features.mean(axis=1)
