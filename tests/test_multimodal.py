"""Masked multimodal transformers: bitwise invariance to the values of absent tokens (layer, CosEmb's classifier,
ADAPT's model with both maskings), ADAPT's coded attention and key-masked attention against numpy, the post-norm
block against a numpy PyTorch TransformerEncoderLayer, the k-fold ensemble, ADAPT's stage methods and BatchNorm state.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.layers.attention import MultiHeadAttention, adapt_code_attention
from storyjax.layers.multimodal import MaskedModalityTransformer, PostNormBlock
from storyjax.models.multimodal import MODALITIES, AdaptModel, ExamSequenceClassifier, FoldEnsemble

pytestmark = pytest.mark.usefixtures("fast_compile")
WIDTH, NUM_HEADS, MLP_DIM = 8, 2, 16
# (B, M) presence with a token absent in some rows, none in one, and all but one in another.
PRESENT = np.array([[1, 0, 1, 1], [1, 1, 1, 1], [0, 0, 1, 0]], bool)
ADAPT_PRESENT = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
TINY_ADAPT = {
  "width": 8,
  "num_heads": 2,
  "mlp_dim": 16,
  "signal_channels": (4, 4, 4),
  "signal_kernel_sizes": (5, 3, 3),
  "audio_width": 4,
  "audio_dim": 8,
}
EXAM_CLASSIFIER = {"width": 8, "num_layers": 1, "num_heads": 2, "dropout_rate": 0.1}


def _normal(seed, shape, scale=1.0):
  return (scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _with_absent_values(values, present, seed, scale=100.0):
  """`values` (B, M, ...) with the absent entries (present (B, M) False) replaced by N(0, scale²) draws."""
  mask = present.reshape(present.shape + (1,) * (values.ndim - present.ndim))
  return np.where(mask, values, _normal(seed, values.shape, scale))


def _drawn(params, seed):
  """Parameters of the shapes of `params` (arrays or shape structs) drawn from N(0, fan_in⁻¹) for kernels, N(0, ¼)
  for vectors, so zero-initialised biases and CLS tokens and unit norm scales are exercised too."""
  leaves, treedef = jax.tree.flatten(nn.unbox(params))
  scales = [np.prod(leaf.shape[:-1]) ** -0.5 if len(leaf.shape) > 1 else 0.5 for leaf in leaves]
  drawn = [_normal(seed + index, leaf.shape, scale) for index, (leaf, scale) in enumerate(zip(leaves, scales))]
  return jax.tree.unflatten(treedef, drawn)


def _drawn_variables(module, seed, *inputs):
  """Variables of `module` for `inputs` with _drawn parameters and BatchNorm's initial averages (mean 0, var 1).

  The structure comes from jax.eval_shape of init: compiling init would cost seconds on XLA:CPU (every parameter's
  threefry draw), more than the programs under test.
  """
  variables = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs))
  batch_stats = jax.tree_util.tree_map_with_path(
    lambda path, leaf: np.full(leaf.shape, float(path[-1].key == "var"), np.float32),
    variables.get("batch_stats", {}),
  )
  return {"params": _drawn(variables["params"], seed), **({"batch_stats": batch_stats} if batch_stats else {})}


def _numpy_softmax(logits):
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)


def _numpy_key_masked_attention(params, queries, context, key_mask, num_heads):
  """Multi-head softmax(q·kᵀ/√Dh)·v over the keys with key_mask (B, Lk) True, from flax Dense parameters, float64."""
  params = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params)

  def project(name, inputs):
    projected = inputs @ params[name]["kernel"] + params[name].get("bias", 0.0)
    return projected.reshape(inputs.shape[:-1] + (num_heads, -1))

  query, key, value = project("query", queries), project("key", context), project("value", context)
  logits = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(query.shape[-1])
  weights = _numpy_softmax(np.where(key_mask[:, None, None, :], logits, -np.inf))
  attended = np.einsum("bhqk,bkhd->bqhd", weights, value).reshape(queries.shape[:-1] + (-1,))
  return attended @ params["out"]["kernel"] + params["out"]["bias"]


def _numpy_layer_norm(inputs, params, epsilon=1e-5):
  centred = inputs - inputs.mean(-1, keepdims=True)
  normalised = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + epsilon)
  return normalised * params["scale"] + params["bias"]


NUMPY_ACTIVATIONS = {
  "relu": lambda inputs: np.maximum(inputs, 0.0),
  # flax's nn.gelu is the tanh approximation by default.
  "gelu": lambda inputs: 0.5 * inputs * (1 + np.tanh(np.sqrt(2 / np.pi) * (inputs + 0.044715 * inputs**3))),
}


def _cls_function(module, deterministic=True):
  """jit of (variables, tokens, present, rng) → the CLS output (B, D) of a MaskedModalityTransformer."""

  def cls_output(variables, tokens, present, rng):
    rngs = None if deterministic else {"dropout": rng}
    return module.apply(variables, tokens, present, deterministic, rngs=rngs)[0]

  return jax.jit(cls_output)


@pytest.mark.parametrize(
  "num_layers, learned_positions, dropout_rate",
  [(1, False, 0.0), (2, True, 0.0), (2, True, 0.3)],
  ids=["one_layer", "positions_two_layers", "train_dropout"],
)
def test_key_masking_makes_the_cls_output_bitwise_independent_of_absent_tokens(
  num_layers, learned_positions, dropout_rate
):
  module = MaskedModalityTransformer(
    num_layers, NUM_HEADS, MLP_DIM, dropout_rate=dropout_rate, learned_positions=learned_positions, cls_init="normal"
  )
  tokens = _normal(0, PRESENT.shape + (WIDTH,))
  variables = _drawn_variables(module, 0, tokens, PRESENT)
  cls_output = _cls_function(module, deterministic=dropout_rate == 0.0)
  rng = jax.random.PRNGKey(1)
  reference = cls_output(variables, tokens, PRESENT, rng)
  perturbed = _with_absent_values(tokens, PRESENT, seed=1)
  assert np.abs(perturbed - tokens).max() > 10.0
  np.testing.assert_array_equal(cls_output(variables, perturbed, PRESENT, rng), reference)
  # The mask is what makes it so: marked present, the same values do change the CLS output.
  all_present = np.ones_like(PRESENT)
  changed = cls_output(variables, perturbed, all_present, rng) - cls_output(variables, tokens, all_present, rng)
  assert (np.abs(changed).max(-1) > 1e-3).tolist() == (~PRESENT).any(-1).tolist()
  if dropout_rate:  # dropout is on: another rng gives another output
    assert np.abs(cls_output(variables, tokens, PRESENT, jax.random.PRNGKey(2)) - reference).max() > 1e-3


def test_adapt_code_masking_is_not_invariant_to_absent_tokens():
  """ADAPT's coded masking keeps masked logits in the softmax's denominator (and shifts them by one global max), so
  an absent token's value changes the CLS output: the model must feed absent modalities a fixed placeholder."""
  module = MaskedModalityTransformer(
    1, NUM_HEADS, MLP_DIM, activation="gelu", masking="adapt_code", qkv_bias=False, cls_init="normal"
  )
  tokens = np.where(PRESENT[..., None], _normal(0, PRESENT.shape + (WIDTH,)), 0.0).astype(np.float32)  # placeholder
  variables = _drawn_variables(module, 0, tokens, PRESENT)
  cls_output = _cls_function(module)
  rng = jax.random.PRNGKey(1)
  changed = cls_output(variables, _with_absent_values(tokens, PRESENT, 1, scale=1.0), PRESENT, rng) - cls_output(
    variables, tokens, PRESENT, rng
  )
  assert (np.abs(changed).max(-1) > 1e-3).tolist() == (~PRESENT).any(-1).tolist(), changed


