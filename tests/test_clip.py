"""CLIP text encoder: a tiny random checkpoint in the Hugging Face layout, our forward against a numpy forward."""

import dataclasses
import json
import math
import pathlib

import flax
import numpy as np
import pytest
import safetensors.numpy
import transformers

from configs import director as director_config
from storyjax import train as train_lib
from storyjax.errors import ConfigError, DataError
from storyjax.text.clip import ClipTextFeatures, eos_positions, load_clip_text

pytestmark = pytest.mark.usefixtures("fast_compile")

CONFIG = {
  "vocab_size": 518,
  "hidden_size": 16,
  "intermediate_size": 32,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "max_position_embeddings": 77,
  "layer_norm_eps": 1e-5,
  "hidden_act": "quick_gelu",
  "eos_token_id": 517,
}


def _byte_characters() -> list[str]:
  """GPT-2/CLIP's printable stand-ins for the 256 bytes."""
  printable = (
    list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  )
  others = [b for b in range(256) if b not in printable]
  return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _random_state(rng) -> dict[str, np.ndarray]:
  d, ff = CONFIG["hidden_size"], CONFIG["intermediate_size"]
  normal = lambda *shape: rng.normal(0, 0.3, size=shape).astype(np.float32)
  state = {
    "text_model.embeddings.token_embedding.weight": normal(CONFIG["vocab_size"], d),
    "text_model.embeddings.position_embedding.weight": normal(CONFIG["max_position_embeddings"], d),
    "text_model.final_layer_norm.weight": 1 + normal(d),
    "text_model.final_layer_norm.bias": normal(d),
    "text_projection.weight": normal(d, d),
    "logit_scale": np.array(2.6, np.float32),
    "vision_model.embeddings.class_embedding": normal(d),
  }
  for index in range(CONFIG["num_hidden_layers"]):
    prefix = f"text_model.encoder.layers.{index}"
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      state[f"{prefix}.self_attn.{name}.weight"], state[f"{prefix}.self_attn.{name}.bias"] = normal(d, d), normal(d)
    for name in ("layer_norm1", "layer_norm2"):
      state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"] = 1 + normal(d), normal(d)
    state[f"{prefix}.mlp.fc1.weight"], state[f"{prefix}.mlp.fc1.bias"] = normal(ff, d), normal(ff)
    state[f"{prefix}.mlp.fc2.weight"], state[f"{prefix}.mlp.fc2.bias"] = normal(d, ff), normal(d)
  return state


def write_checkpoint(path: pathlib.Path, state: dict, weights: str = "safetensors", config: dict = CONFIG) -> None:
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps({"architectures": ["CLIPModel"], "text_config": config}))
  if weights == "safetensors":
    safetensors.numpy.save_file(state, str(path / "model.safetensors"))
  else:  # HF's Flax layout: nested modules, (in, out) kernels, `embedding` and `scale` leaves
    tree = {}
    for name, value in state.items():
      parts = name.split(".")
      if parts[-1] == "weight" and parts[-2].endswith("_embedding"):
        parts[-1] = "embedding"
      elif parts[-1] == "weight":
        parts[-1], value = ("kernel", value.T) if value.ndim == 2 else ("scale", value)
      node = tree
      for part in parts[:-1]:
        node = node.setdefault(part, {})
      node[parts[-1]] = value
    (path / "flax_model.msgpack").write_bytes(flax.serialization.msgpack_serialize(tree))
  characters = _byte_characters()
  merges = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "m")]
  vocab = {
    token: index
    for index, token in enumerate(
      characters + [c + "</w>" for c in characters] + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    )
  }
  assert len(vocab) == CONFIG["vocab_size"]
  (path / "vocab.json").write_text(json.dumps(vocab))
  (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")


def numpy_forward(
  state: dict, ids: np.ndarray, key_mask: np.ndarray | None = None, hidden_act: str = "quick_gelu"
) -> np.ndarray:
  """HF CLIPTextModel's last_hidden_state (ids (B, L), key_mask (B, L) 1 = token), written out in numpy."""
  get = lambda name: state[f"text_model.{name}"].astype(np.float64)

  def layer_norm(x, name):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * get(f"{name}.weight") + get(
      f"{name}.bias"
    )

  linear = lambda x, name: x @ get(f"{name}.weight").T + get(f"{name}.bias")
  batch, length = ids.shape
  d, heads = CONFIG["hidden_size"], CONFIG["num_attention_heads"]
  hidden = get("embeddings.token_embedding.weight")[ids] + get("embeddings.position_embedding.weight")[:length]
  allowed = np.tril(np.ones((length, length), bool))[None, None]
  if key_mask is not None:
    allowed = allowed & (np.asarray(key_mask, bool)[:, None, None, :])
  activation = {
    "quick_gelu": lambda x: x / (1 + np.exp(-1.702 * x)),
    "gelu": np.vectorize(lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2)))),
  }[hidden_act]
  for index in range(CONFIG["num_hidden_layers"]):
    prefix = f"encoder.layers.{index}"
    normed = layer_norm(hidden, f"{prefix}.layer_norm1")
    split = lambda x: x.reshape(batch, length, heads, d // heads).transpose(0, 2, 1, 3)
    q, k, v = (split(linear(normed, f"{prefix}.self_attn.{n}_proj")) for n in "qkv")
    logits = np.where(allowed, q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads), -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, length, d)
    hidden = hidden + linear(attended, f"{prefix}.self_attn.out_proj")
    fc1 = linear(layer_norm(hidden, f"{prefix}.layer_norm2"), f"{prefix}.mlp.fc1")
    hidden = hidden + linear(activation(fc1), f"{prefix}.mlp.fc2")
  return layer_norm(hidden, "final_layer_norm")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  state = _random_state(np.random.default_rng(0))
  path = tmp_path_factory.mktemp("clip")
  write_checkpoint(path, state)
  return path, state


