"""LAEO-Net++ / LAEO-Net: the layer shapes of the released models (facts laeo-scam A.3) and the Keras weight import,
checked against an independent numpy forward pass that reads the HDF5 file directly."""

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import pytest

from storyjax.errors import CheckpointError
from storyjax.layers.conv import Conv3D
from storyjax.models.laeo import LaeoNet, load_keras_weights

pytestmark = pytest.mark.usefixtures("fast_compile")

WINDOW = (1, 10, 64, 64, 3)


def conv_shapes(model: LaeoNet) -> dict[str, tuple]:
  """Output shape (without batch) of every conv layer of `model` on one T = 10 window (shapes only, no compute)."""
  window = jax.ShapeDtypeStruct(WINDOW, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), window, window, window)
  _, state = jax.eval_shape(
    lambda variables, window: model.apply(
      variables, window, window, window, capture_intermediates=lambda module, _: isinstance(module, (nn.Conv, Conv3D))
    ),
    variables,
    window,
  )
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
    keys = [entry.key for entry in path if hasattr(entry, "key")]
    shapes.setdefault(f"{keys[0]}/{keys[1]}", leaf.shape[1:])  # the first call: the left head
  return shapes


def test_laeonet_plus_plus_layer_shapes_as_released():
  shapes = conv_shapes(LaeoNet(version=2))
  assert shapes == {
    "head_branch/hconv3d_1": (8, 32, 32, 32),
    "head_branch/hconv3d_2": (6, 16, 16, 64),
    "head_branch/hconv3d_3": (4, 8, 8, 128),
    "head_branch/hconv3d_4": (2, 4, 4, 256),
    "head_branch/embedding": (1, 1, 1, 256),
    "map_branch/mconv3d_1": (8, 30, 30, 16),
    "map_branch/mconv3d_2": (6, 14, 14, 24),
    "map_branch/mconv3d_3": (4, 6, 6, 32),
    "map_branch/mconv3d_4": (4, 1, 1, 12),
  }


def test_laeonet_v1_layer_shapes_and_fusion_width():
  model = LaeoNet(version=1)
  shapes = conv_shapes(model)
  assert shapes["head_branch/hconv3d_4"] == (4, 1, 1, 12)
  assert shapes["map_branch/mconv_1"] == (30, 30, 8)
  assert shapes["map_branch/mconv_4"] == (1, 1, 16)
  window = jax.ShapeDtypeStruct(WINDOW, jnp.float32)
  fusion_kernel = lambda model: (
    nn.unbox(jax.eval_shape(model.init, jax.random.key(0), window, window, window)["params"])["fc_1"]["kernel"].shape
  )
  assert fusion_kernel(model) == (48 + 48 + 16, 32)
  assert fusion_kernel(LaeoNet()) == (256 + 256 + 48, 32)


def test_without_head_map_the_classifier_sees_the_two_heads_only():
  window = jax.ShapeDtypeStruct(WINDOW, jnp.float32)
  model = LaeoNet(embedding_dim=8, use_head_map=False)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), window, window, window)["params"])
  assert "map_branch" not in params
  assert params["fc_1"]["kernel"].shape == (8 + 8, 32)


def test_bad_window_shape_is_named():
  model = LaeoNet()
  with pytest.raises(ValueError, match=r"head_map must be \(B, T, 64, 64, 3\)"):
    model.init(jax.random.key(0), jnp.zeros(WINDOW), jnp.zeros(WINDOW), jnp.zeros((1, 10, 32, 32, 3)))


# --- An independent forward pass in numpy, from the Keras arrays ------------------------------------------------


def np_conv(inputs, kernel, bias, strides, padding=None):
  """Valid N-d convolution (B, *S, C) * (*K, C, O) with `strides`, after zero `padding` [(lo, hi)] per axis."""
  spatial = kernel.ndim - 2
  if padding is not None:
    inputs = np.pad(inputs, [(0, 0), *padding, (0, 0)])
  windows = sliding_window_view(inputs, kernel.shape[:spatial], axis=tuple(range(1, spatial + 1)))
  windows = windows[(slice(None), *(slice(None, None, stride) for stride in strides))]  # (B, *out, C, *K)
  kernel_axes = (*range(spatial), spatial)  # (*K, C)
  window_axes = (*range(windows.ndim - spatial, windows.ndim), windows.ndim - spatial - 1)
  return np.tensordot(windows, kernel, axes=(window_axes, kernel_axes)) + bias


def np_l2(features):
  return features / np.sqrt(np.maximum(np.sum(features**2, -1, keepdims=True), 1e-12))


def np_laeonet_plus_plus(weights, head_left, head_right, head_map):
  """LAEO-Net++ in eval mode (facts A.3) from {"layer/var": array}, in float64."""

  def head(track):
    features = track
    for index in range(1, 5):
      features = np_conv(
        features, weights[f"hconv3d_{index}/kernel"], weights[f"hconv3d_{index}/bias"], (1, 2, 2),
        [(0, 0), (1, 1), (1, 1)],
      )  # fmt: skip
      if index > 1:
        bn = f"bn_{index - 1}"
        features = (features - weights[f"{bn}/moving_mean"]) / np.sqrt(weights[f"{bn}/moving_variance"] + 1e-5)
        features = features * weights[f"{bn}/gamma"] + weights[f"{bn}/beta"]
      features = np.where(features > 0, features, 0.2 * features)
    features = np_conv(features, weights["embedding/kernel"], weights["embedding/bias"], (1, 1, 1))
    return features.reshape(len(track), -1)

  features = head_map
  for index, stride in enumerate(((1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 1, 1)), start=1):
    features = np.maximum(
      np_conv(features, weights[f"mconv3d_{index}/kernel"], weights[f"mconv3d_{index}/bias"], stride), 0
    )
  codes = np.concatenate([head(head_left), head(head_right), np_l2(features.reshape(len(features), -1))], -1)
  hidden = np.maximum(codes @ weights["fc_1/kernel"] + weights["fc_1/bias"], 0)
  return hidden @ weights["output_laeo/kernel"] + weights["output_laeo/bias"]


