"""The CLIP text transformer (ViT-B/32's is 12 layers, width 512) in Flax, loaded from a local HF checkpoint.

Current transformers releases have no Flax models, so the network is ours and `convert_hf_state_dict` maps the
checkpoint's tensor names onto it. The output is the final LayerNorm's per-token features without the text
projection: exactly what E.T. stored in `caption_clip/seq` (tokens 0..EOT) and `caption_clip/token` (EOT).
"""

from collections.abc import Sequence
import json
import pathlib
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import transformers

from storyjax.errors import ConfigError, DataError
from storyjax.text.cached_features import CachedTextFeatures
from storyjax.text.hf_files import checkpoint_tensor

Dtype = Any
ACTIVATIONS = {"quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x), "gelu": lambda x: jax.nn.gelu(x, False)}
CONFIG_FIELDS = (
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "max_position_embeddings",
  "layer_norm_eps",
  "hidden_act",
  "eos_token_id",
)
LEGACY_EOS_TOKEN_ID = 2  # configs saved before transformers fixed eos_token_id; HF then takes argmax(token_ids)

CONTEXT_LENGTH = 77  # CLIP's text context, also the length of E.T.'s caption_clip/seq


class CLIPTextTransformer(nn.Module):
  """token ids (B, L) int32 [, attention_mask (B, L) 1 = token, 0 = padding] → last hidden state (B, L, D) after
  the final LayerNorm, as HF `CLIPTextModel(...).last_hidden_state` (pre-LN layers, causal self-attention)."""

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_hidden_layers: int
  num_attention_heads: int
  max_position_embeddings: int
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"
  eos_token_id: int = 49407
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, token_ids, attention_mask=None):
    length = token_ids.shape[-1]
    if length > self.max_position_embeddings:
      raise ValueError(f"{length} tokens exceed CLIP's {self.max_position_embeddings} positions")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act={self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}")
    hidden = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype, name="token_embedding")(
      token_ids
    ) + nn.Embed(self.max_position_embeddings, self.hidden_size, dtype=self.dtype, name="position_embedding")(
      jnp.arange(length)
    )
    mask = nn.make_causal_mask(token_ids)
    if attention_mask is not None:  # as HF: padded keys are hidden from every query
      mask = nn.combine_masks(mask, nn.make_attention_mask(jnp.ones_like(token_ids), attention_mask))
    norm = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)
    for index in range(self.num_hidden_layers):
      prefix = f"layers_{index}"
      hidden = hidden + nn.MultiHeadDotProductAttention(
        self.num_attention_heads, dtype=self.dtype, force_fp32_for_softmax=True, name=f"{prefix}_self_attn"
      )(norm(f"{prefix}_layer_norm1")(hidden), mask=mask)
      normed = norm(f"{prefix}_layer_norm2")(hidden)
      transformed = nn.Dense(self.intermediate_size, dtype=self.dtype, name=f"{prefix}_fc1")(normed)
      hidden = hidden + nn.Dense(self.hidden_size, dtype=self.dtype, name=f"{prefix}_fc2")(
        ACTIVATIONS[self.hidden_act](transformed)
      )
    return norm("final_layer_norm")(hidden)


def text_config(config: dict) -> dict:
  """The text-transformer fields of a CLIPModel (`text_config`) or CLIPTextModel config.json; absent fields take
  `transformers.CLIPTextConfig`'s defaults (ViT-B/32's text tower)."""
  config = config.get("text_config", config)
  defaults = transformers.CLIPTextConfig().to_dict()
  fields = {field: config.get(field, defaults[field]) for field in CONFIG_FIELDS}
  if fields["hidden_act"] not in ACTIVATIONS:
    raise DataError(
      f"CLIP config hidden_act={fields['hidden_act']!r} is not supported; supported: {sorted(ACTIVATIONS)}"
    )
  if fields["hidden_size"] % fields["num_attention_heads"]:
    raise DataError(
      f"CLIP config hidden_size={fields['hidden_size']} is not divisible by "
      f"num_attention_heads={fields['num_attention_heads']}"
    )
  return fields


def eos_positions(token_ids: np.ndarray, eos_token_id: int) -> np.ndarray:
  """token ids (N, L) → index of each row's end-of-text token (N,), HF's rule: the first `eos_token_id`, or
  argmax(token_ids) for legacy configs (OpenAI's rule: EOT has the largest id)."""
  token_ids = np.asarray(token_ids)
  if eos_token_id == LEGACY_EOS_TOKEN_ID:
    return token_ids.argmax(-1)
  is_eos = token_ids == eos_token_id
  if not is_eos.any(-1).all():
    raise DataError(
      f"a tokenised caption has no end-of-text token {eos_token_id}: the CLIP config's "
      f"eos_token_id does not match its tokenizer"
    )
  return is_eos.argmax(-1)


