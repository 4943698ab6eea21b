"""Medical / physiological encoders: ResNet3D (+ projection head), TimeSeriesResNet, LogMelCNN. Shapes, the
published stem arithmetic, BatchNorm state, a numpy forward pass of TimeSeriesResNet, tolerance to time shifts."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.layers.resnet3d import ProjectionHead, ResNet3D
from storyjax.layers.signal_encoders import LogMelCNN, TimeSeriesResNet

pytestmark = pytest.mark.usefixtures("fast_compile")
EPS = 1e-6  # make_norm's BatchNorm epsilon
SMALL = {
  "resnet3d": (ResNet3D(width=4), (2, 16, 16, 16, 1), 32),
  "time_series": (TimeSeriesResNet(channels=(4, 8, 8), kernel_sizes=(9, 5, 3)), (3, 256), 8),
  "log_mel": (LogMelCNN(width=4, out_dim=16), (2, 16, 40), 16),
}


def _init(module, shape):
  return jax.jit(module.init)(jax.random.PRNGKey(0), jnp.zeros(shape))


@functools.cache
def _small_variables(name):
  """The initial variables of SMALL[name], shared by the tests (each init compiles for seconds)."""
  module, shape, _ = SMALL[name]
  return _init(module, shape)


@pytest.mark.parametrize(
  "module, shape, out_dim",
  [
    (ResNet3D(width=4, stage_sizes=(1, 1)), (1, 12, 20, 24, 1), 8),
    (TimeSeriesResNet(channels=(4, 8, 6), kernel_sizes=(9, 5, 3)), (2, 100, 1), 6),
    (LogMelCNN(width=4, out_dim=16, num_blocks=2), (1, 21, 13), 16),
  ],
)
def test_output_shapes(module, shape, out_dim):
  variables = _init(module, shape)
  features = jax.jit(module.apply)(variables, jnp.ones(shape))
  assert features.shape == (shape[0], out_dim) and features.dtype == jnp.float32
  assert np.isfinite(features).all()


def test_projection_head_shapes_and_dropout():
  head = ProjectionHead(hidden_dim=16, out_dim=8)
  features = jnp.ones((3, 12))
  variables = jax.jit(head.init)(jax.random.PRNGKey(0), features)
  assert jax.tree.map(np.shape, nn.unbox(variables))["params"] == {
    "hidden": {"kernel": (12, 16), "bias": (16,)},
    "out": {"kernel": (16, 8), "bias": (8,)},
  }
  apply = jax.jit(head.apply, static_argnames="deterministic")
  evaluated = apply(variables, features)
  assert evaluated.shape == (3, 8)
  np.testing.assert_array_equal(evaluated, apply(variables, features))
  rngs = {"dropout": jax.random.PRNGKey(1)}
  assert not np.allclose(apply(variables, features, deterministic=False, rngs=rngs), evaluated)


def _torch_output_size(size, kernel, stride, padding):
  return (size + 2 * padding - kernel) // stride + 1


def test_resnet3d_grid_matches_the_published_arithmetic():
  volumes = jax.ShapeDtypeStruct((1, 96, 144, 192, 1), jnp.float32)
  # PyTorch's output-size formula through the stem conv (7, stride (1, 2, 2), pad 3), the max-pool (3, 2, 1) and
  # the three stride-2 3×3×3 convs (pad 1).
  expected = []
  for size, stem_stride in zip(volumes.shape[1:4], (1, 2, 2)):
    size = _torch_output_size(_torch_output_size(size, 7, stem_stride, 3), 3, 2, 1)
    for _ in range(3):
      size = _torch_output_size(size, 3, 2, 1)
    expected.append(size)
  assert tuple(expected) == (6, 5, 6)
  small = ResNet3D(width=2)
  variables = jax.eval_shape(small.init, jax.random.PRNGKey(0), volumes)
  grid = jax.eval_shape(lambda v, x: small.apply(v, x, method=ResNet3D.feature_grid), variables, volumes)
  assert grid.shape == (1, *expected, 16)

  published = ResNet3D()
  variables = jax.eval_shape(published.init, jax.random.PRNGKey(0), volumes)
  assert jax.eval_shape(published.apply, variables, volumes).shape == (1, 512)
  assert sum(leaf.size for leaf in jax.tree.leaves(nn.unbox(variables["params"]))) == 33_160_000


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batch_norm_state_trains_and_evaluates(name):
  module, shape, out_dim = SMALL[name]
  variables = _small_variables(name)
  assert set(variables) == {"params", "batch_stats"}
  inputs = 2.0 + jax.random.normal(jax.random.PRNGKey(1), shape)
  rngs = {"dropout": jax.random.PRNGKey(2)}
  train = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs))
  trained, updates = train(variables, inputs)
  assert trained.shape == (shape[0], out_dim) and trained.dtype == jnp.float32
  changed = jax.tree.map(lambda old, new: not np.allclose(old, new), variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  updated = {**variables, **updates}
  evaluate = jax.jit(module.apply)
  evaluated = evaluate(updated, inputs)
  np.testing.assert_array_equal(evaluated, evaluate(updated, inputs))
  assert not np.allclose(evaluated, trained, rtol=1e-3, atol=1e-3)
  assert not np.allclose(evaluated, evaluate(variables, inputs), rtol=1e-3, atol=1e-3)


def _random_variables(module, shape, seed=0):
  """Every variable random (shapes from eval_shape): parameters N(0, 0.3²), BN scale/variance U(0.5, 1.5)."""
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    positive = path[-1].key in ("scale", "var")
    values = rng.uniform(0.5, 1.5, leaf.shape) if positive else 0.3 * rng.normal(size=leaf.shape)
    return values.astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _np_conv_same(signals, kernel):
  """(B, T, C) ⋆ kernel (K, C, O) with XLA "SAME" padding: (K − 1) // 2 zeros on the left, the rest on the right."""
  taps = kernel.shape[0]
  left = (taps - 1) // 2
  padded = np.pad(signals, ((0, 0), (left, taps - 1 - left), (0, 0)))
  return sum(padded[:, tap : tap + signals.shape[1]] @ kernel[tap] for tap in range(taps))