def np_laeonet_v1(weights, head_left, head_right, head_map):
  """LAEO-Net in eval mode (facts A.3, the released v1 models) from {"layer/var": array}."""

  def stack(inputs, prefix, strides):
    for index, stride in enumerate(strides, start=1):
      inputs = np.maximum(
        np_conv(inputs, weights[f"{prefix}_{index}/kernel"], weights[f"{prefix}_{index}/bias"], stride), 0
      )
    return np_l2(inputs.reshape(len(inputs), -1))

  strides_3d = ((1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 1, 1))
  codes = [stack(head_left, "hconv3d", strides_3d), stack(head_right, "hconv3d", strides_3d)]
  codes.append(stack(head_map[:, 5], "mconv", ((2, 2), (2, 2), (2, 2), (4, 4))))
  hidden = np.maximum(np.concatenate(codes, -1) @ weights["fc_1/kernel"] + weights["fc_1/bias"], 0)
  return hidden @ weights["output_laeo/kernel"] + weights["output_laeo/bias"]


def keras_shapes(model: LaeoNet) -> dict[str, tuple]:
  """{"layer/keras variable": shape} of a model, named as Keras saves them."""
  window = jax.ShapeDtypeStruct(WINDOW, jnp.float32)
  variables = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), window, window, window))
  rename = {"scale": "gamma", "mean": "moving_mean", "var": "moving_variance"}
  shapes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    collection, *_, layer, name = (entry.key for entry in path)
    name = "beta" if layer.startswith("bn_") and name == "bias" and collection == "params" else rename.get(name, name)
    shapes[f"{layer}/{name}"] = leaf.shape
  return shapes


def write_keras_file(path, weights: dict[str, np.ndarray], full_model: bool) -> None:
  """A Keras-2 HDF5 file as `model.save` (weights under model_weights, branches nested in Sequential groups with
  Keras' "_N" name suffixes) or `save_weights` writes it."""
  with h5py.File(path, "w") as file:
    root = file.create_group("model_weights") if full_model else file
    file.attrs["keras_version"] = "2.2.4-tf"
    for key, array in weights.items():
      layer, variable = key.split("/")
      if layer.startswith(("hconv3d", "bn_", "embedding")):
        group = f"sequential_1/sequential_1/{layer}_2"
      elif layer.startswith("mconv"):
        group = f"sequential_2/sequential_2/{layer}_1"
      else:
        group = f"{layer}/{layer}_1"
      root.create_dataset(f"{group}/{variable}:0", data=array)


@pytest.mark.parametrize("version,full_model", [(2, False), (1, True)])
def test_keras_import_matches_an_independent_numpy_forward(tmp_path, version, full_model):
  # Small widths for version 2 (the mapping does not depend on them); version 1 has the released sizes only.
  model = LaeoNet(version=version, head_widths=(4, 8, 8, 16), embedding_dim=16, dropout_rate=0.0)
  rng = np.random.default_rng(version)
  weights = {}
  for key, shape in keras_shapes(model).items():
    scale = 1.0 / np.sqrt(np.prod(shape[:-1])) if key.endswith("kernel") else 0.1
    weights[key] = rng.normal(0.0, scale, shape).astype(np.float32)
    if key.endswith("moving_variance"):
      weights[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
  path = tmp_path / "laeo.h5"
  write_keras_file(path, weights, full_model)
  variables = load_keras_weights(path, model)
  head_left, head_right, head_map = (rng.uniform(0, 1, (2, 10, 64, 64, 3)).astype(np.float32) for _ in range(3))
  logits = jax.jit(model.apply)(variables, head_left, head_right, head_map)
  reference = (np_laeonet_plus_plus if version == 2 else np_laeonet_v1)(
    {key: value.astype(np.float64) for key, value in weights.items()}, head_left, head_right, head_map
  )
  np.testing.assert_allclose(np.asarray(logits), reference, rtol=2e-4, atol=2e-4)


def test_keras_import_rejects_missing_or_misshapen_weights(tmp_path):
  model = LaeoNet(version=1)
  weights = {key: np.zeros(shape, np.float32) for key, shape in keras_shapes(model).items()}
  with pytest.raises(CheckpointError, match="does not exist"):
    load_keras_weights(tmp_path / "absent.h5", model)
  path = tmp_path / "partial.h5"
  write_keras_file(path, {key: value for key, value in weights.items() if key != "fc_1/kernel"}, full_model=True)
  with pytest.raises(CheckpointError, match="no fc_1/kernel"):
    load_keras_weights(path, model)
  write_keras_file(path, {**weights, "fc_1/kernel": np.zeros((100, 32), np.float32)}, full_model=True)
  with pytest.raises(CheckpointError, match=r"fc_1/kernel has shape \(100, 32\)"):
    load_keras_weights(path, model)
  write_keras_file(path, weights, full_model=True)
  with pytest.raises(CheckpointError, match="does not use"):
    load_keras_weights(path, LaeoNet(version=1, use_head_map=False))
