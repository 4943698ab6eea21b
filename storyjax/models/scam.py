"""SCAM (Dufour et al., ECCV 2022; thesis §3.1): SAT-Encoder, SCAM-Generator and a multi-scale PatchGAN.

Facts with the authors' file names: shared/spec/facts/laeo-scam.md part B. An image (B, H, W, 3) in [−1, 1] and its
label map (B, H, W) int32 are encoded into k latents per label (background included); the generator rebuilds the
image from the label map and the latents, every feature map modulated by semantic cross-attention (SCA, eq 3.1,
storyjax/layers/semantic.py) to the latents of its own label; a conditional PatchGAN at two scales judges
(image ‖ one-hot labels). Channels-last throughout; the authors' PyTorch is channels-first.

Parameters split by top-level key: the generator side is {encoder, generator}, the discriminator side
{discriminator}. GN-GAN's normalisation needs the gradient of D with respect to its input, so D takes the
concatenated input (`discriminator_input`, `SCAM.discriminate_input`) and `gradient_normalised_logits` wraps any
function of it.
"""

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.layers.conv import ACTIVATION_AXES, conv
from storyjax.layers.embeddings import sinusoidal_grid_embedding
from storyjax.layers.mlp import dense
from storyjax.layers.semantic import (
  TORCH_DEFAULT_INIT,
  TORCH_NORM_EPSILON,
  MaskedTransformer,
  SemanticAttention,
  SemanticOptions,
  latent_labels,
  nearest_resize,
)

Dtype = Any
IMAGE_CHANNELS = 3
LATENT_AXES = ("activation_batch", "activation_length", "activation_embed")
PAD_1 = ((1, 1), (1, 1))
PAD_2 = ((2, 2), (2, 2))  # the PatchGAN's ⌈(4 − 1)/2⌉


def torch_conv(features: int, kernel: int, stride: int, padding, dtype: Dtype, name: str) -> nn.Conv:
  """A square conv (kernel × kernel, stride, explicit torch-style padding) with PyTorch's default init."""
  return conv(features, (kernel,) * 2, (stride,) * 2, padding, dtype=dtype, name=name, kernel_init=TORCH_DEFAULT_INIT)


def leaky_relu(features):
  return nn.leaky_relu(features, 0.2)


def instance_norm(features):
  """torch's InstanceNorm2d(affine=False): (B, H, W, C) normalised over (H, W) per sample and channel, in fp32."""
  values = features.astype(jnp.float32)
  mean = values.mean(axis=(1, 2), keepdims=True)
  variance = jnp.square(values - mean).mean(axis=(1, 2), keepdims=True)
  return ((values - mean) * jnp.reciprocal(jnp.sqrt(variance + TORCH_NORM_EPSILON))).astype(features.dtype)


def _check_image_and_labels(image, labels):
  if image.ndim != 4 or image.shape[-1] != IMAGE_CHANNELS:
    raise ValueError(f"image must be (B, H, W, {IMAGE_CHANNELS}) channels-last, got shape {image.shape}")
  _check_labels(labels, image.shape[:3])


def _check_labels(labels, expected=None):
  if labels.ndim != 3 or (expected is not None and labels.shape != expected):
    raise ValueError(f"labels must be an int label map (B, H, W) = {expected or '(B, H, W)'}, got shape {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer label ids (B, H, W), got dtype {labels.dtype}")


def discriminator_input(image, labels, num_labels: int):
  """image (B, H, W, 3), labels (B, H, W) int → the discriminator's input (B, H, W, 3 + num_labels)."""
  _check_image_and_labels(image, labels)
  return jnp.concatenate([image, jax.nn.one_hot(labels, num_labels, dtype=image.dtype)], axis=-1)


