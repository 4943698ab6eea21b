"""A frozen decoder-only causal language model (the Llama / Mistral / Qwen2 layout) in Flax, loaded from a local HF
checkpoint, with KV-cached generation: the Hugging Face transformers answerer.

Current transformers releases have no Flax models, so the network is ours and `convert_hf_state_dict` maps the
checkpoint's tensor names onto it; transformers supplies the tokenizer, the chat template and the config's defaults.
Each block is pre-norm: h += o(attention(rope(q), rope(k), v)) of RMSNorm(h), then h += down(silu(gate) · up) of
RMSNorm(h); logits = lm_head(RMSNorm(h)), lm_head tied to the embedding when the config says so.
"""

from collections.abc import Mapping, Sequence
import functools
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
from storyjax.layers.mlp import dense
from storyjax.layers.norms import make_norm
from storyjax.text.hf_files import checkpoint_tensor, read_tensors, weight_files

Dtype = Any
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
# prompts are left-padded to a multiple of this, so a batch of a new length seldom compiles a new program
PROMPT_BUCKET = 64
GET_CHECKPOINT = (
  "save one with transformers where there is internet: "
  "AutoModelForCausalLM.from_pretrained('Qwen/Qwen2.5-0.5B-Instruct').save_pretrained(dir, safe_serialization=True) "
  "and AutoTokenizer.from_pretrained('Qwen/Qwen2.5-0.5B-Instruct').save_pretrained(dir)"
)
# tensors a checkpoint may hold that the network does not need (older Llama saves kept RoPE's frequencies)
IGNORED_TENSOR_SUFFIXES = (".rotary_emb.inv_freq",)


def rotary_embedding(positions, head_dim: int, theta: float):
  """positions (B, L) int → cos, sin (B, L, head_dim) float32: HF's default RoPE, angle_i = position · θ^(−2i/d)
  for i < d/2 computed in fp32, each angle twice (the two halves that rotate_half pairs)."""
  inverse_frequency = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inverse_frequency
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(inputs, cos, sin):
  """inputs (B, L, H, Dh) rotated by cos, sin (B, L, Dh): x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁)."""
  first, second = jnp.split(inputs, 2, axis=-1)
  rotated = jnp.concatenate([-second, first], axis=-1)
  cos, sin = cos[:, :, None, :].astype(inputs.dtype), sin[:, :, None, :].astype(inputs.dtype)
  return inputs * cos + rotated * sin


class DecoderLM(nn.Module):
  """token ids (B, T) int32 at positions (B, T), key_mask (B, S) bool → logits (B, T, V) float32 and the cache.

  Without a cache the keys are the T tokens themselves (S = T). With one (per layer a (keys, values) pair, each
  (B, S, K, Dh)) the tokens' keys and values are written at slots cache_index … cache_index + T − 1 and queries
  attend over all S slots; the updated cache is returned (None without one). Token t sees slot s when
  s ≤ cache_index + t (causal in slot order) and key_mask[b, s] (padding and unwritten slots are False or lie
  ahead). `last_only` gives the last token's logits alone, (B, 1, V). Grouped-query attention: K key/value heads
  serve the num_heads query heads in consecutive groups, as HF's repeat_kv.
  """

  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float
  rope_theta: float
  qkv_bias: bool
  output_bias: bool
  tie_word_embeddings: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, token_ids, positions, key_mask, cache=None, cache_index=0, last_only: bool = False):
    batch, length = token_ids.shape
    embed = nn.Embed(
      self.vocab_size,
      self.hidden_size,
      dtype=self.dtype,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
      name="embed_tokens",
    )
    norm = lambda name: make_norm("rms", self.dtype, name, epsilon=self.rms_norm_eps)
    linear = lambda width, axes, name, bias=False: dense(width, axes, self.dtype, name, use_bias=bias)
    cos, sin = rotary_embedding(positions, self.head_dim, self.rope_theta)
    hidden = embed(token_ids)
    num_slots = length if cache is None else cache[0][0].shape[1]
    causal = jnp.arange(num_slots)[None, :] <= cache_index + jnp.arange(length)[:, None]  # (T, S)
    mask = causal[None, None] & jnp.asarray(key_mask, bool)[:, None, None, :]  # (B, 1, T, S)
    project = lambda name, heads, inputs: linear(heads * self.head_dim, ("embed", "heads"), name, self.qkv_bias)(
      inputs
    ).reshape(batch, length, heads, self.head_dim)  # (B, T, D) → (B, T, heads, Dh)
    new_cache = []
    for index in range(self.num_layers):
      prefix = f"layer_{index}"
      normed = norm(f"{prefix}_input_norm")(hidden)
      query = apply_rotary(project(f"{prefix}_q_proj", self.num_heads, normed), cos, sin)
      key = apply_rotary(project(f"{prefix}_k_proj", self.num_kv_heads, normed), cos, sin)
      value = project(f"{prefix}_v_proj", self.num_kv_heads, normed)
      if cache is not None:
        start = (0, cache_index, 0, 0)
        key = jax.lax.dynamic_update_slice(cache[index][0], key.astype(cache[index][0].dtype), start)
        value = jax.lax.dynamic_update_slice(cache[index][1], value.astype(cache[index][1].dtype), start)
        new_cache.append((key, value))
      # logits scaled by 1/sqrt(head_dim), softmax in fp32
      attended = jax.nn.dot_product_attention(query, key, value, mask=mask)
      attended = attended.reshape(batch, length, self.num_heads * self.head_dim)
      hidden = hidden + linear(self.hidden_size, ("heads", "embed"), f"{prefix}_o_proj", self.output_bias)(attended)
      normed = norm(f"{prefix}_post_attention_norm")(hidden)
      gate = linear(self.intermediate_size, ("embed", "mlp"), f"{prefix}_gate_proj")(normed)
      up = linear(self.intermediate_size, ("embed", "mlp"), f"{prefix}_up_proj")(normed)
      hidden = hidden + linear(self.hidden_size, ("mlp", "embed"), f"{prefix}_down_proj")(nn.silu(gate) * up)
    if last_only:
      hidden = hidden[:, -1:]
    hidden = norm("norm")(hidden)
    if self.tie_word_embeddings:
      logits = embed.attend(hidden)
    else:
      logits = linear(self.vocab_size, ("embed", "vocab"), "lm_head")(hidden)
    return logits.astype(jnp.float32), (None if cache is None else tuple(new_cache))


