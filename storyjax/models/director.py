"""Director: a diffusion transformer over camera trajectories (thesis §3.2), in its three variants.

- A ("in-context"): the conditions — noise level, character trajectory and caption — become tokens prepended
  to the camera-frame tokens of a pre-norm transformer. The caption enters as its pooled end-of-text feature
  (as published) or as its whole token sequence (`caption_tokens="sequence"`).
- B ("adaLN"): the pooled conditions, Linear(character ‖ caption end-of-text feature) + noise embedding,
  modulate every block by adaLN-zero.
- C ("cross-attention"): learned registers, the noise level, one token per character frame and the caption
  token sequence pass through a small transformer (ConditionMapper); every backbone block cross-attends to the
  result.

The caption comes from a small transformer trained with the model (`text_encoder="scratch"`, token ids in)
or from frozen CLIP text features (`text_encoder="clip"`, features (B, L, Dt) in; the pooled feature is
the one at the last valid token, CLIP's end-of-text).

Regularisation as published: `dropout_rate` on the MLP hidden layers only (not on the residual branches),
stochastic depth on the residual branches, and no dropout on the attention probabilities
(`attention_dropout_rate`, "xla" attention only, 0 by default), which lets every attention use a fused kernel.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.data.et.camera import CAMERA_FEATURES, CHARACTER_FEATURES
from storyjax.layers.condition import ConditionMapper
from storyjax.layers.embeddings import NoiseLevelEmbedding, with_positions
from storyjax.layers.mlp import dense
from storyjax.layers.text_encoder import TEXT_ENCODERS, ScratchTextEncoder, pool_last_valid
from storyjax.layers.transformer import BlockOptions, TransformerEncoder

Dtype = Any
VARIANTS = ("A", "B", "C")
CAPTION_TOKENS = ("pooled", "sequence")


class Director(nn.Module):
  """EDM network F of the camera denoiser.

  Inputs: camera_traj (B, T, 9) = c_in·noisy feature; c_noise (B,); char_traj (B, T, 3);
  caption (B, L) int32 token ids (scratch text encoder) or (B, L, Dt) features (frozen CLIP), with
  caption_mask (B, L); frame_mask (B, T) bool; drop_char, drop_caption (B,) bool: replace that condition by
  zeros (classifier-free guidance). Returns (B, T, 9).
  """

  num_frames: int
  width: int
  num_layers: int
  num_heads: int
  variant: str = "A"
  text_encoder: str = "scratch"
  vocab_size: int = 0
  text_width: int = 0
  text_layers: int = 0
  text_heads: int = 0
  max_caption_length: int = 77
  caption_tokens: str = "pooled"
  num_registers: int = 16
  condition_layers: int = 2
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  attention_dropout_rate: float = 0.0
  attention: str = "xla"
  remat: str = "none"
  dtype: Dtype = jnp.float32

  @property
  def _block_options(self) -> BlockOptions:
    return BlockOptions(self.attention, self.attention_dropout_rate, residual_dropout=False, remat=self.remat)

  def _transformer(self, num_layers: int, name: str) -> TransformerEncoder:
    return TransformerEncoder(
      num_layers,
      self.num_heads,
      self.mlp_ratio * self.width,
      self.dtype,
      self.dropout_rate,
      self.stochastic_depth,
      options=self._block_options,
      name=name,
    )

  def _caption_features(self, caption, caption_mask, deterministic):
    """→ caption token features (B, L, Dt) and the pooled end-of-text feature (B, Dt)."""
    if self.text_encoder == "scratch":
      return ScratchTextEncoder(
        self.vocab_size,
        self.text_width,
        self.text_layers,
        self.text_heads,
        self.max_caption_length,
        self.dtype,
        self.dropout_rate,
        self._block_options,
        name="text_encoder",
      )(caption, caption_mask, deterministic)
    if caption.ndim != 3:
      raise ValueError(f"frozen CLIP text features are caption features (B, L, Dt), got shape {caption.shape}")
    return caption.astype(self.dtype), pool_last_valid(caption, caption_mask).astype(self.dtype)

  @nn.compact
  def __call__(
    self,
    camera_traj,
    c_noise,
    char_traj,
    caption,
    caption_mask,
    frame_mask,
    drop_char,
    drop_caption,
    train: bool = False,
  ):
    for field, value, choices in (
      ("variant", self.variant, VARIANTS),
      ("caption_tokens", self.caption_tokens, CAPTION_TOKENS),
      ("text_encoder", self.text_encoder, TEXT_ENCODERS),
    ):
      if value not in choices:
        raise ValueError(f"Director {field}={value!r}; choose one of {choices}.")
    batch, num_frames, channels = camera_traj.shape
    if (num_frames, channels) != (self.num_frames, CAMERA_FEATURES):
      raise ValueError(f"camera_traj must be (B, {self.num_frames}, {CAMERA_FEATURES}), got {camera_traj.shape}")
    if char_traj.shape != (batch, num_frames, CHARACTER_FEATURES):
      raise ValueError(f"char_traj must be (B, T, 3) = {(batch, num_frames, 3)}, got {char_traj.shape}")
    deterministic = not train

    caption_sequence, caption_pooled = self._caption_features(caption, caption_mask, deterministic)
    # Dropped conditions are all-zero features, as in the published Director.
    caption_sequence = jnp.where(drop_caption[:, None, None], 0.0, caption_sequence)
    caption_pooled = jnp.where(drop_caption[:, None], 0.0, caption_pooled)
    char_traj = jnp.where(drop_char[:, None, None], 0.0, char_traj)
    noise_embedding = NoiseLevelEmbedding(self.width, dtype=self.dtype, name="noise_embedding")(c_noise)
    camera_tokens = dense(self.width, ("io", "embed"), self.dtype, name="camera_projection")(camera_traj)

    if self.variant == "A":
      if self.caption_tokens == "pooled":  # the published A: one end-of-text token
        caption_features, caption_key_mask = caption_pooled[:, None], jnp.ones((batch, 1), bool)
      else:  # every caption token in context
        caption_features, caption_key_mask = caption_sequence, caption_mask
      condition_tokens = jnp.concatenate(
        [
          noise_embedding[:, None],
          dense(self.width, ("io", "embed"), self.dtype, name="char_projection")(char_traj.reshape(batch, -1))[:, None],
          dense(self.width, ("io", "embed"), self.dtype, name="caption_projection")(caption_features),
        ],
        axis=1,
      )
      tokens = with_positions(jnp.concatenate([condition_tokens, camera_tokens], axis=1))
      key_mask = jnp.concatenate([jnp.ones((batch, 2), bool), caption_key_mask, frame_mask], axis=1)
      tokens = self._transformer(self.num_layers, "backbone")(tokens, key_mask, deterministic)
      camera_tokens = tokens[:, condition_tokens.shape[1] :]
    elif self.variant == "B":
      pooled_conditions = jnp.concatenate([char_traj.reshape(batch, -1), caption_pooled], axis=-1)
      condition = (
        dense(self.width, ("io", "embed"), self.dtype, name="condition_projection")(pooled_conditions) + noise_embedding
      )
      camera_tokens = self._transformer(self.num_layers, "backbone")(
        with_positions(camera_tokens), frame_mask, deterministic, condition=condition
      )
    else:
      condition_tokens = jnp.concatenate(
        [
          noise_embedding[:, None],
          dense(self.width, ("io", "embed"), self.dtype, name="char_projection")(char_traj),
          dense(self.width, ("io", "embed"), self.dtype, name="caption_projection")(caption_sequence),
        ],
        axis=1,
      )
      # Unlike the published code, padded character frames and caption tokens are masked out.
      condition_mask = jnp.concatenate([jnp.ones((batch, 1), bool), frame_mask, caption_mask], axis=1)
      condition_tokens, condition_mask = ConditionMapper(
        self.num_registers,
        self.condition_layers,
        self.num_heads,
        self.mlp_ratio * self.width,
        self.dtype,
        self.dropout_rate,
        self.stochastic_depth,
        options=self._block_options,
        name="condition_mapper",
      )(condition_tokens, condition_mask, deterministic)
      camera_tokens = self._transformer(self.num_layers, "backbone")(
        with_positions(camera_tokens), frame_mask, deterministic, context=condition_tokens, context_mask=condition_mask
      )
    return dense(
      CAMERA_FEATURES, ("embed", "io"), self.dtype, name="output_projection", kernel_init=nn.initializers.zeros
    )(camera_tokens).astype(jnp.float32)
