"""T5 encoder: a tiny random checkpoint in the Hugging Face layout, our forward against a numpy forward."""

import json
import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
import tokenizers
import transformers

from configs import cad
from storyjax.errors import ConfigError, DataError
from storyjax.tasks import get_task
from storyjax.text.t5 import T5Encoder, T5TextFeatures, load_t5_encoder, relative_position_bucket

pytestmark = pytest.mark.usefixtures("fast_compile")

CONFIG = {
  "vocab_size": 60,
  "d_model": 16,
  "d_kv": 4,
  "d_ff": 24,
  "num_layers": 2,
  "num_heads": 4,
  "relative_attention_num_buckets": 32,
  "relative_attention_max_distance": 20,
  "layer_norm_epsilon": 1e-6,
  "feed_forward_proj": "gated-gelu",
}
SPECIALS = ["<pad>", "</s>", "<unk>"]  # T5's ids 0, 1, 2
CAPTION_WORDS = (
  "the a an camera cam pans tilts moves turns rotates zooms forward backward left right up down slowly quickly "
  "around over under to and then towards away from of person man woman walks runs sits stands looks at table door "
  "window car tree dog street room light dark close far behind in front next near fast slow"
)
EOS = 1
RELATIVE_BIAS = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"


def _random_state(rng, config: dict = CONFIG) -> dict[str, np.ndarray]:
  """The tensors of a T5ForConditionalGeneration save: encoder, shared embedding and a decoder tensor to ignore."""
  d, inner, ff = config["d_model"], config["num_heads"] * config["d_kv"], config["d_ff"]
  normal = lambda *shape, scale=0.3: rng.normal(0, scale, size=shape).astype(np.float32)
  state = {
    "shared.weight": normal(config["vocab_size"], d, scale=1.0),
    RELATIVE_BIAS: normal(config["relative_attention_num_buckets"], config["num_heads"], scale=1.0),
    "encoder.final_layer_norm.weight": 1 + normal(d, scale=0.1),
    "decoder.final_layer_norm.weight": normal(d),
  }
  gated = config["feed_forward_proj"].startswith("gated-")
  for index in range(config["num_layers"]):
    prefix = f"encoder.block.{index}.layer"
    for name in "qkv":
      state[f"{prefix}.0.SelfAttention.{name}.weight"] = normal(inner, d)
    state[f"{prefix}.0.SelfAttention.o.weight"] = normal(d, inner)
    for sublayer in (0, 1):
      state[f"{prefix}.{sublayer}.layer_norm.weight"] = 1 + normal(d, scale=0.1)
    for name in ("wi_0", "wi_1") if gated else ("wi",):
      state[f"{prefix}.1.DenseReluDense.{name}.weight"] = normal(ff, d)
    state[f"{prefix}.1.DenseReluDense.wo.weight"] = normal(d, ff)
  return state


def save_tokenizer(path: pathlib.Path) -> None:
  """A word-level tokenizer with T5's special ids that appends </s>, saved as HF's tokenizer.json."""
  vocab = {token: index for index, token in enumerate(SPECIALS + CAPTION_WORDS.split())}
  assert len(vocab) == CONFIG["vocab_size"]
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tokenizer.normalizer = tokenizers.normalizers.Lowercase()
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  tokenizer.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
  transformers.PreTrainedTokenizerFast(
    tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
  ).save_pretrained(str(path))


def write_checkpoint(path: pathlib.Path, state: dict, config: dict = CONFIG) -> None:
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps({"architectures": ["T5EncoderModel"], "model_type": "t5", **config}))
  safetensors.numpy.save_file(state, str(path / "model.safetensors"))
  save_tokenizer(path)


def reference_bucket(offset: int, num_buckets: int, max_distance: int) -> int:
  """T5's bidirectional bucket of one key − query offset, in Python floats."""
  half = num_buckets // 2
  exact = half // 2
  base, distance = (half if offset > 0 else 0), abs(offset)
  if distance < exact:
    return base + distance
  return base + min(half - 1, exact + int(math.log(distance / exact) / math.log(max_distance / exact) * (half - exact)))


ACTIVATIONS = {
  "relu": lambda x: np.maximum(x, 0),
  "gelu": np.vectorize(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))),
  "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
}