def _np_conv_bn(signals, params, stats):
  features = _np_conv_same(signals, params["conv"]["kernel"])
  normalised = (features - stats["norm"]["mean"]) / np.sqrt(stats["norm"]["var"] + EPS)
  return normalised * params["norm"]["scale"] + params["norm"]["bias"]


def test_time_series_resnet_matches_numpy_forward():
  module = TimeSeriesResNet(channels=(4, 6, 6), kernel_sizes=(8, 5, 3))
  signals = np.random.default_rng(3).normal(size=(2, 50)).astype(np.float32)
  variables = _random_variables(module, signals.shape)
  params, stats = variables["params"], variables["batch_stats"]
  ours = jax.jit(module.apply)(variables, signals)

  features = signals[..., None].astype(np.float64)
  for block in range(3):
    block_params, block_stats = params[f"block_{block}"], stats[f"block_{block}"]
    residual = features
    for index in range(3):
      residual = _np_conv_bn(residual, block_params[f"conv_{index}"], block_stats[f"conv_{index}"])
      residual = np.maximum(residual, 0) if index < 2 else residual
    shortcut = _np_conv_bn(features, block_params["shortcut"], block_stats["shortcut"])
    features = np.maximum(residual + shortcut, 0)
  np.testing.assert_allclose(ours, features.mean(axis=1), rtol=1e-5, atol=1e-5)


def _relative_difference(module, variables, inputs, shifted):
  features = jax.jit(module.apply)(variables, jnp.stack([inputs, shifted]))
  return float(np.linalg.norm(features[1] - features[0]) / np.linalg.norm(features[0]))


def test_time_series_resnet_tolerates_time_shifts():
  module, variables = SMALL["time_series"][0], _small_variables("time_series")
  time = np.arange(2048)
  signal = np.sin(2 * np.pi * time / 64) + 0.5 * np.sign(np.sin(2 * np.pi * time / 32 + 1.0))
  other = np.sin(2 * np.pi * time / 23) + 0.5 * np.sign(np.sin(2 * np.pi * time / 9 + 1.0))
  shifted = _relative_difference(module, variables, signal, np.roll(signal, 23))
  assert shifted < 0.1
  assert shifted < 0.25 * _relative_difference(module, variables, signal, other)  # others are told apart


def test_log_mel_cnn_tolerates_time_shifts():
  module, variables = SMALL["log_mel"][0], _small_variables("log_mel")
  # A period (25 frames) coprime to the 8-frame pooling stride: over a long recording every phase of the pooling
  # grid is seen, whatever the shift (a period of 24 would be aliased).
  log_mels = np.tile(np.random.default_rng(4).normal(size=(16, 25)), (1, 16))
  other = np.tile(np.random.default_rng(5).normal(size=(16, 25)), (1, 16))
  shifted = _relative_difference(module, variables, log_mels, np.roll(log_mels, 11, axis=1))
  assert shifted < 0.1
  assert shifted < 0.25 * _relative_difference(module, variables, log_mels, other)


def test_input_layouts_are_checked():
  with pytest.raises(ValueError, match="channel axis"):
    ResNet3D(width=2).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 8)))
  with pytest.raises(ValueError, match=r"\(B, T\) or \(B, T, C\)"):
    TimeSeriesResNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 8, 8)))
  with pytest.raises(ValueError, match="at least 8 mel bins"):
    LogMelCNN().init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 6)))
