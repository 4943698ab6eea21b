"""Director: a diffusion transformer over camera trajectories (thesis §3.2).

Variant A ("in-context"): the conditions — noise level, character trajectory and caption — become tokens
prepended to the camera-frame tokens of a pre-norm transformer. The caption enters as its pooled
end-of-text feature (as published) or as its whole token sequence (`caption_tokens="sequence"`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.embeddings import NoiseLevelEmbedding, sinusoidal_embedding
from storyjax.layers.mlp import dense
from storyjax.layers.text_encoder import ScratchTextEncoder
from storyjax.layers.transformer import TransformerEncoder

Dtype = Any
CAMERA_FEATURES = 9
CHARACTER_FEATURES = 3
VARIANTS = ("A",)
CAPTION_TOKENS = ("pooled", "sequence")


class Director(nn.Module):
  """EDM network F of the camera denoiser.

  Inputs: camera_traj (B, T, 9) = c_in·noisy feature; c_noise (B,); char_traj (B, T, 3);
  caption_tokens (B, L) int32 with caption_mask (B, L); frame_mask (B, T) bool;
  drop_char, drop_caption (B,) bool: replace that condition by zeros (classifier-free guidance).
  Returns (B, T, 9).
  """
  num_frames: int
  width: int
  num_layers: int
  num_heads: int
  vocab_size: int
  text_width: int
  text_layers: int
  text_heads: int
  max_caption_length: int
  variant: str = "A"
  caption_tokens: str = "pooled"
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, camera_traj, c_noise, char_traj, caption_tokens, caption_mask, frame_mask,
               drop_char, drop_caption, train: bool = False):
    if self.variant not in VARIANTS:
      raise ValueError(f"Director variant {self.variant!r} is not implemented; choose one of {VARIANTS}.")
    if self.caption_tokens not in CAPTION_TOKENS:
      raise ValueError(f"caption_tokens={self.caption_tokens!r}; choose one of {CAPTION_TOKENS}.")
    batch, num_frames, channels = camera_traj.shape
    if (num_frames, channels) != (self.num_frames, CAMERA_FEATURES):
      raise ValueError(f"camera_traj must be (B, {self.num_frames}, {CAMERA_FEATURES}), got {camera_traj.shape}")
    if char_traj.shape != (batch, num_frames, CHARACTER_FEATURES):
      raise ValueError(f"char_traj must be (B, T, 3) = {(batch, num_frames, 3)}, got {char_traj.shape}")
    deterministic = not train

    caption_sequence, caption_pooled = ScratchTextEncoder(
        self.vocab_size, self.text_width, self.text_layers, self.text_heads, self.max_caption_length,
        self.dtype, self.dropout_rate, name="text_encoder")(caption_tokens, caption_mask, deterministic)
    if self.caption_tokens == "pooled":  # the published A: one end-of-text token
      caption_features, caption_key_mask = caption_pooled[:, None], jnp.ones((batch, 1), bool)
    else:  # every caption token in context
      caption_features, caption_key_mask = caption_sequence, caption_mask
    # Dropped conditions are all-zero features, as in the published Director.
    caption_features = jnp.where(drop_caption[:, None, None], 0.0, caption_features)
    char_flat = jnp.where(drop_char[:, None], 0.0, char_traj.reshape(batch, -1))

    condition_tokens = jnp.concatenate([
        NoiseLevelEmbedding(self.width, dtype=self.dtype, name="noise_embedding")(c_noise)[:, None],
        dense(self.width, ("io", "embed"), self.dtype, name="char_projection")(char_flat)[:, None],
        dense(self.width, ("io", "embed"), self.dtype, name="caption_projection")(caption_features),
    ], axis=1)
    camera_tokens = dense(self.width, ("io", "embed"), self.dtype, name="camera_projection")(camera_traj)
    tokens = jnp.concatenate([condition_tokens, camera_tokens], axis=1)
    tokens = tokens + sinusoidal_embedding(jnp.arange(tokens.shape[1]), self.width).astype(self.dtype)
    key_mask = jnp.concatenate([jnp.ones((batch, 2), bool), caption_key_mask, frame_mask], axis=1)

    tokens = TransformerEncoder(
        self.num_layers, self.num_heads, self.mlp_ratio * self.width, self.dtype, self.dropout_rate,
        self.stochastic_depth, name="backbone")(tokens, key_mask, deterministic)
    camera_tokens = tokens[:, condition_tokens.shape[1]:]
    return dense(CAMERA_FEATURES, ("embed", "io"), self.dtype, name="output_projection",
                 kernel_init=nn.initializers.zeros)(camera_tokens).astype(jnp.float32)
