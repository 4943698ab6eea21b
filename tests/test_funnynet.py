"""FunnyNet-W: the fusion and projections against plain numpy as coded, the procedural clips' ground truth, the
feature-file loader, the loss and a short training that learns."""

import csv
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.data.funny import KINDS, MODALITIES, FeatureClips, FunnyClips, write_feature_clips
from storyjax.errors import ConfigError, DataError
from storyjax.models.funnynet import FunnyNet

pytestmark = pytest.mark.usefixtures("fast_compile")

SIZES = {"audio_dim": 12, "vision_dim": 10, "text_length": 6, "text_dim": 5}


def _gelu(values):
  from scipy.special import erf

  return 0.5 * values * (1 + erf(values / np.sqrt(2)))


def _gated(params, inputs):
  gate = inputs @ params["gate"]["kernel"] + params["gate"]["bias"]
  return _gelu(gate) * (inputs @ params["value"]["kernel"] + params["value"]["bias"])


def _layer_norm(params, inputs, epsilon=1e-6):
  mean, variance = inputs.mean(-1, keepdims=True), inputs.var(-1, keepdims=True)
  return (inputs - mean) / np.sqrt(variance + epsilon) * params["scale"] + params["bias"]


def _attention(params, queries, context, scale):
  project = lambda name, inputs: inputs @ params[name]["kernel"] + params[name]["bias"]
  logits = project("query", queries) @ np.swapaxes(project("key", context), -1, -2) * scale
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return weights / weights.sum(-1, keepdims=True) @ project("value", context)


def _numpy_fusion(params, projected, num_tokens, scaled):
  """CAF as network.py codes it: query = stack of L2-normalised tokens, one cross-attention per modality on its raw
  tokens, summed, self-attention with residual, chunks flattened and summed."""
  batch, width = next(iter(projected.values())).shape
  token_width = width // num_tokens
  scale = token_width**-0.5 if scaled else 1.0
  tokens = {name: value.reshape(batch, num_tokens, token_width) for name, value in projected.items()}
  stack = np.concatenate([t / np.linalg.norm(t, axis=-1, keepdims=True) for t in tokens.values()], axis=1)
  fused = sum(_attention(params[f"cross_{name}"], stack, t, scale) for name, t in tokens.items())
  fused = fused + _attention(params["self"], fused, fused, scale)
  return fused.reshape(batch, len(tokens), width).sum(1)


def _clips(batch=4, seed=0):
  rng = np.random.default_rng(seed)
  return {
    "audio": rng.normal(size=(batch, SIZES["audio_dim"])).astype(np.float32),
    "vision": rng.normal(size=(batch, SIZES["vision_dim"])).astype(np.float32),
    "text": rng.normal(size=(batch, SIZES["text_length"], SIZES["text_dim"])).astype(np.float32),
  }


@pytest.mark.parametrize(
  "modalities, scaled", [(MODALITIES, False), (MODALITIES, True), (("audio", "text"), False), (("vision",), False)]
)
def test_forward_equals_numpy_as_coded(modalities, scaled):
  model = FunnyNet(modalities, width=16, audio_hidden=24, lstm_width=3, num_tokens=4, scaled_attention=scaled)
  clips = _clips()
  variables = model.init(jax.random.key(0), clips)
  logits, projected = jax.jit(model.apply)(variables, clips)
  params = jax.tree.map(lambda value: np.asarray(value, np.float64), jax.device_get(nn.unbox(variables)["params"]))
  for name in set(modalities) - {"text"}:  # the LSTM is flax's; the text branch is checked after it
    hidden = _gated(params[f"{name}_out"], _gated(params[f"{name}_hidden"], clips[name].astype(np.float64)))
    np.testing.assert_allclose(projected[name], _layer_norm(params[f"{name}_norm"], hidden), rtol=2e-4, atol=2e-5)
  fused = _numpy_fusion(params["fusion"], {n: np.asarray(projected[n], np.float64) for n in modalities}, 4, scaled)
  np.testing.assert_allclose(logits, _gated(params["classifier"], fused), rtol=2e-4, atol=2e-5)
  assert logits.shape == (4, 2) and set(projected) == set(modalities)


def test_unread_modalities_do_not_matter_and_the_stack_order_is_fixed():
  model = FunnyNet(("audio", "text"), width=16, audio_hidden=8, lstm_width=3, num_tokens=4)
  clips = _clips()
  variables = model.init(jax.random.key(0), clips)
  other = {**clips, "vision": clips["vision"] + 100.0}
  np.testing.assert_array_equal(model.apply(variables, clips)[0], model.apply(variables, other)[0])
  with pytest.raises(ValueError, match="not divisible by num_tokens"):
    FunnyNet(("audio",), width=18, num_tokens=4).init(jax.random.key(0), clips)