def test_exam_sequence_classifier_ignores_the_values_of_missing_exams():
  model = ExamSequenceClassifier(**EXAM_CLASSIFIER)
  features = _normal(0, PRESENT.shape + (5,))
  variables = _drawn_variables(model, 0, features, PRESENT)
  perturbed = _with_absent_values(features, PRESENT, seed=1)
  rngs = {"dropout": jax.random.PRNGKey(3)}
  evaluate = jax.jit(model.apply)
  train = jax.jit(lambda variables, features, present: model.apply(variables, features, present, False, rngs=rngs))
  for logits in (evaluate, train):
    reference = logits(variables, features, PRESENT)
    assert reference.shape == (PRESENT.shape[0],)
    np.testing.assert_array_equal(logits(variables, perturbed, PRESENT), reference)
    assert np.abs(logits(variables, perturbed, np.ones_like(PRESENT)) - reference).max() > 1e-4


def _adapt_inputs(seed):
  """Tiny ADAPT inputs for ADAPT_PRESENT: signals of 64 samples, log-mels (8, 16), video features (6,)."""
  shapes = {"ecg": (64,), "eda": (64,), "rr": (64,), "audio": (8, 16), "video": (6,)}
  batch = ADAPT_PRESENT.shape[0]
  inputs = {name: _normal(seed + index, (batch, *shape)) for index, (name, shape) in enumerate(shapes.items())}
  return {**inputs, "present": ADAPT_PRESENT}


