"""Director A/B/C: the shared block against a numpy reference, and the conditioning invariances of each variant."""

import json
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import director as director_config
from storyjax import train as train_lib
from storyjax.layers.transformer import TransformerBlock
from storyjax.models.director import Director
from storyjax.tasks.director import Task

pytestmark = pytest.mark.usefixtures("fast_compile")

WIDTH, HEADS, FRAMES, CAPTION_LENGTH, VOCAB = 16, 2, 12, 5, 20


def _perturbed(params, seed=0, scale=0.3):
  """Random values for every parameter, so zero-initialised gates and projections do not hide anything."""
  leaves, treedef = jax.tree.flatten(nn.unbox(params))
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [scale * jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves)])


# ---- numpy reference of one block -----------------------------------------------------------------------------
def _layer_norm(x, scale=None, bias=None):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  normed = (x - mean) / np.sqrt(var + 1e-6)
  return normed if scale is None else normed * scale + bias


def _attention(p, queries, context, key_mask):
  def heads(name, inputs):
    projected = inputs @ p[name]["kernel"] + p[name]["bias"]
    return projected.reshape(inputs.shape[:-1] + (HEADS, WIDTH // HEADS))

  q, k, v = heads("query", queries), heads("key", context), heads("value", context)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(WIDTH // HEADS)
  logits = np.where(key_mask[:, None, None, :], logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  attended = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(queries.shape)
  return attended @ p["out"]["kernel"] + p["out"]["bias"]


def _mlp(p, x):
  hidden = x @ p["fc1"]["kernel"] + p["fc1"]["bias"]
  hidden = 0.5 * hidden * (1 + np.tanh(np.sqrt(2 / np.pi) * (hidden + 0.044715 * hidden**3)))
  return hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def _reference_block(p, tokens, key_mask, context=None, context_mask=None, condition=None):
  p = jax.tree.map(np.asarray, p)
  if context is not None:
    normed = _layer_norm(tokens, p["cross_attention_norm"]["scale"], p["cross_attention_norm"]["bias"])
    tokens = tokens + _attention(p["cross_attention"], normed, context, context_mask)
  if condition is None:
    normed = _layer_norm(tokens, p["attention_norm"]["scale"], p["attention_norm"]["bias"])
    tokens = tokens + _attention(p["attention"], normed, normed, key_mask)
    normed = _layer_norm(tokens, p["mlp_norm"]["scale"], p["mlp_norm"]["bias"])
    return tokens + _mlp(p["mlp"], normed)
  silu = condition / (1 + np.exp(-condition))
  terms = silu @ p["modulation"]["kernel"] + p["modulation"]["bias"]
  shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = np.split(terms[:, None], 6, axis=-1)
  normed = _layer_norm(tokens) * (1 + scale_sa) + shift_sa
  tokens = tokens + gate_sa * _attention(p["attention"], normed, normed, key_mask)
  normed = _layer_norm(tokens) * (1 + scale_mlp) + shift_mlp
  return tokens + gate_mlp * _mlp(p["mlp"], normed)


@pytest.mark.parametrize("style", ["plain", "cross_attention", "adaln"])
def test_block_matches_numpy_reference(style):
  rng = np.random.default_rng(0)
  tokens = rng.normal(size=(2, 7, WIDTH)).astype(np.float32)
  key_mask = np.array([[True] * 7, [True] * 4 + [False] * 3])
  extra = {}
  if style == "cross_attention":
    extra = {
      "context": rng.normal(size=(2, 5, WIDTH)).astype(np.float32),
      "context_mask": np.array([[True] * 5, [True, True, False, False, False]]),
    }
  elif style == "adaln":
    extra = {"condition": rng.normal(size=(2, WIDTH)).astype(np.float32)}
  block = TransformerBlock(HEADS, 3 * WIDTH)
  params = _perturbed(block.init(jax.random.PRNGKey(1), tokens, key_mask, **extra)["params"])
  ours = block.apply({"params": params}, tokens, key_mask, **extra)
  expected = _reference_block(params, tokens, key_mask, **extra)
  np.testing.assert_allclose(np.asarray(ours), expected, rtol=2e-5, atol=2e-5)
  names = set(params)
  assert ("cross_attention" in names) == (style == "cross_attention")
  assert ("modulation" in names) == (style == "adaln")


# ---- the three variants -------------------------------------------------------------------------------------
def _inputs(seed, frozen=False):
  rng = np.random.default_rng(seed)
  batch = 3
  caption = (
    rng.normal(size=(batch, CAPTION_LENGTH, 8)).astype(np.float32)
    if frozen
    else rng.integers(1, VOCAB, size=(batch, CAPTION_LENGTH)).astype(np.int32)
  )
  return {
    "camera_traj": rng.normal(size=(batch, FRAMES, 9)).astype(np.float32),
    "c_noise": rng.normal(size=(batch,)).astype(np.float32),
    "char_traj": rng.normal(size=(batch, FRAMES, 3)).astype(np.float32),
    "caption": caption,
    "caption_mask": np.arange(CAPTION_LENGTH)[None] < np.array([[5], [3], [4]]),
    "frame_mask": np.arange(FRAMES)[None] < np.array([[12], [8], [10]]),
    "drop_char": np.zeros(batch, bool),
    "drop_caption": np.zeros(batch, bool),
  }


def _model(variant, frozen=False):
  return Director(
    num_frames=FRAMES,
    width=WIDTH,
    num_layers=2,
    num_heads=HEADS,
    variant=variant,
    text_encoder="clip" if frozen else "scratch",
    vocab_size=VOCAB,
    text_width=WIDTH,
    text_layers=1,
    text_heads=HEADS,
    max_caption_length=CAPTION_LENGTH,
    caption_tokens="pooled",
    num_registers=4,
    condition_layers=1,
  )


@pytest.fixture(scope="module", params=["A", "B", "C"])
def variant_model(request):
  model = _model(request.param)
  inputs = _inputs(0)
  params = _perturbed(model.init(jax.random.PRNGKey(0), **inputs)["params"], seed=1)
  apply = jax.jit(lambda params, inputs: model.apply({"params": params}, **inputs))
  return request.param, params, apply


def test_variant_parameters(variant_model):
  variant, params, _ = variant_model
  backbone_block = params["backbone"]["block_0"]
  assert ("modulation" in backbone_block) == (variant == "B")
  assert ("cross_attention" in backbone_block) == (variant == "C")
  assert ("condition_mapper" in params) == (variant == "C")
  if variant == "C":
    assert params["condition_mapper"]["registers"].shape == (4, WIDTH)
    assert set(params["condition_mapper"]["encoder"]) == {"block_0", "final_norm"}


def test_padding_frames_do_not_leak(variant_model):
  variant, params, apply = variant_model
  inputs = _inputs(0)
  changed = dict(inputs)
  padded = ~inputs["frame_mask"][..., None]
  changed["camera_traj"] = np.where(padded, 100.0, inputs["camera_traj"]).astype(np.float32)
  changed["char_traj"] = np.where(padded, -50.0, inputs["char_traj"]).astype(np.float32)
  valid = inputs["frame_mask"][..., None]
  before, after = np.asarray(apply(params, inputs)), np.asarray(apply(params, changed))
  # A and B see the character as one flattened vector (as published), so its padded frames count there.
  if variant == "C":
    np.testing.assert_allclose(after * valid, before * valid, atol=1e-5)
  changed["char_traj"] = inputs["char_traj"]
  after = np.asarray(apply(params, changed))
  np.testing.assert_allclose(after * valid, before * valid, atol=1e-5)


@pytest.mark.parametrize("condition", ["caption", "char_traj"])
def test_dropped_condition_is_ignored_and_kept_condition_is_used(variant_model, condition):
  _, params, apply = variant_model
  inputs, other = _inputs(0), _inputs(7)
  changed = dict(inputs, **{condition: other[condition]})
  drop_key = "drop_caption" if condition == "caption" else "drop_char"
  kept = np.abs(np.asarray(apply(params, inputs)) - np.asarray(apply(params, changed))).max()
  assert kept > 1e-3, f"changing the {condition} does not change the output"
  dropped = dict(inputs, **{drop_key: np.ones(3, bool)})
  dropped_changed = dict(changed, **{drop_key: np.ones(3, bool)})
  np.testing.assert_allclose(np.asarray(apply(params, dropped)), np.asarray(apply(params, dropped_changed)), atol=1e-5)


@pytest.mark.parametrize("variant", ["A", "B", "C"])
def test_frozen_caption_features_pool_at_the_last_valid_token(variant):
  model = _model(variant, frozen=True)
  inputs = _inputs(1, frozen=True)
  params = _perturbed(model.init(jax.random.PRNGKey(0), **inputs)["params"], seed=2)
  out = model.apply({"params": params}, **inputs)
  assert out.shape == (3, FRAMES, 9) and "text_encoder" not in params
  # Features after the last valid token are padding: changing them changes nothing.
  changed = dict(inputs, caption=np.where(inputs["caption_mask"][..., None], inputs["caption"], 9.0))
  np.testing.assert_allclose(np.asarray(model.apply({"params": params}, **changed)), np.asarray(out), atol=1e-5)


@pytest.mark.parametrize("variant", ["B", "C"])
def test_variant_fits_a_batch(variant):
  """A few Adam steps on one batch reduce the denoising error a lot: gradients reach every part."""
  model = _model(variant)
  inputs = _inputs(3)
  target = np.tanh(inputs["camera_traj"])
  params = nn.unbox(model.init(jax.random.PRNGKey(0), **inputs)["params"])
  optimizer = optax.adam(3e-3)
  opt_state = optimizer.init(params)

  def loss_fn(params):
    return jnp.mean((model.apply({"params": params}, **inputs) - target) ** 2)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(60):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.3 * losses[0], losses[::10]


@pytest.mark.parametrize("variant", ["B", "C"])
def test_smoke_config_trains_every_variant(runs_dir, variant):
  config = director_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.total_steps, config.checkpoint_every = 2, 2
  config.model.variant = variant
  train_lib.train(config, runs_dir / f"director_{variant}")
  losses = [json.loads(line)["loss"] for line in (runs_dir / f"director_{variant}" / "metrics.jsonl").open()]
  assert len(losses) == 2 and np.all(np.isfinite(losses))


def test_paper_config_keeps_the_published_optimisation():
  """The embedded-data recipes (lr 1e-3 for A and C, 3e-4 for B, p_mean 0) must not leak into the published one."""
  default, paper = director_config.get_config(), director_config.get_config("paper")
  assert (default.model.variant, default.optimizer.learning_rate, default.diffusion.p_mean) == ("A", 1e-3, 0.0)
  optimizer = paper.optimizer
  assert (optimizer.learning_rate, optimizer.weight_decay, optimizer.warmup_steps) == (1e-4, 0.1, 5000)
  assert (paper.diffusion.p_mean, paper.diffusion.p_std, paper.diffusion.rho, paper.diffusion.guidance_weight) == (
    -1.2,
    1.2,
    40.0,
    1.4,
  )


def test_b_and_c_configs_carry_their_recipe_and_b_warns_at_a_learning_rate_it_does_not_learn_at(caplog):
  for variant, learning_rate in (("B", 3e-4), ("C", 1e-3)):
    config = director_config.get_config(variant)
    assert (config.model.variant, config.optimizer.learning_rate, config.name) == (
      variant,
      learning_rate,
      f"director_{variant}",
    )
  b_config = director_config.get_config("B")
  with caplog.at_level(logging.WARNING):
    Task(b_config)
  assert "learning_rate" not in caplog.text
  b_config.optimizer.learning_rate = 1e-3
  with caplog.at_level(logging.WARNING):
    Task(b_config)
  assert "optimizer.learning_rate=0.001" in caplog.text and "configs/director.py:B" in caplog.text