def empty_cache(module: DecoderLM, batch: int, num_slots: int) -> tuple:
  """Per layer a zero (keys, values) pair, each (B, S, K, Dh) in the compute dtype."""
  shape = (batch, num_slots, module.num_kv_heads, module.head_dim)
  return tuple((jnp.zeros(shape, module.dtype), jnp.zeros(shape, module.dtype)) for _ in range(module.num_layers))


def causal_lm_config(path: pathlib.Path) -> tuple[dict, int, int | None]:
  """A checkpoint directory's config.json → (DecoderLM fields, max_position_embeddings, sliding window or None).

  Absent fields take transformers' defaults for the model_type (its config class also reads a v5
  `rope_parameters` or a v4 `rope_theta` / `rope_scaling`).
  """
  config_path = path / "config.json"
  model_type = json.loads(config_path.read_text()).get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ConfigError(
      f"{config_path} has model_type={model_type!r}; storyjax's causal LM supports {SUPPORTED_MODEL_TYPES}"
    )
  config = transformers.AutoConfig.from_pretrained(str(path))
  rope = config.rope_parameters or {}
  rope_type = rope.get("rope_type", "default")
  if rope_type != "default":
    raise DataError(
      f"{config_path}: RoPE scaling {rope_type!r} (rope_scaling / rope_parameters) is unsupported; "
      "only the default RoPE (rope_scaling null)"
    )
  if config.hidden_act != "silu":
    raise DataError(f"{config_path}: hidden_act={config.hidden_act!r} is unsupported; only 'silu'")
  if getattr(config, "mlp_bias", False):
    raise DataError(f"{config_path}: mlp_bias=true is unsupported")
  num_kv_heads = config.num_key_value_heads or config.num_attention_heads
  if config.num_attention_heads % num_kv_heads:
    raise DataError(
      f"{config_path}: num_attention_heads={config.num_attention_heads} is not a multiple of "
      f"num_key_value_heads={num_kv_heads}"
    )
  attention_bias = bool(getattr(config, "attention_bias", False))
  fields = {
    "vocab_size": config.vocab_size,
    "hidden_size": config.hidden_size,
    "intermediate_size": config.intermediate_size,
    "num_layers": config.num_hidden_layers,
    "num_heads": config.num_attention_heads,
    "num_kv_heads": num_kv_heads,
    "head_dim": getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads,
    "rms_norm_eps": config.rms_norm_eps,
    "rope_theta": rope["rope_theta"],
    # Qwen2 always has q/k/v biases; Llama's attention_bias adds them to q, k, v and o
    "qkv_bias": model_type == "qwen2" or attention_bias,
    "output_bias": model_type == "llama" and attention_bias,
    "tie_word_embeddings": bool(config.tie_word_embeddings),
  }
  # transformers' Qwen2Config keeps sliding_window only when use_sliding_window is set
  return fields, config.max_position_embeddings, getattr(config, "sliding_window", None)


