"""The region probe: per-pixel colour and texture logits of segmented scenes, on a conv trunk whose stage feature
maps are SCAM's perceptual-loss features on the embedded data (storyjax/data/images/segmented.py).

A region's colour and texture are the argmax of the pixel logits averaged over the region (`region_means`).
BatchNorm statistics are a mutable collection (`batch_stats`): apply it with `mutable=["batch_stats"]` to train.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.layers.conv import ConvBlock, conv, conv_pyramid
from storyjax.layers.mlp import dense
from storyjax.layers.norms import make_norm

Dtype = Any


def region_patches(images, labels, patch_size: int):
  """images (B, S, S, C), labels (B, S, S) → (B, S, S, patch_size²·C): each pixel's patch_size × patch_size
  neighbourhood (row-major, channels last), every neighbour of another label or beyond the image replaced by the
  pixel itself, so a pixel sees the fine detail of its own region only (a belt a few pixels high included)."""
  radius, size = patch_size // 2, images.shape[1]
  padded_images = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)))
  padded_labels = jnp.pad(labels, ((0, 0), (radius, radius), (radius, radius)), constant_values=-1)
  neighbours = []
  for row in range(patch_size):
    for column in range(patch_size):
      same_region = padded_labels[:, row : row + size, column : column + size] == labels
      neighbour = padded_images[:, row : row + size, column : column + size]
      neighbours.append(jnp.where(same_region[..., None], neighbour, images))
  return jnp.concatenate(neighbours, axis=-1)


class RegionProbe(nn.Module):
  """images (B, S, S, 3) in [-1, 1], labels (B, S, S) int or None → (logits, features), S a multiple of
  2^(num_stages−1).

  features: the conv trunk's stage outputs (layers.conv.conv_pyramid, after BatchNorm and ReLU), finest first, the
  i-th (B, S/2^i, S/2^i, width·2^i) float32; they see the image only. logits (None when labels is None):
  {"colour": (B, S, S, num_colours), "texture": (B, S, S, num_textures)} float32 per pixel, from the sum of two
  1×1 projections to 2·width channels: of every stage (the context), and of the pixel's `region_patches` (the fine
  detail of its own region: textures have a period of a few pixels and regions can be as thin), then BatchNorm,
  ReLU, a 1×1 ConvBlock ("hidden") and one linear head per attribute.
  """

  num_colours: int
  num_textures: int
  width: int = 16
  num_stages: int = 3
  patch_size: int = 5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, labels=None, train: bool = False):
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[1] % 2 ** (self.num_stages - 1):
      raise ValueError(
        f"RegionProbe with {self.num_stages} stages needs images (B, S, S, 3) with S a multiple of "
        f"{2 ** (self.num_stages - 1)}, got shape {images.shape}"
      )
    images = images.astype(self.dtype)
    stages = conv_pyramid(images, self.width, self.num_stages, train, dtype=self.dtype)
    features = [stage.astype(jnp.float32) for stage in stages]
    if labels is None:
      return None, features
    if labels.shape != images.shape[:3]:
      raise ValueError(f"RegionProbe needs labels {images.shape[:3]} with images {images.shape}, got {labels.shape}")
    channels = 2 * self.width
    # A 1×1 conv of the upsampled concatenated stages, computed per stage at its own resolution (fewer FLOPs).
    projected = [
      conv(channels, (1, 1), dtype=self.dtype, name=f"context_{index}", use_bias=False)(stage)
      for index, stage in enumerate(stages)
    ]
    hidden = sum(
      jnp.repeat(jnp.repeat(stage, 2**index, axis=1), 2**index, axis=2) for index, stage in enumerate(projected)
    )
    patches = region_patches(images, labels, self.patch_size)
    hidden += conv(channels, (1, 1), dtype=self.dtype, name="patch", use_bias=False)(patches)
    hidden = nn.relu(make_norm("batch", self.dtype, "norm", axis_name="conv_out", train=train)(hidden))
    hidden = ConvBlock(channels, (1, 1), norm="batch", dtype=self.dtype, name="hidden")(hidden, train)
    num_values = {"colour": self.num_colours, "texture": self.num_textures}
    logits = {
      name: dense(count, ("conv_out", "io"), self.dtype, name=f"{name}_head")(hidden).astype(jnp.float32)
      for name, count in num_values.items()
    }
    return logits, features


def region_means(values, labels, num_labels: int):
  """values (B, S, S, K) averaged over each label's pixels, labels (B, S, S) int → ((B, L, K), counts (B, L)).

  A label without pixels gets zeros (and count 0). On pixel logits: the region's logits, whose argmax is its
  reading.
  """
  one_hot = jax.nn.one_hot(labels, num_labels, dtype=jnp.float32)
  counts = one_hot.sum(axis=(1, 2))
  sums = jnp.einsum("bhwl,bhwk->blk", one_hot, values.astype(jnp.float32))
  return sums / jnp.maximum(counts, 1)[..., None], counts
