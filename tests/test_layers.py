"""Shared layers (conv, norms, patches, positions, condition mapper, LayerScale) against numpy references,
and their logical partitioning on an 8-device mesh."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec
import numpy as np
import pytest

from storyjax import sharding
from storyjax.layers.attention import MultiHeadAttention
from storyjax.layers.condition import ConditionMapper
from storyjax.layers.conv import Conv3D, ConvBlock, conv
from storyjax.layers.dropout import Dropout, keep_mask
from storyjax.layers.embeddings import LearnedPositions, sinusoidal_embedding_2d
from storyjax.layers.mlp import MlpBlock, layer_norm
from storyjax.layers.norms import NORMS, make_norm
from storyjax.layers.patches import PatchEmbedding, patchify, unpatchify
from storyjax.layers.transformer import TransformerBlock

pytestmark = pytest.mark.usefixtures("fast_compile")  # many small jits: compiling is most of this file's time

RULE_NAMES = {name for name, _ in sharding.LOGICAL_AXIS_RULES}
EPS = 1e-6


def _random_variables(module, *args, seed=0, scale=0.3, **kwargs):
  """Random values for every variable of `module` (shapes from eval_shape, nothing compiled): parameters
  N(0, scale²), batch statistics U(0.5, 1.5) (a valid variance), so no ones/zeros initialiser hides anything."""
  shapes = nn.unbox(jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args, **kwargs)))
  rng = np.random.default_rng(seed)
  draw = {
    "params": lambda shape: scale * rng.normal(size=shape),
    "batch_stats": lambda shape: rng.uniform(0.5, 1.5, shape),
  }
  return {
    collection: jax.tree.map(lambda leaf: draw[collection](leaf.shape).astype(np.float32), tree)
    for collection, tree in shapes.items()
  }


# ---- numpy references ----------------------------------------------------------------------------------------
def _np_conv_same(inputs, kernel, bias, strides):
  """Cross-correlation with TF/XLA "SAME" padding: out = ceil(n/s), padding split low = total // 2."""
  spatial = inputs.shape[1:-1]
  taps = kernel.shape[:-2]
  pads = []
  for size, tap, stride in zip(spatial, taps, strides):
    total = max((math.ceil(size / stride) - 1) * stride + tap - size, 0)
    pads.append((total // 2, total - total // 2))
  padded = np.pad(inputs, [(0, 0)] + pads + [(0, 0)])
  windows = np.lib.stride_tricks.sliding_window_view(padded, taps, axis=tuple(range(1, 1 + len(taps))))
  windows = windows[(slice(None),) + tuple(slice(None, None, stride) for stride in strides)]
  # windows: (B, *out, C, *taps); kernel: (*taps, C, O)
  letters = "defg"[: len(taps)]
  out = np.einsum(f"b...c{letters},{letters}co->b...o", windows, kernel)
  return out + (0.0 if bias is None else bias)


def _np_norm(kind, inputs, scale=None, bias=None, num_groups=None, mean=None, var=None):
  """(B, ..., C) normalised as `kind`; batch norm uses the given mean/var (running or batch statistics)."""
  x = inputs.astype(np.float64)
  if kind == "layer":
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + EPS)
  elif kind == "rms":
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + EPS) * scale
  elif kind == "group":
    grouped = x.reshape(x.shape[:-1] + (num_groups, x.shape[-1] // num_groups))
    axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
    normed = (grouped - grouped.mean(axes, keepdims=True)) / np.sqrt(grouped.var(axes, keepdims=True) + EPS)
    normed = normed.reshape(x.shape)
  elif kind == "batch":
    normed = (x - mean) / np.sqrt(var + EPS)
  else:
    return x
  return normed * scale + bias


# ---- conv ----------------------------------------------------------------------------------------------------
CONV_CASES = [  # input shape, kernel, strides
  ((2, 8, 8, 3), (3, 3), (1, 1)),
  ((2, 7, 9, 3), (3, 3), (2, 2)),
  ((1, 6, 5, 2), (4, 2), (2, 1)),
  ((2, 4, 6, 6, 2), (3, 3, 3), (1, 2, 2)),
  ((1, 5, 6, 7, 3), (2, 3, 1), (2, 1, 3)),
]


@pytest.mark.parametrize("shape, kernel_size, strides", CONV_CASES)
def test_conv_matches_numpy(shape, kernel_size, strides):
  inputs = np.random.default_rng(0).normal(size=shape).astype(np.float32)
  layer = conv(5, kernel_size, strides)
  params = _random_variables(layer, inputs)["params"]
  ours = np.asarray(layer.apply({"params": params}, inputs))
  expected = _np_conv_same(inputs, np.asarray(params["kernel"]), np.asarray(params["bias"]), strides)
  assert ours.shape == (shape[0],) + tuple(math.ceil(n / s) for n, s in zip(shape[1:-1], strides)) + (5,)
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_conv_rejects_other_ranks():
  with pytest.raises(ValueError, match="2 \\(H, W\\) or 3"):
    conv(4, (3, 3, 3, 3))


@pytest.mark.parametrize(
  "shape, kernel_size, strides, norm, activation, residual",
  [
    ((2, 7, 9, 4), (3, 3), (2, 2), "group", "relu", True),  # strided residual through the 1×1 shortcut
    ((2, 6, 6, 8), (3, 3), (1, 1), "rms", "gelu", True),  # identity residual
    ((2, 4, 6, 6, 4), (3, 3, 3), (1, 2, 2), "layer", "silu", False),
    ((2, 4, 5, 5, 4), (1, 3, 3), (1, 1, 1), "none", "none", True),
  ],
)
def test_conv_block_matches_numpy(shape, kernel_size, strides, norm, activation, residual):
  inputs = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  block = ConvBlock(8, kernel_size, norm, activation, strides, residual, num_groups=2)
  params = _random_variables(block, inputs)["params"]
  ours = np.asarray(block.apply({"params": params}, inputs))
  p = jax.tree.map(np.asarray, params)
  features = _np_conv_same(inputs, p["conv"]["kernel"], p["conv"]["bias"], strides)
  features = _np_norm(norm, features, **({} if norm == "none" else p["norm"]), num_groups=2)
  activations = {
    "relu": lambda x: np.maximum(x, 0),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "none": lambda x: x,
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
  }
  expected = activations[activation](features)
  if residual:
    shortcut = (
      _np_conv_same(inputs, p["shortcut"]["kernel"], p["shortcut"]["bias"], strides) if "shortcut" in p else inputs
    )
    expected = expected + shortcut
  assert ("shortcut" in p) == (residual and (shape[-1] != 8 or strides != (1,) * len(strides)))
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


def test_conv_block_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones():
  inputs = np.random.default_rng(2).normal(size=(4, 5, 5, 3)).astype(np.float32)
  block = ConvBlock(6, (3, 3), "batch", "relu")
  variables = _random_variables(block, inputs)
  params, running = variables["params"], variables["batch_stats"]["norm"]
  assert "bias" not in params["conv"]  # cancelled by the batch mean
  out, updates = block.apply(variables, inputs, train=True, mutable=["batch_stats"])
  features = _np_conv_same(inputs, np.asarray(params["conv"]["kernel"]), None, (1, 1))
  mean, var = features.mean((0, 1, 2)), features.var((0, 1, 2))
  norm = jax.tree.map(np.asarray, params["norm"])
  np.testing.assert_allclose(
    out, np.maximum(_np_norm("batch", features, **norm, mean=mean, var=var), 0), rtol=1e-4, atol=1e-4
  )
  stats = updates["batch_stats"]["norm"]
  np.testing.assert_allclose(stats["mean"], 0.9 * running["mean"] + 0.1 * mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["var"], 0.9 * running["var"] + 0.1 * var, rtol=1e-4, atol=1e-5)
  evaluated = block.apply({"params": params, **updates}, inputs)  # train=False: no mutable collection needed
  np.testing.assert_allclose(
    evaluated,
    np.maximum(_np_norm("batch", features, **norm, mean=stats["mean"], var=stats["var"]), 0),
    rtol=1e-4,
    atol=1e-4,
  )


def test_conv_block_rejects_wrong_rank_and_unknown_activation():
  with pytest.raises(ValueError, match="expects \\(B, T, H, W, C\\)"):
    ConvBlock(4, (3, 3, 3), "layer").init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="Unknown activation 'tanh'"):
    ConvBlock(4, (3, 3), "layer", "tanh").init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


# ---- norms ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", NORMS)
def test_norm_matches_numpy(kind):
  inputs = (3.0 + 2.0 * np.random.default_rng(3).normal(size=(4, 3, 5, 8))).astype(np.float32)
  norm = make_norm(kind, num_groups=4, train=True)
  variables = {} if kind == "none" else _random_variables(norm, inputs)
  params = variables.get("params", {})
  expected_names = {
    "layer": {"scale", "bias"},
    "rms": {"scale"},
    "group": {"scale", "bias"},
    "batch": {"scale", "bias"},
    "none": set(),
  }[kind]
  assert set(params) == expected_names
  if kind == "none":
    np.testing.assert_array_equal(norm(inputs), inputs)
    return
  outputs = norm.apply({**variables, "params": params}, inputs, mutable=["batch_stats"])[0]
  p = jax.tree.map(np.asarray, params)
  expected = _np_norm(kind, inputs, **p, num_groups=4, mean=inputs.mean((0, 1, 2)), var=inputs.var((0, 1, 2)))
  np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
  # A bf16 compute dtype keeps fp32 parameters and fp32 statistics: only the output rounding differs.
  low = make_norm(kind, jnp.bfloat16, num_groups=4, train=True)
  low_outputs = low.apply({**variables, "params": params}, inputs, mutable=["batch_stats"])[0]
  assert low_outputs.dtype == jnp.bfloat16
  assert all(
    leaf.dtype == jnp.float32
    for leaf in jax.tree.leaves(jax.eval_shape(lambda: low.init(jax.random.PRNGKey(0), inputs)))
  )
  np.testing.assert_allclose(np.asarray(low_outputs, np.float32), expected, rtol=2e-2, atol=2e-2)


def test_batch_norm_eval_uses_running_averages():
  rng = np.random.default_rng(4)
  inputs = rng.normal(size=(6, 4)).astype(np.float32)
  running = {"mean": rng.normal(size=4).astype(np.float32), "var": rng.uniform(0.5, 2.0, 4).astype(np.float32)}
  params = {"scale": rng.normal(size=4).astype(np.float32), "bias": rng.normal(size=4).astype(np.float32)}
  outputs = make_norm("batch", train=False).apply({"params": params, "batch_stats": running}, inputs)
  np.testing.assert_allclose(outputs, _np_norm("batch", inputs, **params, **running), rtol=1e-5, atol=1e-5)
  with pytest.raises(Exception, match="batch_stats"):  # training must be allowed to update the averages
    make_norm("batch", train=True).apply({"params": params, "batch_stats": running}, inputs)


def test_unknown_norm_names_the_choices():
  with pytest.raises(ValueError, match="'instance'.*'layer', 'rms', 'group', 'batch', 'none'"):
    make_norm("instance")


def test_transformer_layer_norm_keeps_its_parameters():
  tokens = np.random.default_rng(5).normal(size=(2, 3, 8)).astype(np.float32)
  init = lambda norm: jax.eval_shape(lambda: norm.init(jax.random.PRNGKey(0), tokens))
  assert nn.get_partition_spec(init(layer_norm())["params"]) == {
    "scale": PartitionSpec("embed"),
    "bias": PartitionSpec("embed"),
  }
  assert init(layer_norm(affine=False)) == {}


# ---- patches -------------------------------------------------------------------------------------------------
def _np_patchify(pixels, patch_size):
  """Explicit loop over the grid: each patch flattened row-major, channels fastest."""
  batch, *spatial, _channels = pixels.shape
  grid = [size // patch for size, patch in zip(spatial, patch_size)]
  patches = []
  for cell in np.ndindex(*grid):
    window = tuple(slice(index * patch, (index + 1) * patch) for index, patch in zip(cell, patch_size))
    patches.append(pixels[(slice(None),) + window].reshape(batch, -1))
  return np.stack(patches, axis=1)


@pytest.mark.parametrize("shape, patch_size", [((2, 8, 12, 3), (4, 4)), ((2, 6, 4, 8, 2), (2, 2, 4))])
def test_patchify_round_trip_and_patch_embedding(shape, patch_size):
  pixels = np.random.default_rng(6).normal(size=shape).astype(np.float32)
  patches = np.asarray(patchify(pixels, patch_size))
  np.testing.assert_array_equal(patches, _np_patchify(pixels, patch_size))
  np.testing.assert_array_equal(unpatchify(patches, shape[1:-1], patch_size), pixels)

  embedding = PatchEmbedding(16, patch_size)
  params = _random_variables(embedding, pixels)["params"]
  tokens = np.asarray(embedding.apply({"params": params}, pixels))
  kernel = np.asarray(params["projection"]["kernel"]).reshape(-1, 16)
  expected = _np_patchify(pixels, patch_size) @ kernel + np.asarray(params["projection"]["bias"])
  assert tokens.shape == (shape[0], math.prod(n // p for n, p in zip(shape[1:-1], patch_size)), 16)
  np.testing.assert_allclose(tokens, expected, rtol=1e-4, atol=1e-4)


def test_patches_reject_indivisible_sizes():
  with pytest.raises(ValueError, match="\\(8, 10\\) is not divisible by patch size \\(4, 4\\)"):
    PatchEmbedding(16, (4, 4)).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 10, 3)))
  with pytest.raises(ValueError, match="is not divisible"):
    patchify(jnp.zeros((1, 6, 8, 8, 1)), (4, 4, 4))
  with pytest.raises(ValueError, match="do not tile"):
    unpatchify(jnp.zeros((1, 5, 48)), (8, 8), (4, 4))
  with pytest.raises(ValueError, match="3 spatial axes"):
    PatchEmbedding(16, (2, 4, 4)).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


# ---- positions -----------------------------------------------------------------------------------------------
def test_sinusoidal_embedding_2d_matches_numpy():
  height, width, dim = 3, 5, 16
  table = np.asarray(sinusoidal_embedding_2d(height, width, dim))
  quarter = dim // 4
  frequencies = 10_000.0 ** (-np.arange(quarter) / quarter)
  for row in range(height):
    for column in range(width):
      expected = np.concatenate(
        [
          np.cos(row * frequencies),
          np.sin(row * frequencies),
          np.cos(column * frequencies),
          np.sin(column * frequencies),
        ]
      )
      np.testing.assert_allclose(table[row * width + column], expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="multiple of 4"):
    sinusoidal_embedding_2d(2, 2, 6)


def test_learned_positions():
  tokens = np.random.default_rng(7).normal(size=(2, 5, 8)).astype(np.float32)
  positions = LearnedPositions(max_length=7)
  boxed = jax.eval_shape(lambda: positions.init(jax.random.PRNGKey(0), tokens))["params"]
  assert nn.get_partition_spec(boxed) == {"embedding": PartitionSpec("length", "embed")}
  params = _random_variables(positions, tokens)["params"]
  table = params["embedding"]
  assert table.shape == (7, 8)
  np.testing.assert_allclose(positions.apply({"params": params}, tokens), tokens + table[None, :5], rtol=1e-6)
  with pytest.raises(ValueError, match="9 tokens exceed the 7 learned positions"):
    positions.apply({"params": params}, np.zeros((2, 9, 8), np.float32))


# ---- condition mapper and LayerScale -------------------------------------------------------------------------
def _condition_inputs(seed):
  rng = np.random.default_rng(seed)
  tokens = rng.normal(size=(2, 5, 16)).astype(np.float32)
  mask = np.array([[True] * 5, [True, True, True, False, False]])
  return tokens, mask


def test_condition_mapper_shapes_and_masking():
  tokens, mask = _condition_inputs(8)
  mapper = ConditionMapper(num_registers=3, num_layers=2, num_heads=2, mlp_dim=32, layer_scale_init=0.1)
  params = _random_variables(mapper, tokens, mask, scale=0.2)["params"]
  apply = jax.jit(lambda tokens, mask: mapper.apply({"params": params}, tokens, mask))
  outputs, key_mask = apply(tokens, mask)
  assert outputs.shape == (2, 8, 16)
  np.testing.assert_array_equal(key_mask, np.concatenate([np.ones((2, 3), bool), mask], axis=1))
  # A masked condition token changes nothing that attends: registers and valid conditions stay the same.
  changed = tokens.copy()
  changed[1, 3:] = 50.0
  changed_outputs, _ = apply(changed, mask)
  np.testing.assert_allclose(np.asarray(changed_outputs)[key_mask], np.asarray(outputs)[key_mask], atol=1e-5)
  # ...while a valid one changes the registers.
  changed[1, 0] = np.random.default_rng(12).normal(size=16)
  registers_moved = np.abs(np.asarray(apply(changed, mask)[0] - outputs)[1, :3]).max()
  assert registers_moved > 1e-3
  unmasked, all_valid = mapper.apply({"params": params}, tokens)
  assert bool(all_valid.all())
  np.testing.assert_allclose(unmasked[0], outputs[0], atol=1e-5)  # row 0 has no padding
  with pytest.raises(ValueError, match="condition_mask must be"):
    mapper.apply({"params": params}, tokens, mask[:, :4])


BLOCK_STYLES = {"plain": set(), "cross_attention": {"cross_attention", "cross_attention_norm"}, "adaln": {"modulation"}}


def _block_inputs(style):
  rng = np.random.default_rng(9)
  tokens = rng.normal(size=(2, 6, 16)).astype(np.float32)
  key_mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
  extra = {}
  if style == "cross_attention":
    extra = {
      "context": rng.normal(size=(2, 4, 16)).astype(np.float32),
      "context_mask": np.array([[True] * 4, [True, True, False, False]]),
    }
  elif style == "adaln":
    extra = {"condition": rng.normal(size=(2, 16)).astype(np.float32)}
  return tokens, key_mask, extra


@pytest.mark.parametrize("style", list(BLOCK_STYLES))
def test_layer_scale(style):
  tokens, key_mask, extra = _block_inputs(style)
  plain = TransformerBlock(2, 32)
  scaled = TransformerBlock(2, 32, layer_scale_init=1e-4)
  base_params = _random_variables(plain, tokens, key_mask, **extra, scale=0.2)["params"]
  # Off: exactly today's parameter tree.
  norms = set() if style == "adaln" else {"attention_norm", "mlp_norm"}  # adaLN norms have no affine terms
  assert set(base_params) == {"attention", "mlp"} | norms | BLOCK_STYLES[style]
  scaled_init = jax.jit(lambda: nn.unbox(scaled.init(jax.random.PRNGKey(0), tokens, key_mask, **extra)))()
  scaled_init = scaled_init["params"]
  scale_names = {f"{name}_layer_scale" for name in ("attention", "mlp")} | (
    {"cross_attention_layer_scale"} if style == "cross_attention" else set()
  )
  assert set(scaled_init) == set(base_params) | scale_names
  for name in scale_names:
    np.testing.assert_array_equal(scaled_init[name], np.full(16, 1e-4, np.float32))

  # LayerScale of ones is the plain block; any other scale multiplies each residual branch per channel.
  ones = {**base_params, **{name: jnp.ones(16) for name in scale_names}}
  plain_out = plain.apply({"params": base_params}, tokens, key_mask, **extra)
  np.testing.assert_allclose(scaled.apply({"params": ones}, tokens, key_mask, **extra), plain_out, atol=1e-6)
  if style == "plain":
    rng = np.random.default_rng(10)
    scales = {name: rng.normal(size=16).astype(np.float32) for name in scale_names}
    ours = scaled.apply({"params": {**base_params, **scales}}, tokens, key_mask)
    p = jax.tree.map(np.asarray, base_params)
    attention = MultiHeadAttention(2)
    mlp = MlpBlock(32)
    normed = _np_norm("layer", tokens, **p["attention_norm"])
    attended = attention.apply({"params": p["attention"]}, normed, normed, key_mask)
    hidden = tokens + scales["attention_layer_scale"] * np.asarray(attended)
    normed = _np_norm("layer", hidden, **p["mlp_norm"])
    expected = hidden + scales["mlp_layer_scale"] * np.asarray(mlp.apply({"params": p["mlp"]}, normed))
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


# ---- logical partitioning ------------------------------------------------------------------------------------
def _new_layers():
  """(module, inputs, kwargs) for every new parameterised layer."""
  image, clip = jnp.zeros((8, 16, 16, 64)), jnp.zeros((8, 4, 8, 8, 32))
  tokens, mask = jnp.zeros((8, 6, 64)), jnp.ones((8, 6), bool)
  return {
    "conv_2d": (conv(128, (3, 3)), (image,), {}),
    "conv_block_3d": (ConvBlock(64, (3, 3, 3), "group", residual=True, strides=(1, 2, 2)), (clip,), {}),
    "conv_block_batch": (ConvBlock(64, (3, 3), "batch"), (image,), {}),
    "patch_embedding": (PatchEmbedding(64, (4, 4)), (image[..., :3],), {}),
    "patch_embedding_3d": (PatchEmbedding(64, (2, 4, 4)), (clip[..., :3],), {}),
    "learned_positions": (LearnedPositions(16), (tokens,), {}),
    "condition_mapper": (ConditionMapper(4, 1, 2, 128, layer_scale_init=1e-4), (tokens, mask), {}),
  }


def test_new_parameters_use_known_logical_axes_and_shard_on_8_devices():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  shardings = {}
  for name, (module, inputs, kwargs) in _new_layers().items():
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs, **kwargs))
    for spec in jax.tree.leaves(nn.get_partition_spec(variables), is_leaf=lambda leaf: isinstance(leaf, PartitionSpec)):
      assert set(spec) - {None} <= RULE_NAMES, f"{name}: {spec} names an axis missing from LOGICAL_AXIS_RULES"
    shardings[name] = jax.tree.map(lambda named: named.spec, sharding.logical_shardings(variables, mesh))

  assert shardings["conv_2d"]["params"]["kernel"] == PartitionSpec(None, None, "fsdp", "model")
  assert shardings["conv_2d"]["params"]["bias"] == PartitionSpec("model")
  block = shardings["conv_block_3d"]["params"]
  assert block["conv"]["kernel"] == PartitionSpec(None, None, None, "fsdp", "model")
  assert block["shortcut"]["kernel"] == PartitionSpec(None, None, None, "fsdp", "model")
  assert block["norm"]["scale"] == PartitionSpec("model")
  assert shardings["conv_block_batch"]["batch_stats"]["norm"]["mean"] == PartitionSpec(None)
  # 3 pixel channels stay whole; the embedding width shards like every other `embed` axis.
  assert shardings["patch_embedding"]["params"]["projection"]["kernel"] == PartitionSpec(None, None, None, "fsdp")
  assert shardings["patch_embedding_3d"]["params"]["projection"]["kernel"] == PartitionSpec(
    None, None, None, None, "fsdp"
  )
  assert shardings["learned_positions"]["params"]["embedding"] == PartitionSpec(None, "fsdp")
  mapper = shardings["condition_mapper"]["params"]
  assert mapper["registers"] == PartitionSpec(None, "fsdp")
  assert mapper["encoder"]["block_0"]["attention_layer_scale"] == PartitionSpec("fsdp")
  assert mapper["encoder"]["block_0"]["mlp"]["fc1"]["kernel"] == PartitionSpec("fsdp", "model")


