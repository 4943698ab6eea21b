"""The frozen Stable Diffusion 1.5 VAE (diffusers `AutoencoderKL`) in Flax, channels-last, from a local checkpoint.

CAD's latent space: images centre-cropped, resized and normalised to [−1, 1] are encoded to
`latent_dist.mean × scaling_factor` (0.18215 for SD-1.5); latents are divided by it before decoding.
`convert_diffusers_state_dict` maps the diffusers tensor names (both attention naming schemes) onto our modules.
"""

from collections.abc import Sequence
import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from storyjax.errors import ConfigError
from storyjax.layers.attention import MultiHeadAttention
from storyjax.layers.conv import conv

Dtype = Any
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SD15_SCALING_FACTOR = 0.18215
# diffusers' AutoencoderKL defaults for the fields we read (SD-1.5's config.json sets all but scaling_factor).
CONFIG_DEFAULTS = {
  "in_channels": 3,
  "out_channels": 3,
  "down_block_types": ("DownEncoderBlock2D",),
  "up_block_types": ("UpDecoderBlock2D",),
  "block_out_channels": (64,),
  "layers_per_block": 1,
  "latent_channels": 4,
  "norm_num_groups": 32,
  "scaling_factor": SD15_SCALING_FACTOR,
}
# Options of newer AutoencoderKL configs that change the network or the latent convention; only these values are
# implemented (SD-1.5's, and SDXL's).
SUPPORTED_OPTIONS = {
  "act_fn": "silu",
  "use_quant_conv": True,
  "use_post_quant_conv": True,
  "mid_block_add_attention": True,
  "shift_factor": None,
  "latents_mean": None,
  "latents_std": None,
}
HOW_TO_GET = (
  "save one where diffusers is installed with AutoencoderKL.from_pretrained('stable-diffusion-v1-5/"
  "stable-diffusion-v1-5', subfolder='vae').save_pretrained(DIR) (the mirror of the removed "
  "runwayml/stable-diffusion-v1-5) and copy DIR here; of a whole pipeline directory, pass its vae/ subfolder"
)
# Attention tensor names: current diffusers, then the older AttentionBlock's.
ATTENTION_NAMES = {
  "query": ("to_q", "query"),
  "key": ("to_k", "key"),
  "value": ("to_v", "value"),
  "out": ("to_out.0", "proj_attn"),
}


def group_norm(num_groups: int, dtype: Dtype, name: str) -> nn.GroupNorm:
  """torch's GroupNorm(eps 1e-6) over (..., C), statistics in fp32.

  Not layers.norms.make_norm: that GroupNorm takes E[x²] − E[x]², which loses fp32 digits on groups whose mean is
  large against their spread; torch (and this) subtracts the mean first.
  """
  return nn.GroupNorm(num_groups=num_groups, epsilon=1e-6, dtype=dtype, use_fast_variance=False, name=name)


class ResnetBlock(nn.Module):
  """diffusers' ResnetBlock2D without time embedding: (B, H, W, Cin) → (B, H, W, features).

  input (through a 1×1 `conv_shortcut` when Cin ≠ features) + conv(SiLU(norm2(conv(SiLU(norm1(input)))))); its
  dropout is 0 in every AutoencoderKL.
  """

  features: int
  num_groups: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    hidden = nn.silu(group_norm(self.num_groups, self.dtype, "norm1")(inputs))
    hidden = conv(self.features, (3, 3), dtype=self.dtype, name="conv1")(hidden)
    hidden = nn.silu(group_norm(self.num_groups, self.dtype, "norm2")(hidden))
    hidden = conv(self.features, (3, 3), dtype=self.dtype, name="conv2")(hidden)
    if inputs.shape[-1] != self.features:
      inputs = conv(self.features, (1, 1), dtype=self.dtype, name="conv_shortcut")(inputs)
    return inputs + hidden


class MidBlock(nn.Module):
  """diffusers' UNetMidBlock2D of a VAE: resnet → single-head self-attention over the H·W positions (GroupNorm
  first, residual) → resnet, (B, H, W, C) → (B, H, W, C)."""

  num_groups: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs):
    channels = inputs.shape[-1]
    hidden = ResnetBlock(channels, self.num_groups, self.dtype, name="resnet_0")(inputs)
    tokens = group_norm(self.num_groups, self.dtype, "attention_norm")(hidden)
    tokens = tokens.reshape(hidden.shape[0], -1, channels)
    attended = MultiHeadAttention(1, self.dtype, name="attention")(tokens, tokens)
    hidden = hidden + attended.reshape(hidden.shape)
    return ResnetBlock(channels, self.num_groups, self.dtype, name="resnet_1")(hidden)