def test_procedural_labels_follow_the_cross_modal_rule_and_every_kind_occurs():
  clips = FunnyClips("train", 4000, **SIZES, seed=3)
  label, kind = clips.arrays["label"], clips.arrays["kind"]
  funny = (clips.cue > 0) & (clips.delivery == clips.cue) & (clips.reaction_shown == 1)
  np.testing.assert_array_equal(label, funny)
  np.testing.assert_array_equal(label, kind == 0)
  assert 0.45 < label.mean() < 0.55 and set(np.unique(kind)) == set(range(len(KINDS)))
  # each negative kind removes the ingredient it names
  assert (clips.reaction_shown[kind == KINDS.index("no_reaction")] == 0).all()
  wrong = kind == KINDS.index("wrong_delivery")
  assert ((clips.delivery[wrong] != clips.cue[wrong]) & (clips.delivery[wrong] > 0)).all()
  assert (clips.cue[kind == KINDS.index("no_joke")] == 0).all()
  assert (clips.delivery[kind == KINDS.index("flat_delivery")] == 0).all()
  # a joke is its setup word, later its punchline; a decoy never is
  setups = clips.tokens == (clips.cue - 1)[:, None]
  punchlines = clips.tokens == (clips.num_cues + clips.cue - 1)[:, None]
  jokes = clips.cue > 0
  assert (setups[jokes].argmax(1) < punchlines[jokes].argmax(1)).all()
  for row in np.flatnonzero(~jokes):
    words = clips.tokens[row]
    for cue in range(clips.num_cues):
      setup_at, punchline_at = np.flatnonzero(words == cue), np.flatnonzero(words == clips.num_cues + cue)
      assert not (len(setup_at) and len(punchline_at) and setup_at.min() < punchline_at.max())


def test_splits_share_the_world_and_differ_in_clips():
  train, test = FunnyClips("train", 50, **SIZES), FunnyClips("test", 50, **SIZES)
  np.testing.assert_array_equal(train.audio_events, test.audio_events)
  np.testing.assert_array_equal(train.words, test.words)
  assert not np.allclose(train.arrays["audio"], test.arrays["audio"])
  again = FunnyClips("train", 50, **SIZES)
  np.testing.assert_array_equal(again.arrays["text"], train.arrays["text"])


def _ideal_accuracy(latents, label) -> float:
  """The best accuracy of a reader that knows `latents` [(N,) ...] exactly: the majority label of each group of
  clips that look the same to it."""
  _, groups = np.unique(np.stack(latents, axis=1), axis=0, return_inverse=True)
  positives = np.bincount(groups.ravel(), weights=label)
  return float(np.maximum(positives, np.bincount(groups.ravel()) - positives).sum() / len(label))


def test_single_modalities_and_pairs_cannot_see_every_negative():
  """The best accuracy of a reader that knows a subset's latents exactly (grouped by what it sees): every proper
  subset is capped well below the three modalities together."""
  clips = FunnyClips("train", 20000, **SIZES, seed=1)
  seen = {"audio": clips.delivery, "vision": clips.reaction_shown.astype(int), "text": clips.cue}
  label = clips.arrays["label"]

  accuracies = {
    subset: _ideal_accuracy([seen[name] for name in subset], label)
    for size in (1, 2, 3)
    for subset in itertools.combinations(MODALITIES, size)
  }
  assert accuracies[MODALITIES] == 1.0
  assert max(accuracy for subset, accuracy in accuracies.items() if len(subset) == 2) < 0.9
  assert max(accuracy for subset, accuracy in accuracies.items() if len(subset) == 1) < 0.7