def test_forward_matches_numpy(checkpoint):
  path, state = checkpoint
  module, params, _tokenizer = load_clip_text(path)
  ids = np.array([[516, 513, 515, 68, 81, 517, 517, 517], [516, 3, 9, 200, 517, 517, 517, 517]], np.int32)
  ours = np.asarray(module.apply({"params": params}, ids))
  np.testing.assert_allclose(ours, numpy_forward(state, ids), atol=2e-5, rtol=1e-4)


def test_msgpack_checkpoint_gives_the_same_features(checkpoint, tmp_path):
  path, state = checkpoint
  write_checkpoint(tmp_path, state, weights="msgpack")
  reference = ClipTextFeatures(path, max_length=12).encode(["the camera pans"])[0]
  np.testing.assert_allclose(
    ClipTextFeatures(tmp_path, max_length=12).encode(["the camera pans"])[0], reference, atol=1e-6
  )


def test_features_masks_cache_and_truncation(checkpoint):
  path, state = checkpoint
  encoder = ClipTextFeatures(path, max_length=12, batch_size=4)
  calls = []
  forward = encoder._forward
  encoder._forward = lambda params, ids: calls.append(len(ids)) or forward(params, ids)
  captions = ["the cam", "a b", "the cam", "a much longer caption than twelve tokens"]
  features, mask = encoder.encode(captions)
  assert features.shape == (4, 12, 16) and calls == [4]  # three distinct captions: one padded batch
  ids = encoder.tokenizer(captions, padding="max_length", truncation=True, max_length=12)["input_ids"]
  for row, (token_ids, valid) in enumerate(zip(ids, mask)):
    length = int(valid.sum())
    assert valid[:length].all() and token_ids[length - 1] == 517  # end-of-text is the last valid token
    assert np.all(features[row, length:] == 0)
    np.testing.assert_allclose(
      features[row, :length], numpy_forward(state, np.array([token_ids]))[0, :length], atol=2e-5, rtol=1e-4
    )
  assert mask[3].all()  # truncated to 12 with end-of-text kept last
  np.testing.assert_array_equal(features[0], features[2])
  encoder.encode(["a b", "the cam"])
  assert calls == [4]


def test_missing_or_broken_checkpoints_are_named(checkpoint, tmp_path):
  _path, state = checkpoint
  with pytest.raises(DataError, match=f"no CLIP checkpoint at {tmp_path / 'absent'}"):
    load_clip_text(tmp_path / "absent")
  (tmp_path / "config.json").write_text(json.dumps(CONFIG))
  with pytest.raises(DataError, match="model.safetensors or flax_model.msgpack"):
    load_clip_text(tmp_path)
  broken = dict(state)
  broken["text_model.encoder.layers.1.mlp.fc1.weight"] = np.zeros((3, 3), np.float32)
  write_checkpoint(tmp_path / "broken", broken)
  with pytest.raises(DataError, match=r"layers.1.mlp.fc1.weight has shape \(3, 3\)"):
    load_clip_text(tmp_path / "broken")
  del broken["text_model.final_layer_norm.bias"]
  broken["text_model.encoder.layers.1.mlp.fc1.weight"] = state["text_model.encoder.layers.1.mlp.fc1.weight"]
  write_checkpoint(tmp_path / "incomplete", broken)
  with pytest.raises(DataError, match="final_layer_norm.bias"):
    load_clip_text(tmp_path / "incomplete")
  write_checkpoint(tmp_path / "no_merges", state)
  (tmp_path / "no_merges" / "merges.txt").unlink()
  with pytest.raises(DataError, match=f"no CLIP tokenizer in {tmp_path / 'no_merges'}"):
    load_clip_text(tmp_path / "no_merges")