def convert_hf_state_dict(state: Mapping[str, np.ndarray], config: dict) -> dict:
  """HF PyTorch-layout tensors (`model.layers.0.self_attn.q_proj.weight`, …) → DecoderLM params (float32).

  Linear weights (out, in) are transposed. A tensor the config does not account for (a bias it does not expect)
  is a DataError rather than silently left out.
  """
  hidden, inner, head_dim = config["hidden_size"], config["intermediate_size"], config["head_dim"]
  read = set()

  def get(name, shape):
    read.add(name)
    return checkpoint_tensor(state, (name,), shape, "causal LM")

  def linear(name, d_in, d_out, bias=False):
    params = {"kernel": get(f"{name}.weight", (d_out, d_in)).T}
    if bias:
      params["bias"] = get(f"{name}.bias", (d_out,))
    return params

  query_width, kv_width = config["num_heads"] * head_dim, config["num_kv_heads"] * head_dim
  params = {
    "embed_tokens": {"embedding": get("model.embed_tokens.weight", (config["vocab_size"], hidden))},
    "norm": {"scale": get("model.norm.weight", (hidden,))},
  }
  if config["tie_word_embeddings"]:
    read.add("lm_head.weight")  # some saves keep the tied copy; HF overwrites it with the embedding, and so do we
  else:
    params["lm_head"] = linear("lm_head", hidden, config["vocab_size"])
  for index in range(config["num_layers"]):
    hf, ours = f"model.layers.{index}", f"layer_{index}"
    for name, width in (("q", query_width), ("k", kv_width), ("v", kv_width)):
      params[f"{ours}_{name}_proj"] = linear(f"{hf}.self_attn.{name}_proj", hidden, width, config["qkv_bias"])
    params[f"{ours}_o_proj"] = linear(f"{hf}.self_attn.o_proj", query_width, hidden, config["output_bias"])
    for name in ("gate", "up"):
      params[f"{ours}_{name}_proj"] = linear(f"{hf}.mlp.{name}_proj", hidden, inner)
    params[f"{ours}_down_proj"] = linear(f"{hf}.mlp.down_proj", inner, hidden)
    params[f"{ours}_input_norm"] = {"scale": get(f"{hf}.input_layernorm.weight", (hidden,))}
    params[f"{ours}_post_attention_norm"] = {"scale": get(f"{hf}.post_attention_layernorm.weight", (hidden,))}
  unread = sorted(name for name in state if name not in read and not name.endswith(IGNORED_TENSOR_SUFFIXES))
  if unread:
    raise DataError(
      f"causal LM checkpoint has tensors its config does not account for: {unread[:4]}"
      f"{' …' if len(unread) > 4 else ''} (tie_word_embeddings={config['tie_word_embeddings']}, "
      f"q/k/v bias {config['qkv_bias']}, o bias {config['output_bias']})"
    )
  return params


@functools.partial(jax.jit, static_argnames=("module",))
def _forward(module: DecoderLM, params, token_ids, attention_mask):
  # HF's position ids under padding: each row counts only its own tokens
  positions = jnp.cumsum(attention_mask, axis=-1) - 1
  return module.apply({"params": params}, token_ids, positions, attention_mask)[0]