def gradient_normalised_logits(logits_fn: Callable, inputs) -> list:
  """GN-GAN (B.5): each scale's D̂ = D / (‖∇_inputs Σ D‖₂ + |D|), the norm taken per sample.

  logits_fn maps the discriminator input (B, H, W, C) to a list of per-scale logits (B, h_s, w_s, 1); the gradient
  of each scale's sum is taken with respect to that full-resolution input. Samples must not interact inside
  logits_fn (no batch statistics), so that ∇ of the batch sum is each sample's own gradient. |D̂| < 1 wherever
  the gradient is non-zero. Differentiable (the GAN losses backpropagate through the norm).
  """
  logits, pullback = jax.vjp(logits_fn, inputs)
  normalised = []
  for scale, scale_logits in enumerate(logits):
    cotangent = [
      jnp.ones_like(other) if index == scale else jnp.zeros_like(other) for index, other in enumerate(logits)
    ]
    (gradient,) = pullback(cotangent)
    gradient = gradient.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(gradient), axis=tuple(range(1, gradient.ndim))))
    norm = norm.reshape((-1,) + (1,) * (scale_logits.ndim - 1))
    normalised.append(scale_logits / (norm + jnp.abs(scale_logits)))
  return normalised


class SATEncoder(nn.Module):
  """Semantic Attention Transformer encoder (B.3): image (B, H, W, 3), labels (B, H, W) → latents (B, N_lat, D).

  N_lat = num_labels·latents_per_label learned queries (normal(1) init). Level 0 is RGB ‖ a `position_dim`
  sinusoidal grid embedding at full resolution; level i ≥ 1 is Conv(k3, s2) + LReLU 0.2 of level i − 1's conv
  output (the raw image for i = 1), stem_width·2^i channels, plus an added grid embedding. Block i: the latents
  cross-attend level i's pixels (SCA with the labels nearest-resized to that level), then self-attend (same label).
  """

  num_labels: int
  latents_per_label: int = 8
  latent_dim: int = 256
  num_levels: int = 7
  stem_width: int = 16
  position_dim: int = 40
  options: SemanticOptions = SemanticOptions()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image, labels):
    _check_image_and_labels(image, labels)
    if self.num_levels < 1:
      raise ValueError(f"the SAT-Encoder needs at least one level, got num_levels={self.num_levels}")
    batch, height, width = labels.shape
    image = image.astype(self.dtype)
    table = self.param(
      "latents",
      nn.with_logical_partitioning(nn.initializers.normal(1.0), ("length", "embed")),
      (self.num_labels * self.latents_per_label, self.latent_dim),
    )
    latents = jnp.broadcast_to(table, (batch,) + table.shape).astype(self.dtype)
    own_labels = jnp.broadcast_to(latent_labels(self.num_labels, self.latents_per_label), latents.shape[:2])
    position = sinusoidal_grid_embedding(height, width, self.position_dim).astype(self.dtype)
    level_tokens = jnp.concatenate([image, jnp.broadcast_to(position, (batch,) + position.shape)], axis=-1)
    stem = image
    for level in range(self.num_levels):
      if level:
        stem_conv = torch_conv(self.stem_width * 2**level, 3, 2, PAD_1, self.dtype, f"stem_{level}")
        stem = nn.with_logical_constraint(leaky_relu(stem_conv(stem)), ACTIVATION_AXES[2])
        level_tokens = stem + sinusoidal_grid_embedding(*stem.shape[1:]).astype(self.dtype)
      level_labels = nearest_resize(labels, level_tokens.shape[1:3]).reshape(batch, -1)
      pixels = level_tokens.reshape(batch, -1, level_tokens.shape[-1])
      latents = MaskedTransformer(self.options, self.dtype, name=f"block_{level}_cross")(
        latents, pixels, own_labels, level_labels
      )
      latents = MaskedTransformer(self.options, self.dtype, name=f"block_{level}_self")(
        latents, latents, own_labels, own_labels
      )
      latents = nn.with_logical_constraint(latents, LATENT_AXES)
    return latents