def numpy_forward(state: dict, ids: np.ndarray, key_mask: np.ndarray | None = None, config: dict = CONFIG):
  """HF T5EncoderModel's last_hidden_state (ids (B, L), key_mask (B, L) 1 = token), written out in numpy."""
  get = lambda name: state[name].astype(np.float64)
  rms_norm = lambda x, name: (
    x / np.sqrt((x**2).mean(-1, keepdims=True) + config["layer_norm_epsilon"]) * get(f"{name}.weight")
  )
  linear = lambda x, name: x @ get(f"{name}.weight").T
  batch, length = ids.shape
  heads, d_kv = config["num_heads"], config["d_kv"]
  key_mask = np.ones_like(ids) if key_mask is None else key_mask
  offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
  buckets = np.vectorize(reference_bucket)(
    offsets, config["relative_attention_num_buckets"], config["relative_attention_max_distance"]
  )
  bias = get(RELATIVE_BIAS)[buckets].transpose(2, 0, 1)[None] + np.where(key_mask[:, None, None, :], 0, -1e9)
  gated, activation = {
    "relu": (False, "relu"),
    "gelu": (False, "gelu"),
    "gated-relu": (True, "relu"),
    "gated-gelu": (True, "gelu_new"),
  }[config["feed_forward_proj"]]
  hidden = get("shared.weight")[ids]
  for index in range(config["num_layers"]):
    prefix = f"encoder.block.{index}.layer"
    normed = rms_norm(hidden, f"{prefix}.0.layer_norm")
    split = lambda x: x.reshape(batch, length, heads, d_kv).transpose(0, 2, 1, 3)
    q, k, v = (split(linear(normed, f"{prefix}.0.SelfAttention.{name}")) for name in "qkv")
    logits = q @ k.transpose(0, 1, 3, 2) + bias  # no 1/sqrt(d_kv) in T5
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, heads * d_kv)
    hidden = hidden + linear(attended, f"{prefix}.0.SelfAttention.o")
    normed = rms_norm(hidden, f"{prefix}.1.layer_norm")
    if gated:
      inner = ACTIVATIONS[activation](linear(normed, f"{prefix}.1.DenseReluDense.wi_0")) * linear(
        normed, f"{prefix}.1.DenseReluDense.wi_1"
      )
    else:
      inner = ACTIVATIONS[activation](linear(normed, f"{prefix}.1.DenseReluDense.wi"))
    hidden = hidden + linear(inner, f"{prefix}.1.DenseReluDense.wo")
  return rms_norm(hidden, "encoder.final_layer_norm")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  state = _random_state(np.random.default_rng(0))
  path = tmp_path_factory.mktemp("t5")
  write_checkpoint(path, state)
  return path, state


IDS = np.array([[3, 7, 8, 21, 40, 9, 1, 0, 0, 0], [5, 6, 12, 30, 33, 44, 50, 58, 11, 1]], np.int32)
KEY_MASK = (np.arange(10) < np.array([[7], [10]])).astype(np.int32)


def test_relative_position_buckets_match_a_hand_table():
  # flan-t5's 32 buckets, max distance 128: |offset| < 8 exact, then 8 + floor(8·log(|offset|/8)/log 16) up to 15;
  # keys after the query add 16
  offsets = [0, -1, 1, -7, 7, -8, 8, -12, -16, 16, 20, -32, 32, -64, 127, -128, 1000, -1000]
  flan = [0, 1, 17, 7, 23, 8, 24, 9, 10, 26, 26, 12, 28, 14, 31, 15, 31, 15]
  np.testing.assert_array_equal(relative_position_bucket(np.array(offsets), 32, 128), flan)
  # the test checkpoint's max distance 20: 8 + floor(8·log(|offset|/8)/log 2.5)
  offsets = [-9, -10, 11, -12, -16, 19, -20, 25]
  tiny = [9, 9, 26, 11, 14, 31, 15, 31]
  np.testing.assert_array_equal(relative_position_bucket(np.array(offsets), 32, 20), tiny)
  assert [reference_bucket(offset, 32, 20) for offset in offsets] == tiny


@pytest.mark.parametrize("feed_forward_proj", ["gated-gelu", "relu", "gated-relu", "gelu"])
def test_forward_with_padding_matches_numpy(tmp_path, feed_forward_proj):
  config = {**CONFIG, "feed_forward_proj": feed_forward_proj}
  state = _random_state(np.random.default_rng(1), config)
  write_checkpoint(tmp_path, state, config)
  module, params, _tokenizer = load_t5_encoder(tmp_path)
  ours = np.asarray(jax.jit(module.apply)({"params": params}, IDS, KEY_MASK))
  np.testing.assert_allclose(ours, numpy_forward(state, IDS, KEY_MASK, config), atol=1e-5, rtol=1e-5)


