"""A small convolutional classifier with BatchNorm: the model of the `shapes` example task.

Its BatchNorm statistics are a mutable collection (`batch_stats`), the case the trainer carries next to the
parameters; apply it with `mutable=["batch_stats"]` when training.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.conv import ConvBlock
from storyjax.layers.mlp import dense

Dtype = Any


class ShapeClassifier(nn.Module):
  """images (B, S, S, 3) → class logits (B, num_classes) float32.

  `num_stages` stages of 3×3 conv → BatchNorm → ReLU (layers.conv.ConvBlock), each but the first halving the
  resolution, then a mean over positions and a linear classifier.
  """

  num_classes: int
  width: int = 16
  num_stages: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    features = images.astype(self.dtype)
    for stage in range(self.num_stages):
      features = ConvBlock(
        self.width * 2**stage,
        (3, 3),
        norm="batch",
        strides=(1, 1) if stage == 0 else (2, 2),
        dtype=self.dtype,
        name=f"stage_{stage}",
      )(features, train)
    pooled = features.mean(axis=(1, 2))
    return dense(self.num_classes, ("conv_out", "io"), self.dtype, name="classifier")(pooled).astype(jnp.float32)
