"""A tiny random decoder-only LM checkpoint in the Hugging Face layout, for tests (not a test file).

write_tiny_causal_lm(path) writes config.json, model.safetensors (HF tensor names), generation_config.json and a
byte-level BPE tokenizer (tokenizer.json, its config and, by default, a ChatML chat template), all built offline.
The BPE is trained on English words, digits and brackets, so that random generation decodes to strings such as
" yes (3) score", and every printable ASCII text round-trips.
"""

import json
import pathlib

import numpy as np
import safetensors.numpy
import tokenizers
import transformers
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

# ids 0 … 5 in this order; <|im_start|> and <|im_end|> are in every vocabulary, the template only with chat_template
SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>")
# what the BPE is trained on: digits, brackets and the words of yes/no and scoring answers among them
WORD_TEXT = (
  "system user assistant you are a an the helpful answer question questions with one word yes no maybe pred score "
  "label labels true false is it this that of to and or in on at for as by be not what which who when where why how "
  "story scene camera character characters person people man woman child dog looks talks walks runs sits stands "
  "says sees happy sad angry calm good bad best first last next then now here there very more less same different "
  "0 1 2 3 4 5 6 7 8 9 ( ) . , : ; ? ! ' \" - /"
)
WORDS = tuple(WORD_TEXT.split())
CHAT_TEMPLATE = (
  "{% for message in messages %}"
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
  "{% endfor %}"
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
TINY_CONFIG = {
  "hidden_size": 32,
  "intermediate_size": 64,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-6,
  "rope_theta": 10_000.0,
  "rope_scaling": None,
  "max_position_embeddings": 256,
  "hidden_act": "silu",
}


def save_tokenizer(path: pathlib.Path, model_type: str = "llama", chat_template: bool = True):
  """A byte-level BPE over WORDS (and their capitalised forms) saved as HF tokenizer files; returns the
  transformers tokenizer.

  Its pipeline is Qwen2Tokenizer's (NFC, Qwen's pre-tokenizer regex, byte-level, no unknown token), which
  transformers rebuilds for a qwen2 checkpoint whatever tokenizer.json says, so every model type loads it as saved.
  Llama and Mistral prepend <s>, Qwen2 adds no token of its own, as their released tokenizers do. The alphabet is
  the bytes of printable ASCII, newline and space: other characters are dropped.
  """
  tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
  tokenizer.normalizer = tokenizers.normalizers.NFC()
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
    [
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]
  )
  tokenizer.decoder = tokenizers.decoders.ByteLevel()
  # byte-level symbols: printable ASCII stands for itself, space and newline are Ġ and Ċ
  alphabet = [symbol for symbol in tokenizers.pre_tokenizers.ByteLevel.alphabet() if symbol.isascii() or symbol in "ĠĊ"]
  trainer = tokenizers.trainers.BpeTrainer(
    vocab_size=1000, special_tokens=list(SPECIALS), initial_alphabet=alphabet, show_progress=False
  )
  tokenizer.train_from_iterator([" ".join(WORDS), " ".join(word.capitalize() for word in WORDS)], trainer)
  if model_type != "qwen2":
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
      single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
  wrapped = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tokenizer,
    bos_token="<s>",
    eos_token="</s>",
    pad_token="<pad>",
    unk_token="<unk>",
    additional_special_tokens=["<|im_start|>", "<|im_end|>"],
  )
  if chat_template:
    wrapped.chat_template = CHAT_TEMPLATE
  wrapped.save_pretrained(str(path))
  return wrapped


def random_state(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
  """HF tensors (name → (out, in) weights) of a llama/mistral/qwen2 `config`, random with scale ~0.2."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape, scale=0.2: rng.normal(0, scale, size=shape).astype(np.float32)
  hidden, inner = config["hidden_size"], config["intermediate_size"]
  head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
  query_width = config["num_attention_heads"] * head_dim
  kv_width = config.get("num_key_value_heads", config["num_attention_heads"]) * head_dim
  qkv_bias = config["model_type"] == "qwen2" or config.get("attention_bias", False)
  state = {
    "model.embed_tokens.weight": normal(config["vocab_size"], hidden, scale=1.0),
    "model.norm.weight": 1 + normal(hidden, scale=0.1),
  }
  if not config.get("tie_word_embeddings", False):
    state["lm_head.weight"] = normal(config["vocab_size"], hidden)
  for index in range(config["num_hidden_layers"]):
    prefix = f"model.layers.{index}"
    for name, width in (("q", query_width), ("k", kv_width), ("v", kv_width)):
      state[f"{prefix}.self_attn.{name}_proj.weight"] = normal(width, hidden)
      if qkv_bias:
        state[f"{prefix}.self_attn.{name}_proj.bias"] = normal(width)
    state[f"{prefix}.self_attn.o_proj.weight"] = normal(hidden, query_width)
    if config["model_type"] == "llama" and config.get("attention_bias", False):
      state[f"{prefix}.self_attn.o_proj.bias"] = normal(hidden)
    state[f"{prefix}.mlp.gate_proj.weight"] = normal(inner, hidden)
    state[f"{prefix}.mlp.up_proj.weight"] = normal(inner, hidden)
    state[f"{prefix}.mlp.down_proj.weight"] = normal(hidden, inner)
    state[f"{prefix}.input_layernorm.weight"] = 1 + normal(hidden, scale=0.1)
    state[f"{prefix}.post_attention_layernorm.weight"] = 1 + normal(hidden, scale=0.1)
  return state


def write_tiny_causal_lm(
  path,
  *,
  model_type: str = "llama",
  seed: int = 0,
  tie_word_embeddings: bool = False,
  chat_template: bool = True,
  **config_overrides,
) -> pathlib.Path:
  """A tiny random HF checkpoint of `model_type` in directory `path` (created): hidden 32, 2 layers, 4 query and
  2 key/value heads, save_tokenizer's ~440-token vocabulary; `config_overrides` replace or add config.json fields.
  Returns the path."""
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  tokenizer = save_tokenizer(path, model_type, chat_template)
  vocab = tokenizer.get_vocab()
  config = {
    "architectures": [ARCHITECTURES.get(model_type, f"{model_type.capitalize()}ForCausalLM")],
    "model_type": model_type,
    "vocab_size": len(vocab),
    **TINY_CONFIG,
    "tie_word_embeddings": tie_word_embeddings,
    "bos_token_id": vocab["<s>"],
    "eos_token_id": vocab["</s>"],
    "pad_token_id": vocab["<pad>"],
    **config_overrides,
  }
  (path / "config.json").write_text(json.dumps(config, indent=2))
  (path / "generation_config.json").write_text(
    json.dumps({"bos_token_id": vocab["<s>"], "eos_token_id": [vocab["</s>"], vocab["<|im_end|>"]]})
  )
  safetensors.numpy.save_file(random_state(config, seed), str(path / "model.safetensors"), metadata={"format": "pt"})
  return path