class VAEEncoder(nn.Module):
  """images (B, H, W, in_channels) in [−1, 1] → the latent distribution's mean (B, H/f, W/f, latent_channels),
  unscaled, with f = 2^(len(block_out_channels) − 1) (8 for SD-1.5): diffusers' Encoder, then quant_conv."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  norm_num_groups: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images):
    hidden = conv(self.block_out_channels[0], (3, 3), dtype=self.dtype, name="conv_in")(images)
    for index, channels in enumerate(self.block_out_channels):
      for layer in range(self.layers_per_block):
        hidden = ResnetBlock(channels, self.norm_num_groups, self.dtype, name=f"down_{index}_resnet_{layer}")(hidden)
      if index < len(self.block_out_channels) - 1:  # diffusers pads right and bottom by one, then a VALID conv
        hidden = conv(channels, (3, 3), (2, 2), ((0, 1), (0, 1)), dtype=self.dtype, name=f"down_{index}_downsample")(
          hidden
        )
    hidden = MidBlock(self.norm_num_groups, self.dtype, name="mid")(hidden)
    hidden = nn.silu(group_norm(self.norm_num_groups, self.dtype, "conv_norm_out")(hidden))
    moments = conv(2 * self.latent_channels, (3, 3), dtype=self.dtype, name="conv_out")(hidden)
    moments = conv(2 * self.latent_channels, (1, 1), dtype=self.dtype, name="quant_conv")(moments)
    return moments[..., : self.latent_channels].astype(jnp.float32)  # the rest is the log-variance


class VAEDecoder(nn.Module):
  """latents (B, h, w, latent_channels), unscaled → images (B, h·f, w·f, out_channels), about [−1, 1] and not
  clipped: post_quant_conv, then diffusers' Decoder (nearest ×2 upsampling)."""

  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  norm_num_groups: int
  out_channels: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, latents):
    hidden = conv(self.latent_channels, (1, 1), dtype=self.dtype, name="post_quant_conv")(latents)
    hidden = conv(self.block_out_channels[-1], (3, 3), dtype=self.dtype, name="conv_in")(hidden)
    hidden = MidBlock(self.norm_num_groups, self.dtype, name="mid")(hidden)
    for index, channels in enumerate(reversed(self.block_out_channels)):
      for layer in range(self.layers_per_block + 1):
        hidden = ResnetBlock(channels, self.norm_num_groups, self.dtype, name=f"up_{index}_resnet_{layer}")(hidden)
      if index < len(self.block_out_channels) - 1:
        hidden = jnp.repeat(jnp.repeat(hidden, 2, axis=1), 2, axis=2)
        hidden = conv(channels, (3, 3), dtype=self.dtype, name=f"up_{index}_upsample")(hidden)
    hidden = nn.silu(group_norm(self.norm_num_groups, self.dtype, "conv_norm_out")(hidden))
    return conv(self.out_channels, (3, 3), dtype=self.dtype, name="conv_out")(hidden).astype(jnp.float32)


def vae_config(config: dict) -> dict:
  """An AutoencoderKL config.json → CONFIG_DEFAULTS' fields (absent ones take diffusers' defaults), checked."""
  if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
    raise ConfigError(f"the VAE config.json describes {config['_class_name']!r}, not an AutoencoderKL")
  unsupported = {
    field: config[field] for field, value in SUPPORTED_OPTIONS.items() if config.get(field, value) != value
  }
  if unsupported:
    raise ConfigError(
      f"the VAE config.json sets {unsupported}, which this SD-1.5 AutoencoderKL does not implement; "
      f"supported: {SUPPORTED_OPTIONS}"
    )
  fields = {field: config.get(field, default) for field, default in CONFIG_DEFAULTS.items()}
  for field in ("down_block_types", "up_block_types", "block_out_channels"):
    fields[field] = tuple(fields[field])
  num_blocks = len(fields["block_out_channels"])
  for field, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
    if fields[field] != (block,) * num_blocks:
      raise ConfigError(
        f"the VAE config.json has {field}={list(fields[field])}; expected {num_blocks} × {block!r}, one per "
        f"block_out_channels entry"
      )
  if any(channels % fields["norm_num_groups"] for channels in fields["block_out_channels"]):
    raise ConfigError(
      f"the VAE config.json's block_out_channels {list(fields['block_out_channels'])} are not all divisible by "
      f"norm_num_groups={fields['norm_num_groups']}"
    )
  return fields


