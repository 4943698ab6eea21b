"""The T5 v1.1 / FLAN-T5 encoder (FLAN-T5-XL: 24 layers, width 2048) in Flax, loaded from a local HF checkpoint.

Current transformers releases have no Flax models, so the network is ours and `convert_hf_state_dict` maps the
checkpoint's tensor names onto it. The output is HF `T5EncoderModel(...).last_hidden_state`: the last block's output
after the final RMS norm, CAD's text tokens (fp32, d = 2048 for `google/flan-t5-xl`).
"""

from collections.abc import Mapping, Sequence
import json
import math
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import transformers

from storyjax.errors import ConfigError, DataError
from storyjax.layers.norms import make_norm
from storyjax.text.cached_features import CachedTextFeatures
from storyjax.text.hf_files import checkpoint_tensor, read_tensors, weight_files

Dtype = Any
# feed_forward_proj → (activation, gated), as transformers.T5Config reads it ("gated-gelu" means the tanh GELU)
FEED_FORWARDS = {
  "relu": (jax.nn.relu, False),
  "gelu": (lambda x: jax.nn.gelu(x, approximate=False), False),
  "gated-relu": (jax.nn.relu, True),
  "gated-gelu": (lambda x: jax.nn.gelu(x, approximate=True), True),
}
CONFIG_FIELDS = (
  "vocab_size",
  "d_model",
  "d_kv",
  "d_ff",
  "num_layers",
  "num_heads",
  "relative_attention_num_buckets",
  "relative_attention_max_distance",
  "layer_norm_epsilon",
  "feed_forward_proj",
)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
MAX_LENGTH = 128  # CAD's prompt length at inference (cad/models/preprocessing.py)
GET_CHECKPOINT = (
  "save one with transformers where there is internet: "
  "T5EncoderModel.from_pretrained('google/flan-t5-xl').save_pretrained(dir) and "
  "AutoTokenizer.from_pretrained('google/flan-t5-xl').save_pretrained(dir)"
)


def relative_position_bucket(relative_position, num_buckets: int = 32, max_distance: int = 128):
  """key − query offsets (...) int → T5's bidirectional bucket ids (...) in [0, num_buckets).

  Each direction has num_buckets / 2 buckets (keys after the query take the upper half): offsets below
  num_buckets / 4 get their own bucket, longer ones logarithmic bins up to max_distance, beyond which all share
  the last. HF's `_relative_position_bucket(bidirectional=True)`, including its float32 rounding.
  """
  half = num_buckets // 2
  max_exact = half // 2
  distance = jnp.abs(relative_position)
  # the maximum only keeps log(0) out of the branch that jnp.where discards
  log_ratio = jnp.log(jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact) / math.log(
    max_distance / max_exact
  )
  far = jnp.minimum(max_exact + (log_ratio * (half - max_exact)).astype(jnp.int32), half - 1)
  return (relative_position > 0) * half + jnp.where(distance < max_exact, distance, far)


