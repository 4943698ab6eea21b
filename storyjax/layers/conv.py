"""Channels-last 1-D / 2-D / 3-D convolutions with logical axis names, and the conv → norm → activation block.

3-D convolutions run as one 2-D convolution over stacked frames on CPU (`Conv3D`): XLA:CPU's native 3-D convolution
is 5–15× slower forward and 25–85× slower backward than the same arithmetic as a 2-D convolution (measured on
LAEO-Net++'s layers, 2 cores).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
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


CONV3D_IMPLEMENTATIONS = ("auto", "xla", "frames")


class Conv3D(nn.Module):
  """A 3-D convolution (B, T, H, W, C) → (B, T', H', W', features) with nn.Conv's parameters ("kernel" (kT, kH, kW,
  C, features), "bias") and padding conventions.

  implementation "xla": lax's 3-D convolution; "frames": for each output frame, the kT input frames it reads are
  stacked along channels and one 2-D convolution with the kernel reshaped to (kH, kW, kT·C, features) runs over
  all (B·T') of them — the same sums, kT× the input in memory; "auto": "frames" on CPU, "xla" elsewhere.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | Sequence[tuple[int, int]] = "SAME"
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  implementation: str = "auto"

  @nn.compact
  def __call__(self, inputs):
    if inputs.ndim != 5:
      raise ValueError(f"Conv3D expects (B, T, H, W, C) inputs, got shape {inputs.shape}")
    if self.implementation not in CONV3D_IMPLEMENTATIONS:
      raise ValueError(f"Conv3D implementation {self.implementation!r}; choose one of {CONV3D_IMPLEMENTATIONS}")
    kernel_size, strides = tuple(self.kernel_size), tuple(self.strides or (1, 1, 1))
    kernel = self.param("kernel", self.kernel_init, (*kernel_size, inputs.shape[-1], self.features), jnp.float32)
    inputs, kernel = inputs.astype(self.dtype), kernel.astype(self.dtype)
    if isinstance(self.padding, str):
      padding = jax.lax.padtype_to_pads(inputs.shape[1:4], kernel_size, strides, self.padding)
    else:
      padding = [tuple(pair) for pair in self.padding]
    implementation = self.implementation
    if implementation == "auto":
      implementation = "frames" if jax.default_backend() == "cpu" else "xla"
    if implementation == "xla":
      outputs = jax.lax.conv_general_dilated(
        inputs, kernel, strides, padding, dimension_numbers=("NTHWC", "THWIO", "NTHWC")
      )  # fmt: skip
    else:
      outputs = _conv3d_as_frames(inputs, kernel, strides, padding)
    if self.use_bias:
      outputs = outputs + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)
    return outputs


def _conv3d_as_frames(inputs, kernel, strides, padding):
  """Conv3D's "frames" implementation (its docstring); inputs (B, T, H, W, C), kernel (kT, kH, kW, C, O)."""
  (time_low, time_high), spatial_padding = padding[0], padding[1:]
  inputs = jnp.pad(inputs, ((0, 0), (time_low, time_high), (0, 0), (0, 0), (0, 0)))
  batch, frames, height, width, channels = inputs.shape
  taps, time_stride = kernel.shape[0], strides[0]
  out_frames = (frames - taps) // time_stride + 1
  if out_frames < 1:
    raise ValueError(f"Conv3D: {frames} (padded) frames are fewer than the kernel's {taps}")
  last = time_stride * (out_frames - 1) + 1
  stacked = jnp.concatenate([inputs[:, tap : tap + last : time_stride] for tap in range(taps)], axis=-1)
  stacked = stacked.reshape(batch * out_frames, height, width, taps * channels)
  kernel_2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(*kernel.shape[1:3], taps * channels, kernel.shape[-1])
  outputs = jax.lax.conv_general_dilated(
    stacked, kernel_2d, strides[1:], spatial_padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return outputs.reshape(batch, out_frames, *outputs.shape[1:])


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
) -> nn.Module:
  """A channels-last convolution, 1-, 2- or 3-D by len(kernel_size): (B, T, C), (B, H, W, C) or (B, T, H, W, C) →
  (..., features); nn.Conv, or Conv3D for 3-D kernels (same parameters, faster on CPU).

  The kernel (*kernel_size, C, features) carries logical axes KERNEL_AXES + `axes` = (input, output channels).
  """
  kernel_size = tuple(kernel_size)
  if len(kernel_size) not in KERNEL_AXES:
    raise ValueError(f"conv kernel_size {kernel_size} must have 1 (T,), 2 (H, W) or 3 (T, H, W) entries.")
  module = Conv3D if len(kernel_size) == 3 else nn.Conv
  return module(
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