def test_padded_tokens_do_not_change_valid_positions(checkpoint):
  path, state = checkpoint
  module, params, _ = load_t5_encoder(path)
  forward = jax.jit(lambda ids, mask: module.apply({"params": params}, ids, mask))
  padded = np.asarray(forward(IDS, KEY_MASK))
  other_padding = np.where(KEY_MASK == 1, IDS, 59)
  np.testing.assert_array_equal(np.asarray(forward(other_padding, KEY_MASK))[0, :7], padded[0, :7])
  # the caption alone, unpadded
  np.testing.assert_allclose(padded[0, :7], numpy_forward(state, IDS[:1, :7])[0], atol=1e-5, rtol=1e-5)
  assert not np.allclose(np.asarray(forward(other_padding, np.ones_like(KEY_MASK)))[0, :7], padded[0, :7], atol=1e-3)


def test_converted_params_fill_the_module_with_logical_axes(checkpoint):
  path, _state = checkpoint
  module, params, _ = load_t5_encoder(path)
  boxed = jax.eval_shape(module.init, jax.random.key(0), IDS, KEY_MASK)["params"]
  shapes = jax.tree.map(lambda leaf: leaf.shape, nn.unbox(boxed))
  assert jax.tree.map(np.shape, params) == shapes
  specs = nn.get_partition_spec(boxed)
  assert tuple(specs["shared"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["relative_attention_bias"]["embedding"]) == (None, "heads")
  assert tuple(specs["block_1_q"]["kernel"]) == ("embed", "heads")
  assert tuple(specs["block_1_o"]["kernel"]) == ("heads", "embed")
  assert tuple(specs["block_1_wi_0"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["final_layer_norm"]["scale"]) == ("embed",)


def test_bfloat16_compute_stays_close(checkpoint):
  path, state = checkpoint
  module, params, _ = load_t5_encoder(path, dtype=jnp.bfloat16)
  ours = jax.jit(module.apply)({"params": params}, IDS, KEY_MASK)
  assert ours.dtype == jnp.bfloat16
  reference = numpy_forward(state, IDS, KEY_MASK)
  # bf16 rounds to 2^-8 relative; through two blocks of unscaled logits the error grows to ~2% (measured 2.2%)
  relative_rms_error = np.sqrt(np.mean((np.asarray(ours, np.float32) - reference) ** 2) / np.mean(reference**2))
  assert relative_rms_error < 0.05


def test_features_masks_cache_and_truncation(checkpoint):
  path, state = checkpoint
  encoder = T5TextFeatures(path, max_length=8, batch_size=4)
  calls = []
  forward = encoder._forward
  encoder._forward = lambda params, ids, mask: calls.append(len(ids)) or forward(params, ids, mask)
  captions = ["the camera pans left", "", "the camera pans left", "a man walks to the door then sits at the table"]
  features, mask = encoder.encode(captions)
  assert features.shape == (4, 8, 16) and calls == [4]  # three distinct captions: one padded batch
  assert mask.sum(1).tolist() == [5, 1, 5, 8]  # words + </s>; the empty prompt is </s> alone; truncated to 8
  token_ids, lengths = encoder.tokenize(captions)
  assert lengths.tolist() == [5, 1, 5, 8] and token_ids[3].tolist() == [4, 33, 35, 25, 3, 42, 27, 1]
  for row in range(4):
    length = int(mask[row].sum())
    assert token_ids[row, length - 1] == EOS  # </s> closes every caption, also a truncated one
    assert np.all(features[row, length:] == 0)
    reference = numpy_forward(state, token_ids[row : row + 1, :length])[0]
    np.testing.assert_allclose(features[row, :length], reference, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(features[0], features[2])
  encoder.encode(["", "the camera pans left"])
  assert calls == [4]


def test_sharded_and_tied_checkpoints_load_the_same(checkpoint, tmp_path):
  path, state = checkpoint
  _, reference, _ = load_t5_encoder(path)
  names = sorted(state)
  shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
  save_tokenizer(tmp_path)
  (tmp_path / "config.json").write_text((path / "config.json").read_text())
  for file, shard_names in shards.items():
    safetensors.numpy.save_file({name: state[name] for name in shard_names}, str(tmp_path / file))
  weight_map = {name: file for file, shard_names in shards.items() for name in shard_names}
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
  _, sharded, _ = load_t5_encoder(tmp_path)
  jax.tree.map(np.testing.assert_array_equal, sharded, reference)
  tied = {("encoder.embed_tokens.weight" if name == "shared.weight" else name): value for name, value in state.items()}
  write_checkpoint(tmp_path / "tied", tied)
  _, from_tied, _ = load_t5_encoder(tmp_path / "tied")
  np.testing.assert_array_equal(from_tied["shared"]["embedding"], state["shared.weight"])


def test_missing_or_broken_checkpoints_are_named(checkpoint, tmp_path):
  _path, state = checkpoint
  with pytest.raises(ConfigError, match=f"no T5 checkpoint at {tmp_path / 'absent'}.*save_pretrained"):
    load_t5_encoder(tmp_path / "absent")
  (tmp_path / "config.json").write_text(json.dumps(CONFIG))
  with pytest.raises(ConfigError, match=f"no model.safetensors or model.safetensors.index.json in {tmp_path}"):
    load_t5_encoder(tmp_path)
  (tmp_path / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(ConfigError, match="only PyTorch .bin weights; storyjax reads safetensors"):
    load_t5_encoder(tmp_path)
  broken = dict(state)
  broken["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"] = np.zeros((3, 3), np.float32)
  write_checkpoint(tmp_path / "broken", broken)
  with pytest.raises(DataError, match=r"encoder.block.1.layer.1.DenseReluDense.wi_1.weight has shape \(3, 3\)"):
    load_t5_encoder(tmp_path / "broken")
  del broken["encoder.block.1.layer.1.DenseReluDense.wi_1.weight"]
  write_checkpoint(tmp_path / "relu_config", broken, {**CONFIG, "feed_forward_proj": "relu"})
  with pytest.raises(DataError, match="no tensor encoder.block.0.layer.1.DenseReluDense.wi.weight"):
    load_t5_encoder(tmp_path / "relu_config")
  write_checkpoint(tmp_path / "swiglu", state, {**CONFIG, "feed_forward_proj": "gated-silu"})
  with pytest.raises(DataError, match="feed_forward_proj='gated-silu' is not supported"):
    load_t5_encoder(tmp_path / "swiglu")
  write_checkpoint(tmp_path / "no_tokenizer", state)
  (tmp_path / "no_tokenizer" / "tokenizer.json").unlink()
  with pytest.raises(ConfigError, match=f"no T5 tokenizer in {tmp_path / 'no_tokenizer'}"):
    load_t5_encoder(tmp_path / "no_tokenizer")
  with pytest.raises(ConfigError, match="max_length=0"):
    T5TextFeatures(tmp_path / "broken", max_length=0)


def test_unknown_feed_forward_is_refused_by_the_module():
  with pytest.raises(ValueError, match="feed_forward_proj='swish'"):
    T5Encoder(**{**CONFIG, "feed_forward_proj": "swish"}).init(jax.random.key(0), IDS)


def test_matches_transformers_t5_encoder_model(checkpoint):
  torch = pytest.importorskip("torch")
  path, _state = checkpoint
  module, params, _ = load_t5_encoder(path)
  model = transformers.T5EncoderModel.from_pretrained(str(path)).eval()
  with torch.no_grad():
    reference = model(
      input_ids=torch.from_numpy(IDS).long(), attention_mask=torch.from_numpy(KEY_MASK).long()
    ).last_hidden_state.numpy()
  valid = KEY_MASK.astype(bool)
  np.testing.assert_allclose(
    np.asarray(module.apply({"params": params}, IDS, KEY_MASK))[valid], reference[valid], atol=1e-5, rtol=1e-5
  )


def test_cad_takes_frozen_t5_features(checkpoint):
  """configs/cad.py with model.text_encoder='t5': captions → frozen T5 features (L, d_model) → TextRIN's loss."""
  path, _ = checkpoint
  config = cad.get_config("smoke")
  config.model.update({"text_encoder": "t5", "t5_path": str(path), "max_text_length": 12})
  task = get_task(config)
  source = task.source("train")
  examples = [task.preprocess(source[index]) for index in range(2)]
  assert examples[0]["text"].shape == (12, CONFIG["d_model"]) and examples[0]["text"].dtype == np.float32
  batch = jax.tree.map(lambda *leaves: np.stack(leaves), *examples)
  variables = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
  projection = variables["params"]["context"]["text_projection"]["kernel"].unbox()
  assert projection.shape == (CONFIG["d_model"], config.model.latent_dim)
  loss, _, _ = jax.eval_shape(task.loss, nn.unbox(variables), batch, jax.random.PRNGKey(1))
  assert loss.shape == () and loss.dtype == np.float32
