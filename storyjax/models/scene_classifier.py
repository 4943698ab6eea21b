"""A per-slot attribute classifier of procedural scenes: the judge of generated scene images.

It reads, for each quadrant slot of storyjax/data/images/scenes.py, whether an object is there and its colour,
shape and size; its pooled features are the space in which generated images are compared with real ones (FID).
BatchNorm statistics are a mutable collection (`batch_stats`): apply it with `mutable=["batch_stats"]` to train.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.conv import conv_stages
from storyjax.layers.mlp import dense

Dtype = Any
NUM_SLOTS = 4  # the image's quadrants, slot = 2·row + column


class SceneClassifier(nn.Module):
  """images (B, S, S, 3) → (logits, features), S a multiple of 2^num_stages.

  logits: {"present": (B, 4, 2), "colour": (B, 4, num_colours), "shape": (B, 4, num_shapes),
  "size": (B, 4, num_sizes)} float32, one linear head per attribute shared by the four slots.
  features: (B, 4·C) float32, the FID feature space: the last conv stage's activations (C = width·2^(num_stages−1)
  channels, after its BatchNorm and ReLU) averaged over each quadrant, concatenated in slot order. The heads read
  the same quadrant means, so the features hold what the judge sees of each slot.
  """

  num_colours: int
  num_shapes: int
  num_sizes: int
  width: int = 16
  num_stages: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[1] % 2**self.num_stages:
      raise ValueError(
        f"SceneClassifier with {self.num_stages} stages needs images (B, S, S, 3) with S a multiple of "
        f"{2**self.num_stages} (so each quadrant keeps whole cells of the last stage), got shape {images.shape}"
      )
    feature_map = conv_stages(images.astype(self.dtype), self.width, self.num_stages, train, dtype=self.dtype)
    batch, height, width, channels = feature_map.shape
    quadrants = feature_map.reshape(batch, 2, height // 2, 2, width // 2, channels).mean(axis=(2, 4))
    slot_features = quadrants.reshape(batch, NUM_SLOTS, channels)
    num_values = {"present": 2, "colour": self.num_colours, "shape": self.num_shapes, "size": self.num_sizes}
    logits = {
      name: dense(count, ("conv_out", "io"), self.dtype, name=f"{name}_head")(slot_features).astype(jnp.float32)
      for name, count in num_values.items()
    }
    return logits, slot_features.reshape(batch, NUM_SLOTS * channels).astype(jnp.float32)