def test_padding_attention_mask_and_gelu_match_numpy(checkpoint):
  path, state = checkpoint
  module, params, _ = load_clip_text(path)
  ids = np.array([[516, 68, 81, 517, 517, 517], [516, 3, 9, 200, 70, 517]], np.int32)
  key_mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)
  np.testing.assert_allclose(
    module.apply({"params": params}, ids, key_mask), numpy_forward(state, ids, key_mask), atol=2e-5, rtol=1e-4
  )
  gelu = dataclasses.replace(module, hidden_act="gelu")
  np.testing.assert_allclose(
    gelu.apply({"params": params}, ids), numpy_forward(state, ids, hidden_act="gelu"), atol=2e-5, rtol=1e-4
  )


def test_truncation_follows_openai_clip_tokenize(checkpoint):
  path, state = checkpoint
  encoder = ClipTextFeatures(path, max_length=8)
  caption = "the camera moves forward then pans left"
  words = encoder.tokenizer(caption, add_special_tokens=False)["input_ids"]
  assert len(words) > 6
  openai_ids = ([516] + words + [517])[:8]  # clip.tokenize(truncate=True): cut to the context, EOT written last
  openai_ids[-1] = 517
  token_ids, lengths = encoder.tokenize([caption])
  np.testing.assert_array_equal(token_ids[0], openai_ids)
  assert lengths.tolist() == [8]
  features, mask = encoder.encode([caption])
  assert mask.all()
  np.testing.assert_allclose(
    encoder.pooled(features, mask)[0], numpy_forward(state, token_ids)[0, -1], atol=2e-5, rtol=1e-4
  )


def test_pooled_is_the_end_of_text_feature(checkpoint):
  path, state = checkpoint
  encoder = ClipTextFeatures(path, max_length=12)
  features, mask = encoder.encode(["the cam", "a b c d"])
  assert mask.sum(1).tolist() == [5, 6]
  ids = np.full((2, 12), 517, np.int32)  # BOS the</w> ca m</w> EOT; BOS a</w> b</w> c</w> d</w> EOT
  ids[0, :5], ids[1, :6] = [516, 513, 514, 332, 517], [516, 320, 321, 322, 323, 517]
  reference = numpy_forward(state, ids)
  np.testing.assert_allclose(encoder.pooled(features, mask), reference[[0, 1], [4, 5]], atol=2e-5, rtol=1e-4)


def test_matches_transformers_clip_text_model(checkpoint):
  torch = pytest.importorskip("torch")
  path, _state = checkpoint
  module, params, _ = load_clip_text(path)
  model = transformers.CLIPTextModel.from_pretrained(str(path)).eval()
  ids = np.array([[516, 513, 515, 68, 81, 517, 517, 517], [516, 3, 9, 200, 517, 517, 517, 517]], np.int32)
  with torch.no_grad():
    reference = model(input_ids=torch.from_numpy(ids).long()).last_hidden_state.numpy()
  np.testing.assert_allclose(module.apply({"params": params}, ids), reference, atol=2e-5, rtol=1e-4)


def test_end_of_text_positions():
  ids = np.array([[516, 5, 517, 517], [516, 5, 6, 517]])
  assert eos_positions(ids, 517).tolist() == [2, 3]
  assert eos_positions(ids, 2).tolist() == [2, 3]  # legacy configs: argmax, EOT being the largest id
  with pytest.raises(DataError, match="no end-of-text token 49407"):
    eos_positions(ids, 49407)


def test_bad_settings_are_config_errors(checkpoint):
  path, _ = checkpoint
  with pytest.raises(ConfigError, match="max_length=78"):
    ClipTextFeatures(path, max_length=78)


def test_director_trains_on_clip_features_of_the_embedded_captions(checkpoint, runs_dir):
  path, _ = checkpoint
  config = director_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.total_steps, config.batch_size = 2, 4
  config.model.text_encoder = "clip"
  with pytest.raises(ConfigError, match="clip_path"):
    train_lib.train(config, runs_dir / "clip_without_path")
  config.model.clip_path = str(path)
  train_lib.train(config, runs_dir / "clip")
  assert len((runs_dir / "clip" / "metrics.jsonl").read_text().splitlines()) == 2