@functools.cache
def _adapt_variables():
  """AdaptModel's variables (masking does not change them), shared by the tests."""
  return _drawn_variables(AdaptModel(**TINY_ADAPT), 0, _adapt_inputs(0))


@functools.cache
def _adapt_logits(masking):
  """jit of AdaptModel's evaluation (variables, inputs) → logits (B, 2), compiled once for the tests."""
  return jax.jit(AdaptModel(**TINY_ADAPT, masking=masking).apply)


@pytest.mark.parametrize("masking", ["key", "adapt_code"])
def test_adapt_model_ignores_the_values_of_missing_audio_and_video(masking):
  """With "adapt_code" only the zeros placeholder makes this hold (see the adapt_code layer test above)."""
  variables = _adapt_variables()
  inputs = _adapt_inputs(0)
  perturbed = dict(inputs)
  for seed, name in enumerate(("audio", "video"), start=10):
    absent = ~inputs["present"][:, MODALITIES.index(name)]
    assert absent.any() and not absent.all()
    perturbed[name] = _with_absent_values(inputs[name], ~absent, seed)
  logits = _adapt_logits(masking)
  reference = logits(variables, inputs)
  np.testing.assert_array_equal(logits(variables, perturbed), reference)
  # Marked present, the same values do reach the logits (row 0 has nothing perturbed).
  changed = logits(variables, {**perturbed, "present": np.ones_like(inputs["present"])}) - logits(
    variables, {**inputs, "present": np.ones_like(inputs["present"])}
  )
  assert (np.abs(changed).max(-1) > 1e-5).tolist() == [False, True, True, True]


def test_adapt_code_attention_matches_numpy_formula():
  batch, length, heads, head_dim = 2, 5, 2, 4
  query, key, value = (_normal(seed, (batch, length, heads, head_dim), 1.5) for seed in range(3))
  query[0] *= 3  # the global max then comes from example 0 and shifts example 1's masked logits
  present = np.array([[1, 0, 1, 1, 0], [1, 1, 0, 1, 1]], bool)
  logits = np.einsum("bqhd,bkhd->bhqk", query.astype(np.float64), key) / np.sqrt(head_dim)
  pair_mask = (present[:, None, :, None] & present[:, None, None, :]).astype(np.float64)
  weights = _numpy_softmax(logits + (1 - pair_mask) * -logits.max()) * pair_mask
  expected = np.einsum("bhqk,bkhd->bqhd", weights, value)
  got = adapt_code_attention(jnp.asarray(query), jnp.asarray(key), jnp.asarray(value), jnp.asarray(present))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_bias", [True, False])
def test_key_masked_attention_matches_numpy(use_bias):
  attention = MultiHeadAttention(NUM_HEADS, use_bias=use_bias)
  queries, context = _normal(0, (2, 3, WIDTH)), _normal(1, (2, 5, WIDTH))
  key_mask = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 1, 1]], bool)
  params = _drawn_variables(attention, 10, queries, context, key_mask)["params"]
  assert ("bias" in params["query"]) == use_bias and "bias" in params["out"]
  got = jax.jit(attention.apply)({"params": params}, queries, context, key_mask)
  expected = _numpy_key_masked_attention(params, queries, context, key_mask, NUM_HEADS)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation, qkv_bias", [("relu", True), ("gelu", False)], ids=["cosemb", "adapt"])
