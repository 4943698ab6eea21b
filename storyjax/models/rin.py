"""Recurrent Interface Networks (Jabri et al. 2023) and TextRIN, the network of Coherence-Aware Diffusion.

Facts with file and line of the authors' code: shared/spec/facts/cad-rin-cfg.md (§1 RIN, §2.2 TextRIN).
Interface tokens are the image's patches; a smaller set of latents does the computation. Each block reads
(latents ← interface cross-attention), computes (K self-attention layers on the latents) and writes
(interface ← latents). The network is given γ = ᾱ(t), the signal variance, and returns its final latents, which
the next denoising step (and the self-conditioned training pass) feeds back through a zero-initialised
LayerNorm.

Conditioning:
  "none"  / "class": the time embedding (and the class embedding) are extra latent tokens (§1.3).
  "text": TextRIN (§2.2). The time embedding is added to every latent; a context of [time, (coherence),
    16 registers, text tokens], mapped once per forward by 2 LayerScale self-attention layers, is attended by
    the latents at the start of every block. With `coherence`, the coherence score c ∈ [0, 1] is a token
    (CAD); without it this is the TextRIN baseline.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.layers.embeddings import LearnedPositions, NoiseLevelEmbedding
from storyjax.layers.mlp import MlpBlock, dense, layer_norm
from storyjax.layers.patches import PatchEmbedding, unpatchify
from storyjax.layers.text_encoder import ScratchTextEncoder
from storyjax.layers.transformer import REMAT_POLICIES, BlockOptions, TransformerBlock

Dtype = Any
CONDITIONINGS = ("none", "class", "text")
LATENT_AXES = ("activation_batch", "activation_length", "activation_embed")


def _learned_tokens(module: nn.Module, name: str, shape: tuple[int, ...]):
  """A learned (N, D) table, truncated-normal(0.02) as both codebases initialise latents and registers."""
  return module.param(
    name, nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("length", "embed")), shape
  )


class TextContext(nn.Module):
  """TextRIN's conditioning sequence (§2.2 steps 1–6), computed once per forward and shared by all blocks.

  text (B, L, Dt) features, text_mask (B, L), time (B, D), coherence (B,) or None → context (B, Lc, D) and its
  key mask (B, Lc): [time, (coherence token), registers, projected text], where everything after the time
  token went through `num_layers` self-attention blocks with LayerScale 0.1.
  """

  width: int
  num_registers: int = 16
  num_layers: int = 2
  num_heads: int = 16
  layer_scale_init: float = 0.1
  dtype: Dtype = jnp.float32
  options: BlockOptions = BlockOptions()

  @nn.compact
  def __call__(self, text, text_mask, time, coherence=None):
    batch = text.shape[0]
    tokens = [
      jnp.broadcast_to(
        _learned_tokens(self, "registers", (self.num_registers, self.width)),
        (batch,)
        + (
          self.num_registers,
          self.width,
        ),
      ).astype(self.dtype)
    ]
    if coherence is not None:
      # The coherence is embedded like time (sinusoid of 1000·c) plus a learned vector (§2.2 step 2).
      coherence_token = NoiseLevelEmbedding(self.width, self.width // 4, dtype=self.dtype, name="coherence")(coherence)
      offset = self.param(
        "coherence_offset",
        nn.with_logical_partitioning(nn.initializers.truncated_normal(0.02), ("embed",)),
        (self.width,),
      )
      tokens.insert(0, (coherence_token + offset)[:, None].astype(self.dtype))
    tokens.append(dense(self.width, ("io", "embed"), self.dtype, "text_projection")(text))
    sequence = jnp.concatenate(tokens, axis=1)
    prefix = sequence.shape[1] - text.shape[1]
    mask = jnp.concatenate([jnp.ones((batch, prefix), bool), text_mask.astype(bool)], axis=1)
    for index in range(self.num_layers):
      sequence = TransformerBlock(
        self.num_heads,
        4 * self.width,
        self.dtype,
        layer_scale_init=self.layer_scale_init,
        options=self.options,
        name=f"mapper_{index}",
      )(sequence, mask)
    context = jnp.concatenate([time[:, None].astype(sequence.dtype), sequence], axis=1)
    return context, jnp.concatenate([jnp.ones((batch, 1), bool), mask], axis=1)


class RIN(nn.Module):
  """ε (or v) prediction for noisy images (B, H, W, C) at signal variances γ (B,) → (prediction, latents).

  latents_prev (B, N_z, D_z) are the previous pass's latents for self-conditioning (zeros = none). Conditioning
  inputs by `conditioning`: "class": labels (B,) int32, −1 = no label (the unconditional branch of CFG);
  "text": text (B, L) word ids for the scratch encoder, or frozen features (B, L, Dt), with text_mask (B, L),
  and coherence (B,) when `coherence` is set. Returns the prediction (B, H, W, C) float32 and the final latents
  (B, N_z, D_z).
  """

  image_size: tuple[int, int]
  channels: int = 3
  patch_size: int = 4
  interface_dim: int = 64
  num_latents: int = 32
  latent_dim: int = 128
  num_blocks: int = 2
  block_depth: int = 2
  latent_heads: int = 4
  read_write_heads: int = 4
  latent_mlp_ratio: int = 4
  interface_mlp_ratio: int = 2
  dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  conditioning: str = "none"
  num_classes: int = 0
  coherence: bool = False
  text_encoder: str = "scratch"
  vocab_size: int = 0
  max_text_length: int = 32
  text_layers: int = 2
  num_registers: int = 16
  context_layers: int = 2
  context_heads: int = 4
  dtype: Dtype = jnp.float32
  options: BlockOptions = BlockOptions()

  @property
  def num_cond_tokens(self) -> int:
    """Latent tokens that carry conditioning (time, class) instead of being learned (§1.3)."""
    return {"none": 1, "class": 2, "text": 0}[self.conditioning]

  def _check(self):
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"conditioning={self.conditioning!r}; choose one of {CONDITIONINGS}")
    if self.conditioning == "class" and self.num_classes < 1:
      raise ValueError("class-conditional RIN needs num_classes ≥ 1")
    if self.coherence and self.conditioning != "text":
      raise ValueError("the coherence token is TextRIN's (conditioning='text')")
    if self.num_latents <= self.num_cond_tokens:
      raise ValueError(f"num_latents={self.num_latents} leaves no learned latents")

  @nn.compact
  def __call__(
    self,
    noisy,
    gamma,
    latents_prev=None,
    labels=None,
    text=None,
    text_mask=None,
    coherence=None,
    deterministic: bool = True,
  ):
    self._check()
    batch = noisy.shape[0]
    # Interface: patches → LayerNorm → + learned positions (§1.1).
    interface = PatchEmbedding(self.interface_dim, (self.patch_size,) * 2, self.dtype, name="patches")(
      noisy.astype(self.dtype)
    )
    interface = layer_norm(self.dtype, name="patch_norm")(interface)
    interface = LearnedPositions(interface.shape[1], name="positions")(interface)

    time = NoiseLevelEmbedding(self.latent_dim, self.latent_dim // 4, dtype=self.dtype, name="time")(gamma)
    learned = _learned_tokens(self, "latents", (self.num_latents - self.num_cond_tokens, self.latent_dim))
    latents = jnp.broadcast_to(learned, (batch,) + learned.shape).astype(self.dtype)
    context = context_mask = None
    if self.conditioning == "text":
      latents = latents + time[:, None]
      if self.text_encoder == "scratch":
        text, _ = ScratchTextEncoder(
          self.vocab_size,
          self.latent_dim,
          self.text_layers,
          self.context_heads,
          self.max_text_length,
          self.dtype,
          options=self.options,
          name="text_encoder",
        )(text, text_mask, deterministic)
      context, context_mask = TextContext(
        self.latent_dim,
        self.num_registers,
        self.context_layers,
        self.context_heads,
        dtype=self.dtype,
        options=self.options,
        name="context",
      )(text, text_mask, time, coherence if self.coherence else None)
    else:
      condition_tokens = [time[:, None]]
      if self.conditioning == "class":
        one_hot = jax.nn.one_hot(labels, self.num_classes, dtype=self.dtype)  # label −1 → zeros
        condition_tokens.append(
          dense(self.latent_dim, ("io", "embed"), self.dtype, "class_embedding")(one_hot)[:, None]
        )
      latents = jnp.concatenate([*condition_tokens, latents], axis=1)

    # Latent self-conditioning (§1.4): z += LN₀(z_prev + MLP(LN(z_prev))), LN₀ zero-initialised.
    if latents_prev is None:
      latents_prev = jnp.zeros_like(latents)
    latents_prev = latents_prev.astype(self.dtype)
    hidden = MlpBlock(self.latent_mlp_ratio * self.latent_dim, self.dtype, name="self_condition_mlp")(
      layer_norm(self.dtype, name="self_condition_norm")(latents_prev)
    )
    zeros = nn.with_logical_partitioning(nn.initializers.zeros, ("embed",))
    latents = latents + nn.LayerNorm(
      1e-6, self.dtype, scale_init=zeros, bias_init=zeros, name="self_condition_out_norm"
    )(latents_prev + hidden)
    latents = nn.with_logical_constraint(latents, LATENT_AXES)

    block = TransformerBlock
    if self.options.remat != "none":  # argument 3 (counting self) is `deterministic`, a Python bool
      block = nn.remat(TransformerBlock, policy=REMAT_POLICIES[self.options.remat], static_argnums=(3,))
    rw_dim = min(self.interface_dim, self.latent_dim)
    cross = lambda mlp_dim, attention_dim, name: block(
      self.read_write_heads,
      mlp_dim,
      self.dtype,
      options=self.options,
      self_attention=False,
      attention_dim=attention_dim,
      name=name,
    )
    for index in range(self.num_blocks):
      if context is not None:  # TextRIN: the latents attend to the context before the read (§2.2 step 7)
        latents = cross(self.latent_mlp_ratio * self.latent_dim, None, f"block_{index}_context")(
          latents, None, deterministic, context, context_mask
        )
      latents = cross(self.latent_mlp_ratio * self.latent_dim, rw_dim, f"block_{index}_read")(
        latents, None, deterministic, interface
      )
      for layer in range(self.block_depth):
        latents = block(
          self.latent_heads,
          self.latent_mlp_ratio * self.latent_dim,
          self.dtype,
          self.dropout_rate,
          self.stochastic_depth,
          options=self.options,
          name=f"block_{index}_compute_{layer}",
        )(latents, None, deterministic)
      interface = cross(self.interface_mlp_ratio * self.interface_dim, rw_dim, f"block_{index}_write")(
        interface, None, deterministic, latents
      )

    patches = dense(self.patch_size**2 * self.channels, ("embed", "io"), self.dtype, "readout")(
      layer_norm(self.dtype, name="readout_norm")(interface)
    )
    prediction = unpatchify(patches, noisy.shape[1:3], (self.patch_size,) * 2)
    return prediction.astype(jnp.float32), latents