class SCAMModulation(nn.Module):
  """SCAM-Operation (B.4): features (B, h, w, C), latents (B, N, D) → (modulated features, latents for the next op).

  x_enc = x + grid embedding(C); duplex: Z ← MaskedTransformer(Z, x_enc) (passed on); simplex: Z ← an MLP, used here
  only. A = SemanticAttention(x_enc ← Z); out = LReLU((1 + γ(A))·InstanceNorm(x) + β(A) [+ noise]), the noise one
  N(0, 1) map (rng stream "noise") times a learned per-channel strength (init 0), none when `deterministic`. γ, β
  (B, h, w, C) are sown as intermediates "gamma", "beta". pixel_labels (B, h, w), own_labels (B, N) int32.
  """

  duplex: bool = True
  add_noise: bool = True
  options: SemanticOptions = SemanticOptions()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, latents, pixel_labels, own_labels, deterministic: bool = True):
    batch, height, width, channels = features.shape
    encoded = features + sinusoidal_grid_embedding(height, width, channels).astype(features.dtype)
    encoded = encoded.reshape(batch, height * width, channels)
    pixel_labels = pixel_labels.reshape(batch, height * width)
    if self.duplex:
      latents = MaskedTransformer(self.options, self.dtype, name="image_to_latent")(
        latents, encoded, own_labels, pixel_labels
      )
      attending = latents
    else:
      dim = latents.shape[-1]
      hidden = leaky_relu(dense(dim, ("embed", "mlp"), self.dtype, "latent_fc1", TORCH_DEFAULT_INIT)(latents))
      attending = dense(dim, ("mlp", "embed"), self.dtype, "latent_fc2", TORCH_DEFAULT_INIT)(hidden)
    attended = SemanticAttention(self.options, self.dtype, name="latent_to_image")(
      encoded, attending, pixel_labels, own_labels
    )
    gamma = dense(channels, ("embed", "mlp"), self.dtype, "gamma_projection", TORCH_DEFAULT_INIT)(attended)
    beta = dense(channels, ("embed", "mlp"), self.dtype, "beta_projection", TORCH_DEFAULT_INIT)(attended)
    gamma, beta = gamma.reshape(features.shape), beta.reshape(features.shape)
    self.sow("intermediates", "gamma", gamma)
    self.sow("intermediates", "beta", beta)
    out = (1 + gamma) * instance_norm(features) + beta
    if self.add_noise:
      strength = self.param(
        "noise_strength", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (channels,)
      )
      if not deterministic:
        noise = jax.random.normal(self.make_rng("noise"), (batch, height, width, 1), jnp.float32)
        out = out + (noise * strength).astype(out.dtype)
    return leaky_relu(out), latents


class SCAMResUpscale(nn.Module):
  """One up block (B.4): features (B, h, w, Cin) → (B, h', w', features) at `size` = (h', w'), latents, RGB.

  mod_0 → LReLU → Conv3×3 (Cin → min(Cin, out)) → nearest resize to `size`; mod_1 → LReLU → Conv3×3 (→ out).
  Skip RGB (StyleGAN2): ToRGB(out) + the resized previous RGB, ToRGB a simplex SCAM-op and a 1×1 conv, or only
  the 1×1 conv in the `last` block.
  """

  features: int
  last: bool = False
  options: SemanticOptions = SemanticOptions()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, latents, labels, own_labels, previous_rgb, size, deterministic: bool = True):
    middle = min(features.shape[-1], self.features)
    modulation = lambda name, **kwargs: SCAMModulation(options=self.options, dtype=self.dtype, name=name, **kwargs)
    conv3 = lambda width, name: torch_conv(width, 3, 1, PAD_1, self.dtype, name)
    features, latents = modulation("mod_0")(
      features, latents, nearest_resize(labels, features.shape[1:3]), own_labels, deterministic
    )
    features = nearest_resize(conv3(middle, "conv_0")(leaky_relu(features)), size)
    pixel_labels = nearest_resize(labels, size)
    features, latents = modulation("mod_1")(features, latents, pixel_labels, own_labels, deterministic)
    features = conv3(self.features, "conv_1")(leaky_relu(features))
    features = nn.with_logical_constraint(features, ACTIVATION_AXES[2])
    rgb_input = features
    if not self.last:
      rgb_input, _ = modulation("to_rgb_mod", duplex=False, add_noise=False)(
        features, latents, pixel_labels, own_labels, deterministic
      )
    rgb = torch_conv(IMAGE_CHANNELS, 1, 1, "VALID", self.dtype, "to_rgb")(rgb_input)
    if previous_rgb is not None:
      rgb = rgb + nearest_resize(previous_rgb, size)
    return features, latents, rgb