def test_post_norm_block_matches_numpy_torch_encoder_layer(activation, qkv_bias):
  block = PostNormBlock(NUM_HEADS, MLP_DIM, activation, qkv_bias=qkv_bias)
  tokens = _normal(0, PRESENT.shape + (WIDTH,))
  params = _drawn_variables(block, 20, tokens, PRESENT)["params"]
  apply = jax.jit(block.apply)
  # At scale 1e-2 (tokens, biases, norm scales and offsets) the variances entering both norms are within a few
  # tens of eps, so eps = 1e-5 is tested too.
  for scale in (1.0, 1e-2):
    scaled = jax.tree.map(lambda leaf, scale=scale: leaf * scale if leaf.ndim == 1 else leaf, params)
    got = apply({"params": scaled}, tokens * scale, PRESENT)
    numpy_params = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), scaled)
    inputs = tokens.astype(np.float64) * scale
    attended = _numpy_key_masked_attention(numpy_params["attention"], inputs, inputs, PRESENT, NUM_HEADS)
    hidden = _numpy_layer_norm(inputs + attended, numpy_params["attention_norm"])
    mlp = numpy_params["mlp"]
    transformed = (
      NUMPY_ACTIVATIONS[activation](hidden @ mlp["fc1"]["kernel"] + mlp["fc1"]["bias"]) @ mlp["fc2"]["kernel"]
      + mlp["fc2"]["bias"]
    )
    expected = _numpy_layer_norm(hidden + transformed, numpy_params["mlp_norm"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def test_fold_ensemble_stacks_independent_classifiers():
  num_folds = 3
  ensemble = FoldEnsemble(num_folds, EXAM_CLASSIFIER)
  features = _normal(0, PRESENT.shape + (5,))
  params = nn.unbox(jax.jit(ensemble.init)(jax.random.PRNGKey(0), features, PRESENT))["params"]["folds"]
  assert all(leaf.shape[0] == num_folds for leaf in jax.tree.leaves(params))
  kernels = np.asarray(params["input_projection"]["kernel"])
  assert all(np.abs(kernels[i] - kernels[j]).max() > 1e-3 for i in range(num_folds) for j in range(i))
  params = _drawn(params, seed=30)  # every leaf differs between folds, biases and CLS included
  logits = jax.jit(ensemble.apply)({"params": {"folds": params}}, features, PRESENT)
  assert logits.shape == (num_folds, PRESENT.shape[0])
  single = jax.jit(ExamSequenceClassifier(**EXAM_CLASSIFIER).apply)
  for fold in range(num_folds):
    fold_params = jax.tree.map(lambda leaf, fold=fold: leaf[fold], params)
    np.testing.assert_allclose(logits[fold], single({"params": fold_params}, features, PRESENT), rtol=1e-5, atol=1e-6)


def test_adapt_model_stage_methods_and_batch_norm_state():
  model = AdaptModel(**TINY_ADAPT)
  variables = _adapt_variables()
  inputs = _adapt_inputs(0)

  @jax.jit
  def stages(variables, inputs):
    tokens = model.apply(variables, inputs, method=AdaptModel.embed)
    return tokens, model.apply(variables, tokens, inputs["present"], method=AdaptModel.fuse)

  tokens, cls = stages(variables, inputs)
  logits = _adapt_logits("key")(variables, inputs)
  batch = inputs["present"].shape[0]
  assert tokens.shape == (batch, len(MODALITIES), TINY_ADAPT["width"])
  assert cls.shape == (batch, TINY_ADAPT["width"]) and logits.shape == (batch, 2)
  assert np.isfinite(logits).all()

  train = jax.jit(
    lambda variables, inputs: model.apply(
      variables, inputs, True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(5)}
    )
  )
  train_logits, updated = train(variables, inputs)
  assert train_logits.shape == (batch, 2)
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(updated["batch_stats"])
  assert len(before) == len(after) > 0
  assert all(np.abs(np.asarray(new) - np.asarray(old)).max() > 1e-6 for old, new in zip(before, after))
  # The video head's BatchNorm sees Dense(zero-filled video features): its running averages move by momentum 0.9.
  head = nn.unbox(variables["params"])["heads_video"]["dense"]
  video = np.where(inputs["present"][:, -1:], inputs["video"], 0.0).astype(np.float64)
  projected = video @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)
  stats = updated["batch_stats"]["heads_video"]["norm"]
  np.testing.assert_allclose(stats["mean"], 0.1 * projected.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * projected.var(0), rtol=1e-5, atol=1e-6)
