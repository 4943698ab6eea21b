"""Channels-last 2-D / 3-D convolutions with logical axis names, and the conv → norm → activation block."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.mlp import ACTIVATIONS
from storyjax.layers.norms import make_norm

Dtype = Any
# Kernel taps and activation axes by number of spatial dims: (T,) signals, (H, W) images, (T or D, H, W) clips
# and volumes.
KERNEL_AXES = {1: ("conv_width",), 2: ("conv_height", "conv_width"), 3: ("conv_depth", "conv_height", "conv_width")}
LAYOUTS = {1: "(B, T, C)", 2: "(B, H, W, C)", 3: "(B, T, H, W, C)"}
ACTIVATION_AXES = {
  1: ("activation_batch", "activation_length", "activation_channels"),
  2: ("activation_batch", "activation_height", "activation_width", "activation_channels"),
  3: ("activation_batch", "activation_depth", "activation_height", "activation_width", "activation_channels"),
}


def conv(
  features: int,
  kernel_size: Sequence[int],
  strides: Sequence[int] | None = None,
  padding: str | Sequence[tuple[int, int]] = "SAME",
  axes: tuple[str, str] = ("conv_in", "conv_out"),
  dtype: Dtype = jnp.float32,
  name: str | None = None,
  use_bias: bool = True,
  kernel_init=nn.initializers.lecun_normal(),
) -> nn.Conv:
  """A channels-last Conv, 1-, 2- or 3-D by len(kernel_size): (B, T, C), (B, H, W, C) or (B, T, H, W, C) →
  (..., features).

  The kernel (*kernel_size, C, features) carries logical axes KERNEL_AXES + `axes` = (input, output channels).
  """
  kernel_size = tuple(kernel_size)
  if len(kernel_size) not in KERNEL_AXES:
    raise ValueError(f"conv kernel_size {kernel_size} must have 1 (T,), 2 (H, W) or 3 (T, H, W) entries.")
  return nn.Conv(
    features,
    kernel_size,
    strides=None if strides is None else tuple(strides),
    padding=padding,
    use_bias=use_bias,
    dtype=dtype,
    name=name,
    kernel_init=nn.with_logical_partitioning(kernel_init, KERNEL_AXES[len(kernel_size)] + tuple(axes)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
  )


class ConvBlock(nn.Module):
  """conv ("SAME") → norm → activation on (B, H, W, C) or (B, T, H, W, C) → (B, H/s, W/s, features) etc.

  `norm` is a make_norm kind ("batch" needs mutable=["batch_stats"] when `train`), `activation` one of
  ACTIVATIONS; the conv has no bias before "batch". With `residual`, the input is added to the result, through
  a 1×1 strided conv ("shortcut") when the stride or channel count changes.
  """

  features: int
  kernel_size: Sequence[int]
  norm: str
  activation: str = "relu"
  strides: Sequence[int] | None = None
  residual: bool = False
  num_groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    spatial_dims = len(self.kernel_size)
    if inputs.ndim != spatial_dims + 2:
      raise ValueError(
        f"ConvBlock with kernel_size {tuple(self.kernel_size)} expects {LAYOUTS.get(spatial_dims)} inputs, "
        f"got shape {inputs.shape}"
      )
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"Unknown activation {self.activation!r}; choose one of {tuple(ACTIVATIONS)}.")
    strides = tuple(self.strides or (1,) * spatial_dims)
    axes = ACTIVATION_AXES[spatial_dims]
    # Batch norm subtracts each channel's mean, so a conv bias before it would be dead weight.
    features = conv(
      self.features, self.kernel_size, strides, dtype=self.dtype, name="conv", use_bias=self.norm != "batch"
    )(inputs)
    features = nn.with_logical_constraint(features, axes)
    features = make_norm(self.norm, self.dtype, "norm", axis_name="conv_out", num_groups=self.num_groups, train=train)(
      features
    )
    features = ACTIVATIONS[self.activation](features)
    if self.residual:
      shortcut = inputs
      if inputs.shape[-1] != self.features or any(stride != 1 for stride in strides):
        shortcut = conv(self.features, (1,) * spatial_dims, strides, dtype=self.dtype, name="shortcut")(inputs)
      features = features + shortcut
    return nn.with_logical_constraint(features, axes)


def conv_pyramid(inputs, width: int, num_stages: int, train: bool, dtype: Dtype = jnp.float32) -> list[jnp.ndarray]:
  """(B, H, W, C) → every stage's output, finest first, the i-th (B, H/2^i, W/2^i, width·2^i): n = `num_stages`
  ConvBlocks "stage_0".."stage_{n−1}" (3×3 conv → BatchNorm → ReLU), each but the first halving the resolution.

  A plain function so the blocks are named in the calling module (call it from a compact `__call__`).
  """
  features, stages = inputs, []
  for stage in range(num_stages):
    features = ConvBlock(
      width * 2**stage,
      (3, 3),
      norm="batch",
      strides=(1, 1) if stage == 0 else (2, 2),
      dtype=dtype,
      name=f"stage_{stage}",
    )(features, train)
    stages.append(features)
  return stages


def conv_stages(inputs, width: int, num_stages: int, train: bool, dtype: Dtype = jnp.float32) -> jnp.ndarray:
  """(B, H, W, C) → (B, H/2^(n−1), W/2^(n−1), width·2^(n−1)): the last stage of `conv_pyramid`."""
  return conv_pyramid(inputs, width, num_stages, train, dtype)[-1]
