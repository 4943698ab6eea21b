"""Non-overlapping patches: images (B, H, W, C) and clips/volumes (B, T, H, W, C) ↔ tokens (B, N, ·).

Tokens are in row-major grid order (the last spatial axis fastest); a patch's features are its pixels in
row-major order, channels fastest: the order of a (*patch, C, D) conv kernel reshaped to (prod(patch)·C, D).
"""

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.conv import conv

Dtype = Any
TOKEN_AXES = ("activation_batch", "activation_length", "activation_embed")


def patch_grid(spatial_shape: Sequence[int], patch_size: Sequence[int]) -> tuple[int, ...]:
  """Patches per spatial axis, e.g. (H, W), (p, p) → (H/p, W/p); ValueError unless each size divides."""
  spatial_shape, patch_size = tuple(spatial_shape), tuple(patch_size)
  if len(spatial_shape) != len(patch_size) or any(size % patch for size, patch in zip(spatial_shape, patch_size)):
    raise ValueError(
      f"spatial size {spatial_shape} is not divisible by patch size {patch_size}; "
      f"crop or pad the input to a multiple of the patch, or choose another patch size."
    )
  return tuple(size // patch for size, patch in zip(spatial_shape, patch_size))


def patchify(pixels, patch_size: Sequence[int]):
  """(B, *spatial, C) → (B, N, prod(patch_size)·C), N = prod(spatial / patch_size)."""
  batch, *spatial_shape, channels = pixels.shape
  grid = patch_grid(spatial_shape, patch_size)
  split = pixels.reshape((batch,) + sum(zip(grid, patch_size), ()) + (channels,))  # (B, g1, p1, g2, p2, …, C)
  dims = len(grid)
  order = (0,) + tuple(range(1, 2 * dims, 2)) + tuple(range(2, 2 * dims + 1, 2)) + (2 * dims + 1,)
  return split.transpose(order).reshape(batch, math.prod(grid), math.prod(patch_size) * channels)


def unpatchify(patches, spatial_shape: Sequence[int], patch_size: Sequence[int]):
  """(B, N, prod(patch_size)·C) → (B, *spatial_shape, C): the inverse of `patchify`."""
  grid, patch_size = patch_grid(spatial_shape, patch_size), tuple(patch_size)
  batch, num_patches, features = patches.shape
  if num_patches != math.prod(grid) or features % math.prod(patch_size):
    raise ValueError(
      f"patches {patches.shape} do not tile {tuple(spatial_shape)} with patch {patch_size}: "
      f"expected (B, {math.prod(grid)}, {math.prod(patch_size)}·C)"
    )
  channels = features // math.prod(patch_size)
  dims = len(grid)
  split = patches.reshape((batch,) + grid + patch_size + (channels,))  # (B, g1, g2, …, p1, p2, …, C)
  order = (0,) + sum(((1 + axis, 1 + dims + axis) for axis in range(dims)), ()) + (2 * dims + 1,)
  return split.transpose(order).reshape((batch,) + tuple(spatial_shape) + (channels,))


class PatchEmbedding(nn.Module):
  """(B, H, W, C) → (B, H/p·W/p, width), or (B, T, H, W, C) → (B, T/pt·H/p·W/p, width) for a 3-D patch.

  A conv with kernel = stride = `patch_size`, i.e. `patchify` then one Dense on each patch.
  """

  width: int
  patch_size: Sequence[int]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pixels):
    patch_size = tuple(self.patch_size)
    if pixels.ndim != len(patch_size) + 2:
      raise ValueError(
        f"PatchEmbedding with patch {patch_size} expects inputs with {len(patch_size)} spatial "
        f"axes (B, …, C), got shape {pixels.shape}"
      )
    patch_grid(pixels.shape[1:-1], patch_size)  # raises, where a VALID conv would silently drop the remainder
    tokens = conv(
      self.width, patch_size, patch_size, padding="VALID", axes=("io", "embed"), dtype=self.dtype, name="projection"
    )(pixels)
    return nn.with_logical_constraint(tokens.reshape(pixels.shape[0], -1, self.width), TOKEN_AXES)
