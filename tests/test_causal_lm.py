"""Decoder-only causal LM: tiny random HF checkpoints, our logits against a numpy forward, KV-cached generation against
recomputing the whole sequence, chat templates and the errors that name a broken checkpoint or prompt."""

import json

from causal_lm_checkpoint import write_tiny_causal_lm
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from storyjax.errors import ConfigError, DataError
from storyjax.text.causal_lm import load_causal_lm

pytestmark = pytest.mark.usefixtures("fast_compile")

PROMPTS = [
  "Is the man happy?",
  "Which person looks sad in this scene? Answer with one word: yes or no.",
  "Score (1 to 5):",
]
MAX_NEW_TOKENS = 8


def numpy_logits(state: dict, config: dict, ids) -> np.ndarray:
  """HF LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM logits (L, V) of one unpadded row ids (L,), in
  float64 but for RoPE's angles, which HF computes in float32."""
  get = lambda name: state[name].astype(np.float64)
  rms_norm = lambda x, name: x / np.sqrt((x**2).mean(-1, keepdims=True) + config["rms_norm_eps"]) * get(name)
  linear = lambda x, name: x @ get(f"{name}.weight").T + (get(f"{name}.bias") if f"{name}.bias" in state else 0)
  length, heads = len(ids), config["num_attention_heads"]
  kv_heads = config.get("num_key_value_heads", heads)
  head_dim = config.get("head_dim") or config["hidden_size"] // heads
  inverse_frequency = 1.0 / config["rope_theta"] ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
  angles = np.arange(length, dtype=np.float32)[:, None] * inverse_frequency.astype(np.float32)
  angles = np.concatenate([angles, angles], axis=-1).astype(np.float64)

  def rope(x):  # (L, H, Dh)
    half = head_dim // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * np.cos(angles)[:, None] + rotated * np.sin(angles)[:, None]

  causal = np.tril(np.ones((length, length), bool))
  hidden = get("model.embed_tokens.weight")[ids]
  for index in range(config["num_hidden_layers"]):
    prefix = f"model.layers.{index}"
    normed = rms_norm(hidden, f"{prefix}.input_layernorm.weight")
    split = lambda name, count: linear(normed, f"{prefix}.self_attn.{name}_proj").reshape(length, count, head_dim)
    query, key, value = rope(split("q", heads)), rope(split("k", kv_heads)), split("v", kv_heads)
    # HF's repeat_kv: query head h reads key/value head h // (heads / kv_heads)
    key, value = np.repeat(key, heads // kv_heads, axis=1), np.repeat(value, heads // kv_heads, axis=1)
    scores = np.where(causal, np.einsum("qhd,khd->hqk", query, key) / np.sqrt(head_dim), -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("hqk,khd->qhd", weights, value).reshape(length, heads * head_dim)
    hidden = hidden + linear(attended, f"{prefix}.self_attn.o_proj")
    normed = rms_norm(hidden, f"{prefix}.post_attention_layernorm.weight")
    gate = linear(normed, f"{prefix}.mlp.gate_proj")
    silu = gate / (1 + np.exp(-gate))
    hidden = hidden + linear(silu * linear(normed, f"{prefix}.mlp.up_proj"), f"{prefix}.mlp.down_proj")
  hidden = rms_norm(hidden, "model.norm.weight")
  return hidden @ state.get("lm_head.weight", state["model.embed_tokens.weight"]).astype(np.float64).T


def read_checkpoint(path) -> tuple[dict, dict]:
  return json.loads((path / "config.json").read_text()), safetensors.numpy.load_file(str(path / "model.safetensors"))


def left_padded(rows, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """token id lists → ids (B, width) int32 and mask (B, width), each row's tokens at its right end."""
  width = width or max(map(len, rows))
  ids, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), np.int32)
  for row, tokens in enumerate(rows):
    ids[row, width - len(tokens) :], mask[row, width - len(tokens) :] = tokens, 1
  return ids, mask


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
  path = write_tiny_causal_lm(tmp_path_factory.mktemp("llama"))
  return path, load_causal_lm(path)


VARIANTS = {
  "llama_gqa": {"model_type": "llama"},  # 2 key/value heads for 4 query heads
  "qwen2_biases_tied": {"model_type": "qwen2", "tie_word_embeddings": True, "seed": 1},
  # head_dim 16 is not hidden / heads = 8: the query width 64 differs from the hidden width 32
  "mistral_full_heads": {"model_type": "mistral", "num_key_value_heads": 4, "head_dim": 16, "seed": 2},
  "llama_attention_bias": {"model_type": "llama", "attention_bias": True, "seed": 3},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_left_padded_logits_match_numpy(tmp_path, variant):
  path = write_tiny_causal_lm(tmp_path, **VARIANTS[variant])
  config, state = read_checkpoint(path)
  model = load_causal_lm(path)
  rows = model.encode(PROMPTS)
  # the tokenizer loads as saved (transformers rebuilds a qwen2 one from its vocabulary)
  decoded = [model.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in rows]
  assert decoded == [f"user\n{prompt}\nassistant\n" for prompt in PROMPTS]
  ids, mask = left_padded(rows)
  logits = model.logits(ids, mask)
  assert logits.shape == (3, ids.shape[1], config["vocab_size"]) and logits.dtype == np.float32
  for row, tokens in enumerate(rows):
    reference = numpy_logits(state, config, np.asarray(tokens))
    np.testing.assert_allclose(logits[row, -len(tokens) :], reference, rtol=1e-5, atol=3e-5)


def test_converted_params_fill_the_module(llama):
  _, model = llama
  ids, mask = left_padded([[1, 2, 3]])
  boxed = jax.eval_shape(model.module.init, jax.random.key(0), ids, mask, mask.astype(bool))["params"]
  assert jax.tree.map(np.shape, model.params) == jax.tree.map(np.shape, nn.unbox(boxed))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(model.params))
  specs = nn.get_partition_spec(boxed)
  assert tuple(specs["embed_tokens"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["layer_1_k_proj"]["kernel"]) == ("embed", "heads")
  assert tuple(specs["layer_1_o_proj"]["kernel"]) == ("heads", "embed")
  assert tuple(specs["layer_1_down_proj"]["kernel"]) == ("mlp", "embed")
  assert tuple(specs["lm_head"]["kernel"]) == ("embed", "vocab")


def test_bfloat16_compute_stays_close(llama):
  path, model = llama
  ids, mask = left_padded(model.encode(PROMPTS))
  reference = model.logits(ids, mask)[mask == 1]
  ours = load_causal_lm(path, dtype=jnp.bfloat16).logits(ids, mask)[mask == 1]
  # bf16 keeps 8 significant bits: ~0.4% per rounding, a few percent through two blocks
  relative_rms_error = np.sqrt(np.mean((ours - reference) ** 2) / np.mean(reference**2))
  assert ours.dtype == np.float32 and relative_rms_error < 0.05


def full_recompute_greedy(model, rows, max_new_tokens: int) -> list[list[int]]:
  """Greedy decoding without a cache: the whole (right-padded) sequence through logits() for every new token;
  each row's new tokens up to its first eos id."""
  width = max(map(len, rows)) + max_new_tokens
  sequences, new_tokens, finished = [list(tokens) for tokens in rows], [[] for _ in rows], [False] * len(rows)
  for _ in range(max_new_tokens):
    ids, mask = np.zeros((len(rows), width), np.int32), np.zeros((len(rows), width), np.int32)
    for row, tokens in enumerate(sequences):
      ids[row, : len(tokens)], mask[row, : len(tokens)] = tokens, 1
    logits = model.logits(ids, mask)
    for row, tokens in enumerate(sequences):
      if not finished[row]:
        chosen = int(np.argmax(logits[row, len(tokens) - 1]))
        tokens.append(chosen)
        finished[row] = chosen in model.eos_ids
        if not finished[row]:
          new_tokens[row].append(chosen)
  return new_tokens


def test_cached_greedy_matches_recomputing_the_sequence(llama):
  _, model = llama
  rows = model.encode(PROMPTS)
  assert len({len(tokens) for tokens in rows}) == 3
  # batches of 2: the second holds the third prompt and a skipped filler row
  cached = model.generate_tokens(rows, max_new_tokens=MAX_NEW_TOKENS, batch_size=2)
  assert cached == full_recompute_greedy(model, rows, MAX_NEW_TOKENS)
  assert [len(tokens) for tokens in cached] == [MAX_NEW_TOKENS] * 3  # none ended early: the stop is tested below
  # a row stops before the first of its eos ids; the others run on
  stop = cached[0][3]
  model_eos = model.eos_ids
  try:
    model.eos_ids = (model_eos[0], stop)
    stopped = model.generate_tokens(rows, max_new_tokens=MAX_NEW_TOKENS, batch_size=2)
  finally:
    model.eos_ids = model_eos
  for tokens, full in zip(stopped, cached):
    assert tokens == full[: full.index(stop)] if stop in full else tokens == full


def test_sampling_is_reproducible_per_seed(llama):
  _, model = llama
  rows = model.encode(PROMPTS)
  sample = lambda seed, temperature=1.0: model.generate_tokens(
    rows, max_new_tokens=MAX_NEW_TOKENS, temperature=temperature, seed=seed, batch_size=2
  )
  first = sample(0)
  assert sample(0) == first
  assert sample(1) != first
  assert first != model.generate_tokens(rows, max_new_tokens=MAX_NEW_TOKENS, batch_size=2)
  vocab_size = model.module.vocab_size
  assert all(0 <= token < vocab_size for tokens in first for token in tokens)


def test_chat_template_feeds_the_rendered_conversation(llama):
  _, model = llama
  tokenizer = model.tokenizer
  system = "You are a helpful story question answerer."
  for prompt, tokens in zip(PROMPTS, model.encode(PROMPTS, system=system)):
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    assert tokens == tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    turns = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
    assert tokenizer.decode(tokens) == f"{turns}<|im_start|>assistant\n"
  user_only = model.encode(PROMPTS[:1])[0]
  messages = [{"role": "user", "content": PROMPTS[0]}]
  assert user_only == tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
  answers = model.generate(PROMPTS, max_new_tokens=MAX_NEW_TOKENS, system=system, batch_size=2)
  new_tokens = model.generate_tokens(model.encode(PROMPTS, system), max_new_tokens=MAX_NEW_TOKENS, batch_size=2)
  assert answers == [tokenizer.decode(tokens, skip_special_tokens=True).strip() for tokens in new_tokens]
  assert all(isinstance(answer, str) and answer == answer.strip() for answer in answers)


def test_without_a_template_the_raw_prompt_is_fed(tmp_path):
  model = load_causal_lm(write_tiny_causal_lm(tmp_path, chat_template=False))
  assert not model.tokenizer.chat_template
  rows = model.encode(PROMPTS)
  assert rows == [model.tokenizer(prompt)["input_ids"] for prompt in PROMPTS]
  assert all(tokens[0] == model.tokenizer.bos_token_id for tokens in rows)
  assert [model.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in rows] == PROMPTS
  with pytest.raises(ConfigError, match="no chat template to place a system prompt"):
    model.generate(PROMPTS, max_new_tokens=2, system="Be brief.")


def test_eos_ids_come_from_the_tokenizer_and_generation_config(llama, tmp_path):
  _, model = llama
  vocab = model.tokenizer.get_vocab()
  assert model.eos_ids == (vocab["</s>"], vocab["<|im_end|>"])
  write_tiny_causal_lm(tmp_path)
  (tmp_path / "generation_config.json").unlink()
  assert load_causal_lm(tmp_path).eos_ids == (vocab["</s>"],)


def test_sharded_checkpoint_loads_the_same(llama, tmp_path):
  path, model = llama
  _, state = read_checkpoint(path)
  names = sorted(state)
  shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
  write_tiny_causal_lm(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  for file, shard_names in shards.items():
    safetensors.numpy.save_file({name: state[name] for name in shard_names}, str(tmp_path / file))
  weight_map = {name: file for file, shard_names in shards.items() for name in shard_names}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  jax.tree.map(np.testing.assert_array_equal, load_causal_lm(tmp_path).params, model.params)


def test_missing_or_broken_checkpoints_are_named(tmp_path):
  with pytest.raises(ConfigError, match=f"no causal LM checkpoint at {tmp_path / 'absent'}.*save_pretrained"):
    load_causal_lm(tmp_path / "absent")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConfigError, match=r"\(config.json missing\).*Qwen/Qwen2.5-0.5B-Instruct"):
    load_causal_lm(tmp_path / "empty")
  torch_only = write_tiny_causal_lm(tmp_path / "torch_only")
  (torch_only / "model.safetensors").rename(torch_only / "pytorch_model.bin")
  with pytest.raises(ConfigError, match="only PyTorch .bin weights; storyjax reads safetensors"):
    load_causal_lm(torch_only)
  (torch_only / "pytorch_model.bin").unlink()
  with pytest.raises(ConfigError, match=f"no model.safetensors or model.safetensors.index.json in {torch_only}"):
    load_causal_lm(torch_only)
  no_tokenizer = write_tiny_causal_lm(tmp_path / "no_tokenizer")
  (no_tokenizer / "tokenizer.json").unlink()
  with pytest.raises(
    ConfigError, match=r"no causal LM tokenizer in .*no_tokenizer; expected one of \('tokenizer.json'"
  ):
    load_causal_lm(no_tokenizer)


@pytest.mark.parametrize(
  ("overrides", "error", "message"),
  [
    ({"model_type": "gpt2"}, ConfigError, r"model_type='gpt2'; storyjax's causal LM supports \('llama', 'mistral'"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, DataError, "RoPE scaling 'linear' .* is unsupported"),
    (
      {
        "rope_theta": 500_000.0,
        "rope_scaling": {
          "rope_type": "llama3",
          "factor": 8.0,
          "low_freq_factor": 1.0,
          "high_freq_factor": 4.0,
          "original_max_position_embeddings": 128,
        },
      },
      DataError,
      "RoPE scaling 'llama3'",
    ),
    ({"hidden_act": "gelu"}, DataError, "hidden_act='gelu' is unsupported; only 'silu'"),
    ({"num_key_value_heads": 3}, DataError, "num_attention_heads=4 is not a multiple of num_key_value_heads=3"),
  ],
)
def test_unsupported_configs_are_named(tmp_path, overrides, error, message):
  path = write_tiny_causal_lm(tmp_path, **{"model_type": "llama", **overrides})
  with pytest.raises(error, match=message):
    load_causal_lm(path)


def test_tensors_the_config_does_not_explain_are_refused(tmp_path):
  path = write_tiny_causal_lm(tmp_path)
  config, state = read_checkpoint(path)
  state["model.layers.0.self_attn.o_proj.bias"] = np.zeros(config["hidden_size"], np.float32)
  safetensors.numpy.save_file(state, str(path / "model.safetensors"))
  with pytest.raises(DataError, match=r"tensors its config does not account for: \['model.layers.0.self_attn.o_pro"):
    load_causal_lm(path)
  state.pop("model.layers.0.self_attn.o_proj.bias")
  state["model.layers.1.mlp.up_proj.weight"] = np.zeros((3, 3), np.float32)
  safetensors.numpy.save_file(state, str(path / "model.safetensors"))
  with pytest.raises(DataError, match=r"tensor model.layers.1.mlp.up_proj.weight has shape \(3, 3\), expected"):
    load_causal_lm(path)


def test_prompts_too_long_are_refused_not_truncated(llama, tmp_path):
  _, model = llama
  long_prompt = " ".join(["yes"] * 245)
  length = len(model.encode([long_prompt])[0])
  assert 248 < length <= 256  # fits max_position_embeddings = 256, but not with 8 new tokens
  with pytest.raises(
    DataError, match=f"prompt 1 has {length} tokens; with max_new_tokens=8 .*=256 leaves room for 248"
  ):
    model.generate(["no", long_prompt], max_new_tokens=8)
  mistral = load_causal_lm(write_tiny_causal_lm(tmp_path, model_type="mistral", sliding_window=16))
  with pytest.raises(
    DataError, match=r"prompt 0 with max_new_tokens=8 spans \d+ tokens, more than .*sliding_window=16"
  ):
    mistral.generate(["Is the man happy?"], max_new_tokens=8)