def _hf_tensor(state: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
  """`text_model.<name>` (a CLIPModel's) or `<name>` (a CLIPTextModel's) as float32 of `shape`."""
  return checkpoint_tensor(state, (f"text_model.{name}", name), shape, "CLIP")


def convert_hf_state_dict(state: dict[str, np.ndarray], config: dict) -> dict:
  """HF PyTorch-layout tensors (`text_model.encoder.layers.0.self_attn.q_proj.weight`, …) → our params.

  Linear weights (out, in) are transposed; attention projections are split into heads. Vision tensors, the
  text/visual projections and logit_scale are ignored.
  """
  d, ff, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
  head_dim = d // heads
  linear = lambda name, d_in, d_out: {
    "kernel": _hf_tensor(state, f"{name}.weight", (d_out, d_in)).T,
    "bias": _hf_tensor(state, f"{name}.bias", (d_out,)),
  }
  layer_norm = lambda name: {
    "scale": _hf_tensor(state, f"{name}.weight", (d,)),
    "bias": _hf_tensor(state, f"{name}.bias", (d,)),
  }
  params = {
    "token_embedding": {"embedding": _hf_tensor(state, "embeddings.token_embedding.weight", (config["vocab_size"], d))},
    "position_embedding": {
      "embedding": _hf_tensor(state, "embeddings.position_embedding.weight", (config["max_position_embeddings"], d))
    },
    "final_layer_norm": layer_norm("final_layer_norm"),
  }
  for index in range(config["num_hidden_layers"]):
    hf, ours = f"encoder.layers.{index}", f"layers_{index}"
    attention = {}
    for hf_name, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
      projection = linear(f"{hf}.self_attn.{hf_name}", d, d)
      attention[name] = {
        "kernel": projection["kernel"].reshape(d, heads, head_dim),
        "bias": projection["bias"].reshape(heads, head_dim),
      }
    out = linear(f"{hf}.self_attn.out_proj", d, d)
    attention["out"] = {"kernel": out["kernel"].reshape(heads, head_dim, d), "bias": out["bias"]}
    params.update(
      {
        f"{ours}_self_attn": attention,
        f"{ours}_layer_norm1": layer_norm(f"{hf}.layer_norm1"),
        f"{ours}_layer_norm2": layer_norm(f"{hf}.layer_norm2"),
        f"{ours}_fc1": linear(f"{hf}.mlp.fc1", d, ff),
        f"{ours}_fc2": linear(f"{hf}.mlp.fc2", ff, d),
      }
    )
  return params


def _flatten_flax_msgpack(tree: dict) -> dict[str, np.ndarray]:
  """HF Flax checkpoint nesting (`text_model/encoder/layers/0/self_attn/q_proj/kernel`, in × out) → HF PyTorch
  names and layouts, so one converter serves both files."""
  flat = flax.traverse_util.flatten_dict(tree, sep=".")
  state = {}
  for name, value in flat.items():
    value = np.asarray(value)
    if name.endswith(".kernel"):
      name, value = name[: -len("kernel")] + "weight", value.T
    elif name.endswith(".embedding"):
      name = name[: -len("embedding")] + "weight"
    elif name.endswith(".scale"):
      name = name[: -len("scale")] + "weight"
    state[name] = value
  return state


def load_clip_text(path, dtype: Dtype = jnp.float32):
  """A local HF CLIP directory (config.json, model.safetensors or flax_model.msgpack, tokenizer files) →
  (CLIPTextTransformer, params, tokenizer)."""
  path = pathlib.Path(path)
  config_path = path / "config.json"
  weights = [path / name for name in ("model.safetensors", "flax_model.msgpack") if (path / name).is_file()]
  if not path.is_dir() or not config_path.is_file() or not weights:
    raise DataError(
      f"no CLIP checkpoint at {path}; expected config.json and model.safetensors or "
      f"flax_model.msgpack (a Hugging Face CLIP model saved with save_pretrained)"
    )
  config = text_config(json.loads(config_path.read_text()))
  if weights[0].suffix == ".safetensors":
    state = safetensors.numpy.load_file(weights[0])
  else:
    state = _flatten_flax_msgpack(flax.serialization.msgpack_restore(weights[0].read_bytes()))
  params = convert_hf_state_dict(state, config)
  # transformers builds an empty tokenizer from a directory without vocabulary files instead of failing
  if not (path / "tokenizer.json").is_file() and not all(
    (path / name).is_file() for name in ("vocab.json", "merges.txt")
  ):
    raise DataError(f"no CLIP tokenizer in {path}; expected tokenizer.json or vocab.json and merges.txt")
  tokenizer = transformers.CLIPTokenizer.from_pretrained(str(path))
  return CLIPTextTransformer(**config, dtype=dtype), params, tokenizer


class ClipTextFeatures(CachedTextFeatures):
  """A frozen CLIP text encoder with a per-caption cache.

  encode(captions) → features (N, max_length, D) float32 with rows after end-of-text zeroed, and mask (N,
  max_length) bool, True on tokens 0..EOT (E.T.'s `caption_clip/seq` rows; the EOT row is its `token`).
  Captions are tokenised like OpenAI's `clip.tokenize(truncate=True)` (EOT stays last when truncated) and run
  in fixed-size jitted batches, each distinct caption once.
  """

  def __init__(self, path, max_length: int = CONTEXT_LENGTH, batch_size: int = 64):
    super().__init__("CLIP", max_length, batch_size)
    self.module, self.params, self.tokenizer = load_clip_text(path)
    if not 2 <= max_length <= self.module.max_position_embeddings:
      raise ConfigError(
        f"CLIP max_length={max_length} must be in [2, {self.module.max_position_embeddings}] "
        f"(start and end tokens; the checkpoint's max_position_embeddings)"
      )
    self._forward = jax.jit(lambda params, token_ids: self.module.apply({"params": params}, token_ids))

  @property
  def width(self) -> int:
    return self.module.hidden_size

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """captions (N,) → token ids (N, max_length) int32 (BOS … EOT, then padding) and lengths (N,) = EOT + 1."""
    encoded = self.tokenizer(list(captions), padding="max_length", truncation=True, max_length=self.max_length)
    token_ids = np.asarray(encoded["input_ids"], np.int32)
    return token_ids, eos_positions(token_ids, self.module.eos_token_id) + 1

  def _forward_batch(self, token_ids, mask):
    del mask  # causal attention: the tokens after EOT never reach the rows kept
    return self._forward(self.params, token_ids)

  @staticmethod
  def pooled(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """features (N, L, D), mask (N, L) → the EOT feature (N, D): E.T.'s `caption_clip/token`."""
    return features[np.arange(len(features)), np.asarray(mask).sum(-1) - 1]