@functools.partial(jax.jit, static_argnames=("module", "max_new_tokens", "sample"))
def _generate(
  module: DecoderLM, params, token_ids, prompt_mask, done, eos_ids, rng, temperature, max_new_tokens, sample
):
  """Left-padded prompts (B, P), prompt_mask (B, P) bool, done (B,) bool (rows to skip) → new tokens
  (B, max_new_tokens) int32: a row's tokens after its first id in eos_ids (E,) are 0, as are all of a skipped row's.

  The prompts fill the cache's first P slots in one pass; each later token is one decode step of a while loop that
  ends when every row is done. Greedy unless `sample` (then softmax(logits / temperature), step t drawing with
  fold_in(rng, t)).
  """
  batch, prompt_slots = token_ids.shape
  key_mask = jnp.concatenate([prompt_mask, jnp.ones((batch, max_new_tokens - 1), bool)], axis=1)
  apply = lambda ids, positions, cache, index: module.apply(
    {"params": params}, ids, positions, key_mask, cache, index, last_only=True
  )

  def choose(logits, step):  # (B, 1, V) → (B,)
    if sample:
      return jax.random.categorical(jax.random.fold_in(rng, step), logits[:, -1] / temperature).astype(jnp.int32)
    return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

  cache = empty_cache(module, batch, prompt_slots + max_new_tokens - 1)
  logits, cache = apply(token_ids, jnp.cumsum(prompt_mask, axis=-1) - 1, cache, 0)
  first = jnp.where(done, 0, choose(logits, 0))
  tokens = jnp.zeros((batch, max_new_tokens), jnp.int32).at[:, 0].set(first)
  lengths = prompt_mask.sum(axis=-1)

  def step_once(state):
    step, tokens, cache, done = state
    previous = jax.lax.dynamic_slice_in_dim(tokens, step - 1, 1, axis=1)
    logits, cache = apply(previous, (lengths + step - 1)[:, None], cache, prompt_slots + step - 1)
    chosen = jnp.where(done, 0, choose(logits, step))
    return step + 1, tokens.at[:, step].set(chosen), cache, done | jnp.isin(chosen, eos_ids)

  unfinished = lambda state: (state[0] < max_new_tokens) & ~jnp.all(state[3])
  state = (jnp.int32(1), tokens, cache, done | jnp.isin(first, eos_ids))
  return jax.lax.while_loop(unfinished, step_once, state)[1]