class T5Encoder(nn.Module):
  """token ids (B, L) int32 [, attention_mask (B, L) 1 = token, 0 = padding] → last hidden state (B, L, d_model)
  after the final RMS norm, as HF `T5EncoderModel(...).last_hidden_state` (pre-norm blocks, unscaled attention
  logits plus a relative position bias shared by every block, padded keys hidden from every query)."""

  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int
  num_heads: int
  relative_attention_num_buckets: int
  relative_attention_max_distance: int
  layer_norm_epsilon: float
  feed_forward_proj: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, token_ids, attention_mask=None):
    if self.feed_forward_proj not in FEED_FORWARDS:
      raise ValueError(f"feed_forward_proj={self.feed_forward_proj!r}; supported: {sorted(FEED_FORWARDS)}")
    activation, gated = FEED_FORWARDS[self.feed_forward_proj]
    batch, length = token_ids.shape
    inner = self.num_heads * self.d_kv
    embed = lambda rows, width, axes, name, dtype: nn.Embed(
      rows,
      width,
      dtype=dtype,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), axes),
      name=name,
    )
    linear = lambda width, axes, name: nn.Dense(
      width,
      use_bias=False,
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
      name=name,
    )
    norm = lambda name: make_norm("rms", self.dtype, name, epsilon=self.layer_norm_epsilon)
    hidden = embed(self.vocab_size, self.d_model, ("vocab", "embed"), "shared", self.dtype)(token_ids)
    positions = jnp.arange(length)
    buckets = relative_position_bucket(
      positions[None, :] - positions[:, None], self.relative_attention_num_buckets, self.relative_attention_max_distance
    )
    position_bias = embed(  # (Lq, Lk, H) → (1, H, Lq, Lk), fp32 like the logits it is added to
      self.relative_attention_num_buckets, self.num_heads, (None, "heads"), "relative_attention_bias", jnp.float32
    )(buckets).transpose(2, 0, 1)[None]
    key_mask = None if attention_mask is None else jnp.asarray(attention_mask, bool)[:, None, None, :]
    split_heads = lambda name, inputs: linear(inner, ("embed", "heads"), name)(inputs).reshape(
      batch, length, self.num_heads, self.d_kv
    )
    expand = lambda name, inputs: linear(self.d_ff, ("embed", "mlp"), name)(inputs)
    for index in range(self.num_layers):
      prefix = f"block_{index}"
      normed = norm(f"{prefix}_layer_norm_0")(hidden)
      query, key, value = (split_heads(f"{prefix}_{name}", normed) for name in "qkv")
      # T5 folds the 1/sqrt(d_kv) into its initialisation, so the logits are not scaled
      attended = jax.nn.dot_product_attention(query, key, value, bias=position_bias, mask=key_mask, scale=1.0)
      hidden = hidden + linear(self.d_model, ("heads", "embed"), f"{prefix}_o")(attended.reshape(batch, length, inner))
      normed = norm(f"{prefix}_layer_norm_1")(hidden)
      if gated:
        transformed = activation(expand(f"{prefix}_wi_0", normed)) * expand(f"{prefix}_wi_1", normed)
      else:
        transformed = activation(expand(f"{prefix}_wi", normed))
      hidden = hidden + linear(self.d_model, ("mlp", "embed"), f"{prefix}_wo")(transformed)
    return norm("final_layer_norm")(hidden)


def t5_config(config: dict) -> dict:
  """The encoder fields of a T5 config.json; absent fields take `transformers.T5Config`'s defaults (t5-small)."""
  defaults = transformers.T5Config().to_dict()
  fields = {field: config.get(field, defaults[field]) for field in CONFIG_FIELDS}
  if fields["feed_forward_proj"] not in FEED_FORWARDS:
    raise DataError(
      f"T5 config feed_forward_proj={fields['feed_forward_proj']!r} is not supported; "
      f"supported: {sorted(FEED_FORWARDS)}"
    )
  return fields


