"""CosEmb stage 1's network (facts funnynet-medical-sfd (b)): the 3-D ResNet-18 encoder and its projection head,
trained with the cosine-embedding loss on volume pairs (storyjax/tasks/cosemb_pretrain.py)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.resnet3d import ProjectionHead, ResNet3D

Dtype = Any


class ContrastiveVolumeEncoder(nn.Module):
  """volumes (B, S, S, S, 1) → embeddings (B, out_dim) through ResNet3D and the MLP head; `features` stops before
  the head ((B, 8·width), the published fc = Identity used for the exam features)."""

  width: int = 64
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  hidden_dim: int = 512
  out_dim: int = 256
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  def setup(self):
    self.encoder = ResNet3D(self.width, tuple(self.stage_sizes), self.dtype)
    self.head = ProjectionHead(self.hidden_dim, self.out_dim, self.dropout_rate, self.dtype)

  def features(self, volumes, train: bool = False):
    return self.encoder(volumes, train)

  def __call__(self, volumes, train: bool = False):
    return self.head(self.encoder(volumes, train), deterministic=not train)