class _TensorReader:
  """Takes tensors out of a diffusers state dict by name, checking shapes; remembers which were taken."""

  def __init__(self, state: dict[str, np.ndarray]):
    self.state, self.used = state, set()

  def get(self, names: Sequence[str], shape: tuple[int, ...]) -> np.ndarray:
    """The first of `names` (alternative spellings of one tensor) present, as float32 of `shape`."""
    for name in names:
      if name in self.state:
        tensor = np.asarray(self.state[name], np.float32)
        if tensor.shape != shape:
          raise ConfigError(
            f"SD VAE checkpoint tensor {name} has shape {tensor.shape}, expected {shape} from its config.json"
          )
        self.used.add(name)
        return tensor
    also = f" (or {', '.join(names[1:])})" if len(names) > 1 else ""
    raise ConfigError(f"SD VAE checkpoint has no tensor {names[0]}{also}; is it an AutoencoderKL checkpoint?")

  def conv(self, name: str, channels_in: int, channels_out: int, size: int) -> dict:
    """torch Conv2d (O, I, kh, kw) → flax Conv {kernel (kh, kw, I, O), bias (O,)}."""
    kernel = self.get([f"{name}.weight"], (channels_out, channels_in, size, size))
    return {"kernel": kernel.transpose(2, 3, 1, 0), "bias": self.get([f"{name}.bias"], (channels_out,))}

  def norm(self, name: str, channels: int) -> dict:
    return {"scale": self.get([f"{name}.weight"], (channels,)), "bias": self.get([f"{name}.bias"], (channels,))}

  def resnet(self, name: str, channels_in: int, channels_out: int) -> dict:
    params = {
      "norm1": self.norm(f"{name}.norm1", channels_in),
      "conv1": self.conv(f"{name}.conv1", channels_in, channels_out, 3),
      "norm2": self.norm(f"{name}.norm2", channels_out),
      "conv2": self.conv(f"{name}.conv2", channels_out, channels_out, 3),
    }
    if channels_in != channels_out:
      params["conv_shortcut"] = self.conv(f"{name}.conv_shortcut", channels_in, channels_out, 1)
    return params

  def mid_block(self, name: str, channels: int) -> dict:
    attention = f"{name}.attentions.0"
    projections = {}
    for ours, spellings in ATTENTION_NAMES.items():  # torch Linear (out, in) → flax Dense (in, out)
      projections[ours] = {
        "kernel": self.get([f"{attention}.{spelling}.weight" for spelling in spellings], (channels, channels)).T,
        "bias": self.get([f"{attention}.{spelling}.bias" for spelling in spellings], (channels,)),
      }
    return {
      "resnet_0": self.resnet(f"{name}.resnets.0", channels, channels),
      "attention_norm": self.norm(f"{attention}.group_norm", channels),
      "attention": projections,
      "resnet_1": self.resnet(f"{name}.resnets.1", channels, channels),
    }


def convert_diffusers_state_dict(state: dict[str, np.ndarray], config: dict) -> dict:
  """diffusers AutoencoderKL tensors (`encoder.down_blocks.0.resnets.0.conv1.weight`, …) and a `vae_config` →
  {"encoder": VAEEncoder params, "decoder": VAEDecoder params}.

  Conv kernels (O, I, kh, kw) become (kh, kw, I, O), Linear weights (out, in) become (in, out). A missing or
  wrongly shaped tensor, or one the config's architecture leaves unused, is a ConfigError naming it.
  """
  reader = _TensorReader(state)
  channels, latent = config["block_out_channels"], config["latent_channels"]
  layers = config["layers_per_block"]
  encoder = {"conv_in": reader.conv("encoder.conv_in", config["in_channels"], channels[0], 3)}
  channels_in = channels[0]
  for index, channels_out in enumerate(channels):
    for layer in range(layers):
      name = f"encoder.down_blocks.{index}.resnets.{layer}"
      encoder[f"down_{index}_resnet_{layer}"] = reader.resnet(name, channels_in, channels_out)
      channels_in = channels_out
    if index < len(channels) - 1:
      name = f"encoder.down_blocks.{index}.downsamplers.0.conv"
      encoder[f"down_{index}_downsample"] = reader.conv(name, channels_out, channels_out, 3)
  encoder.update(
    mid=reader.mid_block("encoder.mid_block", channels[-1]),
    conv_norm_out=reader.norm("encoder.conv_norm_out", channels[-1]),
    conv_out=reader.conv("encoder.conv_out", channels[-1], 2 * latent, 3),
    quant_conv=reader.conv("quant_conv", 2 * latent, 2 * latent, 1),
  )
  decoder = {
    "post_quant_conv": reader.conv("post_quant_conv", latent, latent, 1),
    "conv_in": reader.conv("decoder.conv_in", latent, channels[-1], 3),
    "mid": reader.mid_block("decoder.mid_block", channels[-1]),
  }
  channels_in = channels[-1]
  for index, channels_out in enumerate(reversed(channels)):
    for layer in range(layers + 1):
      name = f"decoder.up_blocks.{index}.resnets.{layer}"
      decoder[f"up_{index}_resnet_{layer}"] = reader.resnet(name, channels_in, channels_out)
      channels_in = channels_out
    if index < len(channels) - 1:
      name = f"decoder.up_blocks.{index}.upsamplers.0.conv"
      decoder[f"up_{index}_upsample"] = reader.conv(name, channels_out, channels_out, 3)
  decoder.update(
    conv_norm_out=reader.norm("decoder.conv_norm_out", channels[0]),
    conv_out=reader.conv("decoder.conv_out", channels[0], config["out_channels"], 3),
  )
  unused = sorted(set(state) - reader.used)
  if unused:
    raise ConfigError(
      f"SD VAE checkpoint tensors {unused[:5]}{' …' if len(unused) > 5 else ''} ({len(unused)} in all) are not "
      f"part of the architecture its config.json describes; the config does not match the weights"
    )
  return {"encoder": encoder, "decoder": decoder}