def convert_hf_state_dict(state: Mapping[str, np.ndarray], config: dict) -> dict:
  """HF PyTorch-layout tensors (`encoder.block.0.layer.0.SelfAttention.q.weight`, …) → our params.

  Linear weights (out, in) are transposed. The embedding is `shared.weight` or its tied copy
  `encoder.embed_tokens.weight`; decoder tensors and `lm_head` are ignored.
  """
  d, inner, ff = config["d_model"], config["num_heads"] * config["d_kv"], config["d_ff"]
  get = lambda name, shape: checkpoint_tensor(state, (name,), shape, "T5")
  linear = lambda name, d_in, d_out: {"kernel": get(f"{name}.weight", (d_out, d_in)).T}
  params = {
    "shared": {
      "embedding": checkpoint_tensor(
        state, ("shared.weight", "encoder.embed_tokens.weight"), (config["vocab_size"], d), "T5"
      )
    },
    "relative_attention_bias": {
      "embedding": get(
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        (config["relative_attention_num_buckets"], config["num_heads"]),
      )
    },
    "final_layer_norm": {"scale": get("encoder.final_layer_norm.weight", (d,))},
  }
  gated = FEED_FORWARDS[config["feed_forward_proj"]][1]
  for index in range(config["num_layers"]):
    hf, ours = f"encoder.block.{index}.layer", f"block_{index}"
    for name in "qkv":
      params[f"{ours}_{name}"] = linear(f"{hf}.0.SelfAttention.{name}", d, inner)
    params[f"{ours}_o"] = linear(f"{hf}.0.SelfAttention.o", inner, d)
    for sublayer in (0, 1):
      params[f"{ours}_layer_norm_{sublayer}"] = {"scale": get(f"{hf}.{sublayer}.layer_norm.weight", (d,))}
    for name in ("wi_0", "wi_1") if gated else ("wi",):
      params[f"{ours}_{name}"] = linear(f"{hf}.1.DenseReluDense.{name}", d, ff)
    params[f"{ours}_wo"] = linear(f"{hf}.1.DenseReluDense.wo", ff, d)
  return params


def load_t5_encoder(path, dtype: Dtype = jnp.float32):
  """A local HF T5 directory (config.json, model.safetensors or its sharded index, tokenizer.json or spiece.model)
  → (T5Encoder, params, tokenizer)."""
  path = pathlib.Path(path)
  config_path = path / "config.json"
  if not path.is_dir() or not config_path.is_file():
    raise ConfigError(f"no T5 checkpoint at {path} (config.json missing); {GET_CHECKPOINT}")
  config = t5_config(json.loads(config_path.read_text()))
  files = weight_files(path, "T5", GET_CHECKPOINT)
  # transformers builds an empty tokenizer from a directory without vocabulary files instead of failing
  if not any((path / name).is_file() for name in TOKENIZER_FILES):
    raise ConfigError(f"no T5 tokenizer in {path}; expected one of {TOKENIZER_FILES}; {GET_CHECKPOINT}")
  # a T5ForConditionalGeneration's decoder is not read
  params = convert_hf_state_dict(read_tensors(files, ("shared.", "encoder.")), config)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  return T5Encoder(**config, dtype=dtype), params, tokenizer


class T5TextFeatures(CachedTextFeatures):
  """A frozen T5 encoder with a per-caption cache.

  encode(captions) → features (N, max_length, d_model) float32 with padded rows zeroed, and mask (N, max_length)
  bool, True on the caption's tokens and its closing `</s>` (CAD's zero-padded text tokens and mask). Captions are
  truncated to max_length (`</s>` kept last) and run in fixed-size jitted batches, each distinct caption once.
  """

  def __init__(self, path, max_length: int = MAX_LENGTH, batch_size: int = 64, dtype: Dtype = jnp.float32):
    if max_length < 1:
      raise ConfigError(f"T5 max_length={max_length} must be at least 1 (the closing </s>)")
    super().__init__("T5", max_length, batch_size)
    self.module, self.params, self.tokenizer = load_t5_encoder(path, dtype)
    self._forward = jax.jit(lambda params, token_ids, mask: self.module.apply({"params": params}, token_ids, mask))

  @property
  def width(self) -> int:
    return self.module.d_model

  def tokenize(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """captions (N,) → token ids (N, max_length) int32 (tokens, `</s>`, then padding) and lengths (N,)."""
    encoded = self.tokenizer(
      list(captions), padding="max_length", padding_side="right", truncation=True, max_length=self.max_length
    )
    return np.asarray(encoded["input_ids"], np.int32), np.asarray(encoded["attention_mask"]).sum(-1)

  def _forward_batch(self, token_ids, mask):
    return self._forward(self.params, token_ids, mask)