def test_feature_files_round_trip_and_bad_files_are_named(tmp_path):
  train, test = FunnyClips("train", 6, **SIZES), FunnyClips("test", 3, **SIZES)
  write_feature_clips(tmp_path, train, "train")
  write_feature_clips(tmp_path, test, "test", first_clip=len(train))
  assert (tmp_path / "00006.npz").is_file()
  for split, source in (("train", train), ("test", test)):
    loaded = FeatureClips(tmp_path, split, **SIZES)
    for name in (*MODALITIES, "label"):
      np.testing.assert_array_equal(loaded.arrays[name], source.arrays[name])
    assert (loaded.arrays["kind"] == -1).all()
  with pytest.raises(DataError, match=r"text has shape \(6, 5\), the config expects \(7, 5\)"):
    FeatureClips(tmp_path, "train", **{**SIZES, "text_length": 7})
  (tmp_path / "00001.npz").unlink()
  with pytest.raises(DataError, match="missing feature file .*00001.npz"):
    FeatureClips(tmp_path, "train", **SIZES)
  rows = list(csv.reader((tmp_path / "labels.csv").open()))
  rows[2][2] = "funny"
  with (tmp_path / "labels.csv").open("w", newline="") as handle:
    csv.writer(handle).writerows(rows)
  with pytest.raises(DataError, match="line 3: split must be train or test and label 0 or 1"):
    FeatureClips(tmp_path, "train", **SIZES)
  with pytest.raises(DataError, match="is not a directory"):
    FeatureClips(tmp_path / "00000.npz", "train", **SIZES)
  (tmp_path / "labels.csv").unlink()
  with pytest.raises(DataError, match="no labels.csv"):
    FeatureClips(tmp_path, "train", **SIZES)


def _task(**overrides):
  from configs import funnynet
  from storyjax.tasks import get_task

  config = funnynet.get_config("smoke")
  for key, value in overrides.items():
    section, name = key.split(".")
    config[section][name] = value
  return get_task(config)


def test_loss_is_cross_entropy_plus_weighted_nt_xent_over_the_pairs():
  task = _task()
  source = task.source("train")
  batch = {key: jnp.asarray(value[:8]) for key, value in source.arrays.items()}
  variables = jax.jit(task.init)(jax.random.key(0), batch)
  loss, metrics, _ = jax.jit(task.loss)(variables, batch, jax.random.key(1))
  assert float(loss) == pytest.approx(float(metrics["classification_loss"] + 0.03 * metrics["contrastive_loss"]))
  from storyjax.losses import nt_xent

  clips = {name: batch[name] for name in MODALITIES}
  apply = jax.jit(lambda variables, clips, rng: task.model.apply(variables, clips, False, rngs={"dropout": rng}))
  _, projected = apply(variables, clips, jax.random.key(1))
  expected = sum(nt_xent(projected[a], projected[b], 0.5) for a, b in itertools.combinations(MODALITIES, 2))
  assert float(metrics["contrastive_loss"]) == pytest.approx(float(expected), rel=1e-5)
  single = _task(**{"model.modalities": "vision"})
  variables = jax.jit(single.init)(jax.random.key(0), batch)
  assert float(jax.jit(single.loss)(variables, batch, jax.random.key(1))[1]["contrastive_loss"]) == 0.0


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("model.modalities", "audio,smell", "unknown: \\['smell'\\]"),
    ("model.modalities", "", "name one or more"),
    ("model.modalities", "text,text", "each once"),
    ("loss.temperature", 0.0, "loss.temperature"),
    ("data.source", "friends", "data.source='friends'"),
    ("model.num_tokens", 5, "multiple of model.num_tokens"),
  ],
)
def test_bad_settings_are_config_errors(key, value, message):
  with pytest.raises(ConfigError, match=message):
    _task(**{key: value})


@pytest.mark.slow
def test_fused_training_beats_what_any_single_modality_can_know(runs_dir):
  """A short training on easy clips (low noise, two joke types): the fused model reads the visual reaction and the
  delivery (the text, slowest to learn, comes later) and beats the ideal reader of any one modality."""
  from configs import funnynet
  from storyjax import train as train_lib

  config = funnynet.get_config("smoke")
  config.update({"total_steps": 400, "batch_size": 32, "log_every": 400, "checkpoint_every": 400})
  config.model.update({"width": 32, "audio_hidden": 32, "lstm_width": 8, "num_tokens": 8})
  config.data.update({"train_size": 20000, "test_size": 500, "num_cues": 2, "noise": 0.1})
  config.data.update({"audio_dim": 8, "vision_dim": 8, "text_length": 4, "text_dim": 8})
  config.optimizer.update({"learning_rate": 3e-3, "warmup_steps": 20})
  config.eval.update({"at_end": True, "batch_size": 500})
  config.mesh.data = 1
  results = train_lib.train(config, runs_dir / "funnynet_learns")
  test = FunnyClips("test", 500, **{key: config.data[key] for key in SIZES}, num_cues=2, noise=0.1)
  seen = {"audio": test.delivery, "vision": test.reaction_shown.astype(int), "text": test.cue}
  assert results["accuracy"] > max(_ideal_accuracy([seen[name]], test.arrays["label"]) for name in MODALITIES) + 0.08
  assert results["accuracy_no_reaction"] > 0.9 and results["accuracy_flat_delivery"] > 0.9, results
