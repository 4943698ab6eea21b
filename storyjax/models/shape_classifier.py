"""A small convolutional classifier with BatchNorm: the model of the `shapes` example task.

Its BatchNorm statistics are a mutable collection (`batch_stats`), the case the trainer carries next to the
parameters; apply it with `mutable=["batch_stats"]` when training.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.conv import conv_stages
from storyjax.layers.mlp import dense

Dtype = Any


class ShapeClassifier(nn.Module):
  """images (B, S, S, 3) → class logits (B, num_classes) float32.

  `num_stages` stages of 3×3 conv → BatchNorm → ReLU (layers.conv.conv_stages), each but the first halving the
  resolution, then a mean over positions and a linear classifier.
  """

  num_classes: int
  width: int = 16
  num_stages: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    features = conv_stages(images.astype(self.dtype), self.width, self.num_stages, train, dtype=self.dtype)
    pooled = features.mean(axis=(1, 2))
    return dense(self.num_classes, ("conv_out", "io"), self.dtype, name="classifier")(pooled).astype(jnp.float32)
