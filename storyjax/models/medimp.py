"""MEDIMP's image–text network (thesis §4.1; facts funnynet-medical-sfd (b) "MEDIMP"): a 3-D image tower and a text
tower projected to one embedding space, with CLIP's learnable temperature (storyjax/tasks/medimp_pretrain.py).

Differences from the published model: the image tower is our basic-block ResNet3D (Hara-style, as CosEmb's) rather
than CLIP's inflated ModifiedResNet with bottlenecks, and its AttentionPool3d (2048 → 1024, 32 heads) is replaced
by the ResNet's average pool and a linear projection; the text tower is a small transformer trained from scratch
(or frozen CLIP features) rather than Bio_ClinicalBERT.
"""

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.mlp import dense
from storyjax.layers.resnet3d import ResNet3D
from storyjax.layers.text_encoder import TEXT_ENCODERS, ScratchTextEncoder, pool_last_valid

Dtype = Any
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's temperature 0.07
LOGIT_SCALE_MAX = math.log(100.0)  # the published clamp [0, 4.6052] (a scale of at most 100)


class ImageTextModel(nn.Module):
  """volumes (B, S, S, S, 1) and prompts → image and text embeddings (B, embed_dim), and the logit scale.

  text: (B, L) int32 word ids with text_encoder="scratch", or (B, L, Dt) frozen CLIP features with "clip";
  text_mask (B, L) bool. The scratch text encoder's sizes are text_width, text_layers, text_heads, max_length.
  """

  vocab_size: int = 0
  width: int = 64
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  embed_dim: int = 1024
  text_encoder: str = "scratch"
  text_width: int = 512
  text_layers: int = 12
  text_heads: int = 8
  max_length: int = 77
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.text_encoder not in TEXT_ENCODERS:
      raise ValueError(f"ImageTextModel text_encoder={self.text_encoder!r}; choose one of {TEXT_ENCODERS}.")
    self.image_encoder = ResNet3D(self.width, tuple(self.stage_sizes), self.dtype)
    self.image_projection = dense(self.embed_dim, ("mlp", "embed"), self.dtype)
    if self.text_encoder == "scratch":
      self.scratch_text_encoder = ScratchTextEncoder(
        self.vocab_size, self.text_width, self.text_layers, self.text_heads, self.max_length, self.dtype
      )
    self.text_projection = dense(self.embed_dim, ("embed", "mlp"), self.dtype)
    self.raw_logit_scale = self.param(
      "logit_scale", nn.with_logical_partitioning(nn.initializers.constant(LOGIT_SCALE_INIT), ()), ()
    )

  def image_features(self, volumes):
    """volumes (B, S, S, S, 1) → the ResNet's pooled features (B, 8·width) float32 in eval mode (the downstream
    exam features)."""
    return self.image_encoder(volumes, train=False)

  def encode_image(self, volumes, train: bool = False):
    """volumes (B, S, S, S, 1) → image embeddings (B, embed_dim) float32; `train` updates BatchNorm statistics."""
    return self.image_projection(self.image_encoder(volumes, train)).astype(jnp.float32)

  def encode_text(self, text, text_mask, deterministic: bool = True):
    """text (B, L) ids or (B, L, Dt) features, text_mask (B, L) → text embeddings (B, embed_dim) float32, from the
    feature at the last valid token ([EOS] / CLIP's end-of-text)."""
    if self.text_encoder == "scratch":
      if text.ndim != 2:
        raise ValueError(f"the scratch text encoder takes word ids (B, L), got shape {text.shape}")
      _, pooled = self.scratch_text_encoder(text, text_mask, deterministic)
    else:
      if text.ndim != 3:
        raise ValueError(f"frozen CLIP text features are (B, L, Dt), got shape {text.shape}")
      pooled = pool_last_valid(text.astype(self.dtype), text_mask)
    return self.text_projection(pooled).astype(jnp.float32)

  def clamped_logit_scale(self):
    """The learned log scale clamped to [0, ln 100]: the published clamp after each step, here in the forward, so
    its gradient is zero beyond the bounds (it stops there rather than being pulled back)."""
    return jnp.clip(self.raw_logit_scale, 0.0, LOGIT_SCALE_MAX)

  def __call__(self, volumes, text, text_mask, train: bool = False):
    """→ (image embeddings (B, embed_dim), text embeddings (B, embed_dim), logit scale ())."""
    return self.encode_image(volumes, train), self.encode_text(text, text_mask, not train), self.clamped_logit_scale()