class SCAMGenerator(nn.Module):
  """SCAM-Generator (B.4): labels (B, H, W) int32, latents (B, N_lat, D) → image (B, H, W, 3) in [−1, 1] (fp32).

  The one-hot label map, nearest-resized to `start_size` (default (H, W) // 2^n), goes through a Conv3×3 to
  widths[0] channels; n = len(widths) − 1 up blocks follow, block i to widths[i + 1] channels at twice the size,
  the last one at (H, W) exactly (the authors' Upsample(size=(H, W)), e.g. iDesigner's 96×64 → 256×170); tanh.
  """

  num_labels: int
  latents_per_label: int = 8
  widths: Sequence[int] = (1024, 1024, 1024, 512, 256, 128, 64)
  start_size: tuple[int, int] | None = None
  options: SemanticOptions = SemanticOptions()
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, labels, latents, deterministic: bool = True):
    _check_labels(labels)
    num_blocks = len(self.widths) - 1
    batch, height, width = labels.shape
    num_latents = self.num_labels * self.latents_per_label
    if latents.ndim != 3 or latents.shape[:2] != (batch, num_latents):
      raise ValueError(f"latents must be (B, N_lat, D) with B = {batch}, N_lat = {num_latents}, got {latents.shape}")
    if num_blocks < 1 or any(channels % 4 for channels in self.widths):
      raise ValueError(f"generator widths {tuple(self.widths)}: need ≥ 2 entries, each a multiple of 4 (the PE)")
    start = tuple(self.start_size or (height // 2**num_blocks, width // 2**num_blocks))
    if min(start) < 1 or start[0] * 2 ** (num_blocks - 1) > height or start[1] * 2 ** (num_blocks - 1) > width:
      raise ValueError(
        f"{num_blocks} up blocks from a {start} start do not fit a {(height, width)} label map; use fewer "
        "generator widths or a larger image"
      )
    one_hot = jax.nn.one_hot(nearest_resize(labels, start), self.num_labels, dtype=self.dtype)
    features = torch_conv(self.widths[0], 3, 1, PAD_1, self.dtype, "start_conv")(one_hot)
    latents = latents.astype(self.dtype)
    own_labels = jnp.broadcast_to(latent_labels(self.num_labels, self.latents_per_label), (batch, num_latents))
    rgb = None
    size = start
    for index, channels in enumerate(self.widths[1:]):
      last = index == num_blocks - 1
      size = (height, width) if last else (2 * size[0], 2 * size[1])
      features, latents, rgb = SCAMResUpscale(channels, last, self.options, self.dtype, name=f"block_{index}")(
        features, latents, labels, own_labels, rgb, size, deterministic
      )
    return jnp.tanh(rgb.astype(jnp.float32))


class PatchDiscriminator(nn.Module):
  """Multi-scale conditional PatchGAN (B.5): inputs (B, H, W, 3 + L) = image ‖ one-hot labels → list of logits.

  Per scale: Conv k4 s2 → LReLU; then for widths[1:], Conv k4 (s2, the last s1) → InstanceNorm → LReLU; Conv k4 s1
  → 1 (padding 2 throughout), logits (B, h_s, w_s, 1) fp32. Scale s + 1 sees the image average-pooled (3, s2, p1,
  padding not counted) and the label channels nearest-resized to that size.
  """

  widths: Sequence[int] = (64, 128, 256, 512)
  num_scales: int = 2
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    if inputs.ndim != 4 or inputs.shape[-1] <= IMAGE_CHANNELS:
      raise ValueError(f"discriminator inputs must be (B, H, W, 3 + num_labels), got shape {inputs.shape}")
    if len(self.widths) < 2:
      raise ValueError(f"discriminator widths {tuple(self.widths)}: need at least 2 layers")
    logits = []
    for scale in range(self.num_scales):
      if scale:
        image = nn.avg_pool(inputs[..., :IMAGE_CHANNELS], (3, 3), (2, 2), PAD_1, count_include_pad=False)
        inputs = jnp.concatenate([image, nearest_resize(inputs[..., IMAGE_CHANNELS:], image.shape[1:3])], axis=-1)
      logits.append(self._scale(inputs.astype(self.dtype), f"scale_{scale}"))
    return logits

  def _scale(self, features, name):
    strided = lambda width, stride, layer: torch_conv(width, 4, stride, PAD_2, self.dtype, f"{name}_conv_{layer}")
    features = leaky_relu(strided(self.widths[0], 2, 0)(features))
    for layer, width in enumerate(self.widths[1:], start=1):
      features = strided(width, 1 if layer == len(self.widths) - 1 else 2, layer)(features)
      features = leaky_relu(instance_norm(nn.with_logical_constraint(features, ACTIVATION_AXES[2])))
    return strided(1, 1, len(self.widths))(features).astype(jnp.float32)


class SCAM(nn.Module):
  """SAT-Encoder + SCAM-Generator + multi-scale PatchGAN, with methods for `apply(..., method=...)`.

  encode(image (B, H, W, 3), labels (B, H, W)) → latents (B, N_lat, latent_dim); generate(labels, latents,
  deterministic) → image (B, H, W, 3) in [−1, 1]; discriminate(image, labels) → per-scale logits (B, h_s, w_s, 1);
  discriminate_input(inputs (B, H, W, 3 + num_labels)) the same from `discriminator_input`'s concatenation (for
  GN-GAN); __call__ runs all three (init).

  Fields: num_labels (background included); latents_per_label (N_lat = num_labels·latents_per_label); latent_dim;
  heads and attention_dim (None: latent_dim) of every semantic attention; encoder_levels, encoder_width (the conv
  stem's nf: level i has nf·2^i channels), position_dim (level 0's grid embedding); generator_widths (start conv,
  then each up block), start_size (None: (H, W) // 2^(len − 1)); discriminator_widths, discriminator_scales;
  semantic_masks (False: plain attention, the baseline, same parameters); mask_value (masked logit after the
  1/√d scaling); transformer_norm ("joint" over latents and channels as coded, or "token"); attention ("xla",
  "pallas", "auto": storyjax/kernels); dtype (compute; parameters stay fp32).
  """

  num_labels: int
  latents_per_label: int = 8
  latent_dim: int = 256
  heads: int = 1
  attention_dim: int | None = None
  encoder_levels: int = 7
  encoder_width: int = 16
  position_dim: int = 40
  generator_widths: Sequence[int] = (1024, 1024, 1024, 512, 256, 128, 64)
  start_size: tuple[int, int] | None = None
  discriminator_widths: Sequence[int] = (64, 128, 256, 512)
  discriminator_scales: int = 2
  semantic_masks: bool = True
  mask_value: float = -1e4
  transformer_norm: str = "joint"
  attention: str = "xla"
  dtype: Dtype = jnp.float32

  def setup(self):
    options = SemanticOptions(
      num_heads=self.heads,
      inner_dim=self.attention_dim or self.latent_dim,
      mask_value=self.mask_value,
      implementation=self.attention,
      semantic_masks=self.semantic_masks,
      norm=self.transformer_norm,
    )
    self.encoder = SATEncoder(
      self.num_labels,
      self.latents_per_label,
      self.latent_dim,
      num_levels=self.encoder_levels,
      stem_width=self.encoder_width,
      position_dim=self.position_dim,
      options=options,
      dtype=self.dtype,
    )
    self.generator = SCAMGenerator(
      self.num_labels,
      self.latents_per_label,
      tuple(self.generator_widths),
      start_size=self.start_size,
      options=options,
      dtype=self.dtype,
    )
    self.discriminator = PatchDiscriminator(tuple(self.discriminator_widths), self.discriminator_scales, self.dtype)

  def encode(self, image, labels):
    return self.encoder(image, labels)

  def generate(self, labels, latents, deterministic: bool = True):
    return self.generator(labels, latents, deterministic)

  def discriminate(self, image, labels):
    return self.discriminator(discriminator_input(image, labels, self.num_labels))

  def discriminate_input(self, inputs):
    if inputs.ndim != 4 or inputs.shape[-1] != IMAGE_CHANNELS + self.num_labels:
      raise ValueError(
        f"discriminator inputs must be image ‖ one-hot labels (B, H, W, {IMAGE_CHANNELS + self.num_labels}) "
        f"(discriminator_input), got shape {inputs.shape}"
      )
    return self.discriminator(inputs)

  def __call__(self, image, labels, deterministic: bool = True):
    """→ the reconstruction (B, H, W, 3) and its per-scale logits."""
    reconstruction = self.generate(labels, self.encode(image, labels), deterministic)
    return reconstruction, self.discriminate(reconstruction, labels)