class StableDiffusionVAE:
  """A frozen AutoencoderKL with CAD's latent convention, jitted.

  encode(images (B, H, W, in_channels) in [−1, 1]) → latent means × scaling_factor (B, H/f, W/f, latent_channels);
  decode(latents (B, h, w, latent_channels)) → images (B, h·f, w·f, out_channels) in about [−1, 1], unclipped,
  dividing by scaling_factor first. f = `downsampling_factor` (8 for SD-1.5). Both return float32 jax arrays.
  """

  def __init__(self, config: dict, params: dict, dtype: Dtype = jnp.float32):
    architecture = {
      field: config[field] for field in ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups")
    }
    self.config, self.params = config, params
    self.encoder = VAEEncoder(**architecture, dtype=dtype)
    self.decoder = VAEDecoder(**architecture, out_channels=config["out_channels"], dtype=dtype)
    scaling_factor = config["scaling_factor"]
    self._encode = jax.jit(lambda params, images: self.encoder.apply({"params": params}, images) * scaling_factor)
    self._decode = jax.jit(lambda params, latents: self.decoder.apply({"params": params}, latents / scaling_factor))

  @property
  def downsampling_factor(self) -> int:
    return 2 ** (len(self.config["block_out_channels"]) - 1)

  @property
  def latent_channels(self) -> int:
    return self.config["latent_channels"]

  @property
  def scaling_factor(self) -> float:
    return self.config["scaling_factor"]

  @staticmethod
  def _check(name: str, array, channels: int) -> None:
    if np.ndim(array) != 4 or np.shape(array)[-1] != channels:
      raise ValueError(f"SD VAE {name} must be (B, H, W, {channels}) channels-last, got shape {np.shape(array)}")

  def encode(self, images) -> jax.Array:
    """images (B, H, W, in_channels) in [−1, 1] → scaled latent means (B, H/f, W/f, latent_channels)."""
    self._check("images", images, self.config["in_channels"])
    return self._encode(self.params["encoder"], images)

  def decode(self, latents) -> jax.Array:
    """scaled latents (B, h, w, latent_channels) → images (B, h·f, w·f, out_channels) in about [−1, 1]."""
    self._check("latents", latents, self.latent_channels)
    return self._decode(self.params["decoder"], latents)


def load_sd_vae(path, dtype: Dtype = jnp.float32) -> StableDiffusionVAE:
  """A local diffusers AutoencoderKL directory (config.json, diffusion_pytorch_model.safetensors) → the VAE with
  fp32 parameters, computing in `dtype` (norms and softmax in fp32)."""
  path = pathlib.Path(path)
  missing = [name for name in ("config.json", WEIGHTS_FILE) if not (path / name).is_file()]
  if missing:
    raise ConfigError(
      f"no Stable Diffusion VAE checkpoint at {path}: expected config.json and {WEIGHTS_FILE}, "
      f"{'the directory does not exist' if not path.is_dir() else 'missing ' + ', '.join(missing)}; {HOW_TO_GET}"
    )
  try:
    config = json.loads((path / "config.json").read_text())
  except json.JSONDecodeError as error:
    raise ConfigError(f"{path / 'config.json'} is not valid JSON ({error}); {HOW_TO_GET}") from error
  try:
    state = safetensors.numpy.load_file(path / WEIGHTS_FILE)
  except safetensors.SafetensorError as error:
    raise ConfigError(f"{path / WEIGHTS_FILE} is not a readable safetensors file ({error}); {HOW_TO_GET}") from error
  config = vae_config(config)
  return StableDiffusionVAE(config, convert_diffusers_state_dict(state, config), dtype)