def test_activation_constraints_use_known_axes_and_sharded_apply_matches(monkeypatch):
  used = set()
  constrain = nn.with_logical_constraint

  def recording_constraint(value, axes, *args, **kwargs):
    used.update(axis for axis in axes if axis is not None)
    return constrain(value, axes, *args, **kwargs)

  monkeypatch.setattr(nn, "with_logical_constraint", recording_constraint)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
  rng = np.random.default_rng(11)
  for name, (module, inputs, kwargs) in _new_layers().items():
    inputs = tuple(
      rng.normal(size=value.shape).astype(np.float32) if value.dtype == jnp.float32 else np.asarray(value)
      for value in inputs
    )
    boxed = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *inputs, **kwargs))
    variables = _random_variables(module, *inputs, **kwargs)
    expected = module.apply(variables, *inputs, **kwargs)
    placed = jax.device_put(variables, sharding.logical_shardings(boxed, mesh))
    batch_inputs = tuple(jax.device_put(value, sharding.batch_sharding(mesh)) for value in inputs)
    with sharding.activation_sharding(mesh):
      outputs = jax.jit(lambda variables, *inputs: module.apply(variables, *inputs, **kwargs))(placed, *batch_inputs)
    for ours, reference in zip(jax.tree.leaves(outputs), jax.tree.leaves(expected)):
      np.testing.assert_allclose(np.asarray(ours), np.asarray(reference), rtol=1e-4, atol=1e-4, err_msg=name)
  assert used and used <= RULE_NAMES, used - RULE_NAMES
  assert {"activation_depth", "activation_height", "activation_width", "activation_channels"} <= used


