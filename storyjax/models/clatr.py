"""CLaTr: a contrastive language–trajectory model (thesis §3.2, TMR/TEMOS style) with a VAE bottleneck.

A trajectory encoder and a text encoder (ACTOR-style: two learned distribution tokens μ, log σ² prepended to the
projected inputs, sinusoidal positions, a transformer) map camera trajectories and captions to Gaussians in one
latent space; a decoder reconstructs the trajectory from a latent sample of either. Our blocks are pre-LN where
the published encoders are post-LN. Director's metrics use the means μ as features.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.data.et.camera import CAMERA_FEATURES
from storyjax.layers.dropout import Dropout
from storyjax.layers.embeddings import with_positions
from storyjax.layers.mlp import dense
from storyjax.layers.text_encoder import TEXT_ENCODERS
from storyjax.layers.transformer import BlockOptions, TransformerEncoder

Dtype = Any


def transformer(num_layers: int, num_heads: int, mlp_dim: int, dtype, dropout_rate: float, attention: str, name: str):
  """A TransformerEncoder with torch's nn.TransformerEncoderLayer dropout, as the published CLaTr: on the
  attention probabilities, the residual branches and the MLP hidden layer. `attention`: layers/attention.py."""
  options = BlockOptions(attention=attention, attention_dropout_rate=dropout_rate)
  return TransformerEncoder(num_layers, num_heads, mlp_dim, dtype, dropout_rate, options=options, name=name)


class DistributionEncoder(nn.Module):
  """inputs (B, L, F) + mask (B, L) → μ (B, D), log σ² (B, D) read from two prepended learned tokens."""

  width: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, inputs, mask, deterministic: bool = True):
    batch = inputs.shape[0]
    tokens = dense(self.width, ("io", "embed"), self.dtype, name="input_projection")(inputs)
    distribution_tokens = self.param(
      "distribution_tokens",
      nn.with_logical_partitioning(nn.initializers.normal(0.02), ("length", "embed")),
      (2, self.width),
    )
    tokens = jnp.concatenate(
      [jnp.broadcast_to(distribution_tokens.astype(self.dtype), (batch, 2, self.width)), tokens], axis=1
    )
    tokens = Dropout(self.dropout_rate)(with_positions(tokens), deterministic=deterministic)
    key_mask = jnp.concatenate([jnp.ones((batch, 2), bool), mask], axis=1)
    encoder = transformer(
      self.num_layers, self.num_heads, self.mlp_dim, self.dtype, self.dropout_rate, self.attention, "encoder"
    )
    tokens = encoder(tokens, key_mask, deterministic)
    return tokens[:, 0].astype(jnp.float32), tokens[:, 1].astype(jnp.float32)


class Clatr(nn.Module):
  """Trajectory (B, T, 9) and caption → Gaussian latents (B, D); latent (B, D) → trajectory (B, T, 9).

  caption: (B, L) int32 word ids with text_encoder="scratch" (a learned embedding), or (B, L, Dt) frozen
  features (e.g. E.T.'s CLIP `caption_clip/seq`) with "clip".
  """

  num_frames: int
  width: int = 256
  num_layers: int = 6
  num_heads: int = 4
  mlp_dim: int = 1024
  text_encoder: str = "scratch"
  vocab_size: int = 0
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  attention: str = "xla"  # storyjax/layers/attention.py

  def setup(self):
    if self.text_encoder not in TEXT_ENCODERS:
      raise ValueError(f"Clatr text_encoder={self.text_encoder!r}; choose one of {TEXT_ENCODERS}.")
    encoder = lambda name: DistributionEncoder(
      self.width,
      self.num_layers,
      self.num_heads,
      self.mlp_dim,
      self.dropout_rate,
      self.dtype,
      self.attention,
      name=name,
    )
    self.trajectory_encoder = encoder("trajectory_encoder")
    self.text_encoder_ = encoder("text_encoder")
    if self.text_encoder == "scratch":
      self.token_embedding = nn.Embed(
        self.vocab_size,
        self.width,
        dtype=self.dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
      )
    self.decoder = transformer(
      self.num_layers, self.num_heads, self.mlp_dim, self.dtype, self.dropout_rate, self.attention, "decoder"
    )
    self.output_projection = dense(CAMERA_FEATURES, ("embed", "io"), self.dtype, name="output_projection")

  def encode_trajectory(self, camera_traj, frame_mask, deterministic: bool = True):
    """camera_traj (B, T, 9), frame_mask (B, T) → μ, log σ² (B, D)."""
    if camera_traj.shape[1:] != (self.num_frames, CAMERA_FEATURES):
      raise ValueError(f"camera_traj must be (B, {self.num_frames}, {CAMERA_FEATURES}), got {camera_traj.shape}")
    return self.trajectory_encoder(camera_traj, frame_mask, deterministic)

  def encode_text(self, caption, caption_mask, deterministic: bool = True):
    """caption (B, L) ids or (B, L, Dt) features, caption_mask (B, L) → μ, log σ² (B, D)."""
    if self.text_encoder == "scratch":
      if caption.ndim != 2:
        raise ValueError(f"the scratch text encoder takes word ids (B, L), got shape {caption.shape}")
      caption = self.token_embedding(caption)
    elif caption.ndim != 3:
      raise ValueError(f"frozen CLIP text features are caption features (B, L, Dt), got shape {caption.shape}")
    return self.text_encoder_(caption, caption_mask, deterministic)

  def decode(self, latent, frame_mask, deterministic: bool = True):
    """latent (B, D), frame_mask (B, T) → trajectory (B, T, 9), zero on padded frames.

    The queries are the frame positions alone; they cross-attend to the latent as a one-token context.
    """
    batch = latent.shape[0]
    queries = with_positions(jnp.zeros((batch, self.num_frames, self.width), self.dtype))
    context = latent[:, None].astype(self.dtype)
    decoded = self.decoder(queries, frame_mask, deterministic, context=context, context_mask=jnp.ones((batch, 1), bool))
    return self.output_projection(decoded).astype(jnp.float32) * frame_mask[..., None]

  def __call__(self, camera_traj, frame_mask, caption, caption_mask, train: bool = False):
    """All of it for the loss: dict of μ/log σ² for both modalities, their latent samples and reconstructions.

    Latents are reparameterised samples when training (rng stream "latent"), the means otherwise.
    """
    deterministic = not train
    motion_mean, motion_logvar = self.encode_trajectory(camera_traj, frame_mask, deterministic)
    text_mean, text_logvar = self.encode_text(caption, caption_mask, deterministic)
    if train:
      motion_noise, text_noise = jax.random.normal(self.make_rng("latent"), (2,) + motion_mean.shape)
      motion_latent = motion_mean + jnp.exp(0.5 * motion_logvar) * motion_noise
      text_latent = text_mean + jnp.exp(0.5 * text_logvar) * text_noise
    else:
      motion_latent, text_latent = motion_mean, text_mean
    return {
      "motion_mean": motion_mean,
      "motion_logvar": motion_logvar,
      "text_mean": text_mean,
      "text_logvar": text_logvar,
      "motion_latent": motion_latent,
      "text_latent": text_latent,
      "motion_reconstruction": self.decode(motion_latent, frame_mask, deterministic),
      "text_reconstruction": self.decode(text_latent, frame_mask, deterministic),
    }