class CausalLM:
  """A frozen decoder-only LM and its tokenizer: generate(prompts) → answers (strings); logits for tests.

  `eos_ids`: the ids that end a row (the tokenizer's eos and generation_config.json's); `max_positions`: the
  config's max_position_embeddings; `sliding_window`: Mistral's attention window, which this implementation does
  not apply, so no sequence may be longer than it.
  """

  def __init__(
    self,
    module: DecoderLM,
    params,
    tokenizer,
    eos_ids: Sequence[int],
    max_positions: int,
    sliding_window: int | None = None,
  ):
    self.module, self.tokenizer = module, tokenizer
    self.params = jax.device_put(params)
    self.eos_ids = tuple(eos_ids)
    self.max_positions, self.sliding_window = max_positions, sliding_window

  def _check_length(self, length: int, what: str) -> None:
    if self.sliding_window is not None and length > self.sliding_window:
      raise DataError(
        f"{what} spans {length} tokens, more than the model's sliding_window={self.sliding_window}, which storyjax's "
        "causal LM does not implement; shorten the prompt or max_new_tokens"
      )

  def logits(self, token_ids, attention_mask) -> np.ndarray:
    """token_ids (B, L) int32, attention_mask (B, L) 1 = token, 0 = padding (left or right) → logits (B, L, V)
    float32; each row's positions count its own tokens only, so padding changes no valid position's logits."""
    token_ids, attention_mask = np.asarray(token_ids, np.int32), np.asarray(attention_mask, bool)
    if token_ids.ndim != 2 or attention_mask.shape != token_ids.shape:
      raise DataError(
        f"token_ids {token_ids.shape} and attention_mask {attention_mask.shape} must be the same (B, L) shape"
      )
    longest = int(attention_mask.sum(-1).max(initial=0))
    if longest > self.max_positions:
      raise DataError(f"a row has {longest} tokens, more than max_position_embeddings={self.max_positions}")
    self._check_length(longest, "a row")
    return np.asarray(_forward(self.module, self.params, token_ids, attention_mask))

  def encode(self, prompts: Sequence[str], system: str | None = None) -> list[list[int]]:
    """The token ids generate() feeds for each prompt: with a chat template, the conversation ([system,] user)
    rendered with the generation prompt and tokenized without further special tokens (as apply_chat_template);
    without one, the raw prompt with the tokenizer's own special tokens."""
    if self.tokenizer.chat_template:
      head = [] if system is None else [{"role": "system", "content": system}]
      texts = [
        self.tokenizer.apply_chat_template(
          [*head, {"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        for prompt in prompts
      ]
      return [list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]
    if system is not None:
      raise ConfigError(
        "this tokenizer has no chat template to place a system prompt in; pass system=None (and put any instructions "
        "in the prompt itself)"
      )
    return [list(self.tokenizer(prompt)["input_ids"]) for prompt in prompts]

  def generate_tokens(
    self,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 8,
  ) -> list[list[int]]:
    """Token ids of each prompt → its new token ids, up to (not including) the first eos id.

    Batches of batch_size prompts (the last padded with skipped rows) left-padded to a multiple of PROMPT_BUCKET.
    temperature 0 is greedy; above 0 samples with jax.random from `seed` (batch i draws from fold_in(seed, i), so a
    result depends on the prompt's batch as well as on the seed).
    """
    if max_new_tokens < 1 or batch_size < 1 or temperature < 0:
      raise ConfigError(
        f"max_new_tokens={max_new_tokens} and batch_size={batch_size} must be at least 1, "
        f"temperature={temperature} at least 0"
      )
    for index, ids in enumerate(prompt_ids):
      if not ids:
        raise DataError(f"prompt {index} has no tokens")
      if len(ids) > self.max_positions - max_new_tokens:
        raise DataError(
          f"prompt {index} has {len(ids)} tokens; with max_new_tokens={max_new_tokens} the model's "
          f"max_position_embeddings={self.max_positions} leaves room for {self.max_positions - max_new_tokens}"
        )
      self._check_length(len(ids) + max_new_tokens, f"prompt {index} with max_new_tokens={max_new_tokens}")
    rows = min(batch_size, len(prompt_ids))
    eos_ids = jnp.asarray(self.eos_ids, jnp.int32)
    results = []
    for batch_index, start in enumerate(range(0, len(prompt_ids), rows)):
      batch = list(prompt_ids[start : start + rows])
      prompt_slots = PROMPT_BUCKET * math.ceil(max(map(len, batch)) / PROMPT_BUCKET)
      skipped = np.arange(rows) >= len(batch)
      batch += [batch[0]] * int(skipped.sum())  # filler rows, skipped from the start
      token_ids = np.zeros((rows, prompt_slots), np.int32)
      prompt_mask = np.zeros((rows, prompt_slots), bool)
      for row, ids in enumerate(batch):
        token_ids[row, prompt_slots - len(ids) :] = ids
        prompt_mask[row, prompt_slots - len(ids) :] = True
      rng = jax.random.fold_in(jax.random.key(seed), batch_index)
      tokens = _generate(
        self.module,
        self.params,
        token_ids,
        prompt_mask,
        skipped,
        eos_ids,
        rng,
        jnp.float32(temperature or 1.0),
        max_new_tokens=max_new_tokens,
        sample=temperature > 0,
      )
      for row in np.asarray(tokens)[: rows - int(skipped.sum())].tolist():
        ends = [position for position, token in enumerate(row) if token in self.eos_ids]
        results.append(row[: ends[0]] if ends else row)
    return results

  def generate(
    self,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int = 0,
    system: str | None = None,
    batch_size: int = 8,
  ) -> list[str]:
    """prompts → the model's answers: encode() then generate_tokens(), decoded without special tokens, stripped."""
    new_tokens = self.generate_tokens(
      self.encode(prompts, system),
      max_new_tokens=max_new_tokens,
      temperature=temperature,
      seed=seed,
      batch_size=batch_size,
    )
    return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_tokens]


def eos_token_ids(path: pathlib.Path, tokenizer) -> list[int]:
  """The tokenizer's eos id and those of generation_config.json's eos_token_id (an id or a list), if present."""
  ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
  generation_config = path / "generation_config.json"
  if generation_config.is_file():
    configured = json.loads(generation_config.read_text()).get("eos_token_id")
    configured = [] if configured is None else [configured] if isinstance(configured, int) else configured
    ids += [token for token in configured if token not in ids]
  return ids


def load_causal_lm(path, dtype: Dtype = jnp.float32) -> CausalLM:
  """A local HF directory of a llama / mistral / qwen2 model (config.json, model.safetensors or its sharded index,
  tokenizer.json or tokenizer.model, optionally generation_config.json) → CausalLM; parameters in fp32, compute in
  `dtype`."""
  path = pathlib.Path(path)
  if not path.is_dir() or not (path / "config.json").is_file():
    raise ConfigError(f"no causal LM checkpoint at {path} (config.json missing); {GET_CHECKPOINT}")
  config, max_positions, sliding_window = causal_lm_config(path)
  files = weight_files(path, "causal LM", GET_CHECKPOINT)
  # transformers builds an empty tokenizer from a directory without vocabulary files instead of failing
  if not any((path / name).is_file() for name in TOKENIZER_FILES):
    raise ConfigError(f"no causal LM tokenizer in {path}; expected one of {TOKENIZER_FILES}; {GET_CHECKPOINT}")
  params = convert_hf_state_dict(read_tensors(files), config)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
  return CausalLM(
    DecoderLM(**config, dtype=dtype), params, tokenizer, eos_token_ids(path, tokenizer), max_positions, sliding_window
  )