# ---- hashed dropout -----------------------------------------------------------------------------------------------
def test_dropout_keeps_the_right_fraction_independently_and_rescales():
  inputs = jnp.ones((64, 4, 50, 50))
  outputs = np.asarray(Dropout(0.3).apply({}, inputs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)}))
  kept = outputs != 0
  assert set(np.unique(outputs)) == {0.0, np.float32(1 / 0.7)}
  assert abs(kept.mean() - 0.7) < 4 * math.sqrt(0.21 / kept.size)
  flat = kept.reshape(-1).astype(float)
  for lag in (1, 50, 2500):  # neighbours along every axis are uncorrelated
    assert abs(np.corrcoef(flat[:-lag], flat[lag:])[0, 1]) < 0.01
  other_seed = Dropout(0.3).apply({}, inputs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
  assert abs(np.corrcoef(flat, (np.asarray(other_seed) != 0).reshape(-1))[0, 1]) < 0.01
  again = Dropout(0.3).apply({}, inputs, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
  np.testing.assert_array_equal(np.asarray(again), outputs)
  np.testing.assert_array_equal(np.asarray(Dropout(0.3).apply({}, inputs, deterministic=True)), np.asarray(inputs))


def test_dropout_mask_does_not_depend_on_the_sharding():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  seed = jnp.array([12345, 678], jnp.uint32)
  mask = lambda: keep_mask(seed, 0.9, (16, 6, 10))
  whole = np.asarray(jax.jit(mask)())
  sharded = jax.jit(mask, out_shardings=jax.sharding.NamedSharding(mesh, PartitionSpec("data")))()
  np.testing.assert_array_equal(np.asarray(sharded), whole)
  assert 0.85 < whole.mean() < 0.95


@pytest.mark.parametrize(
  "kernel_size, strides, padding",
  [
    ((3, 4, 4), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),  # LAEO-Net++'s head branch
    ((3, 3, 3), (2, 2, 2), "SAME"),  # a strided ResNet3D block: temporal stride and padding
    ((1, 6, 6), (1, 1, 1), "VALID"),
  ],
)
def test_conv3d_as_frames_matches_the_native_3d_convolution(kernel_size, strides, padding):
  inputs = jax.random.normal(jax.random.key(0), (2, 7, 12, 10, 3))
  modules = {name: Conv3D(5, kernel_size, strides, padding, implementation=name) for name in ("xla", "frames", "auto")}
  variables = modules["xla"].init(jax.random.key(1), inputs)
  outputs = {name: module.apply(variables, inputs) for name, module in modules.items()}
  np.testing.assert_allclose(outputs["frames"], outputs["xla"], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(outputs["auto"], outputs["frames"])  # the tests run on CPU
  gradients = {
    name: jax.grad(lambda variables, inputs: jnp.sum(modules[name].apply(variables, inputs) ** 2), (0, 1))(
      variables, inputs
    )
    for name in ("xla", "frames")
  }
  jax.tree.map(
    lambda frames, xla: np.testing.assert_allclose(frames, xla, rtol=1e-4, atol=1e-4),
    gradients["frames"],
    gradients["xla"],
  )
