"""VGG19 features: a tiny random torchvision-layout checkpoint, our five slices against a plain NCHW numpy forward
of torchvision's layer stack, loader errors, and the perceptual L1 loss against a hand computation."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from storyjax import losses
from storyjax.errors import ConfigError
from storyjax.models.vgg import load_vgg19

WIDTHS = (4, 8, 8, 16, 16)
# torchvision's vgg19().features[0:30] written out: "C" = Conv2d(3×3, padding 1) + ReLU (two indices), "M" =
# MaxPool2d(2, 2); the five outputs are cut after indices 1, 6, 11, 20, 29.
LAYERS = ["C", "C", "M", "C", "C", "M", "C", "C", "C", "C", "M", "C", "C", "C", "C", "M", "C"]
SLICE_ENDS = (2, 7, 12, 21, 30)
# The conv channel counts for WIDTHS, in order: 2, 2, 4, 4 and 1 convs per stage.
CONV_CHANNELS = [4, 4, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 16]


def _random_state(rng) -> dict[str, np.ndarray]:
  """features.{i}.weight (O, I, 3, 3) and .bias (O,) at He scale, plus tensors the loader must ignore."""
  state, index, channels_in = {}, 0, 3
  convs = iter(CONV_CHANNELS)
  for layer in LAYERS:
    if layer == "M":
      index += 1
      continue
    channels_out = next(convs)
    scale = np.sqrt(2 / (9 * channels_in))
    state[f"features.{index}.weight"] = rng.normal(0, scale, (channels_out, channels_in, 3, 3)).astype(np.float32)
    state[f"features.{index}.bias"] = rng.normal(0.05, 0.1, channels_out).astype(np.float32)
    index, channels_in = index + 2, channels_out
  state["features.30.weight"] = rng.normal(size=(16, 16, 3, 3)).astype(np.float32)
  state["classifier.0.weight"] = rng.normal(size=(8, 16)).astype(np.float32)
  return state


# The reference: torch's Conv2d / ReLU / MaxPool2d in float64 numpy, NCHW, from their definitions.


def _conv(x, weight, bias):
  """Cross-correlation of x (B, I, H, W) with weight (O, I, 3, 3), zero padding 1, plus bias (O,)."""
  padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
  height, width = x.shape[2:]
  out = np.zeros((x.shape[0], weight.shape[0], height, width)) + bias[None, :, None, None]
  for row in range(3):
    for col in range(3):
      out += np.einsum("bihw,oi->bohw", padded[:, :, row : row + height, col : col + width], weight[:, :, row, col])
  return out


def _max_pool(x):
  """2×2, stride 2, odd trailing rows and columns dropped (torch's floor mode)."""
  batch, channels, height, width = x.shape
  x = x[:, :, : height // 2 * 2, : width // 2 * 2]
  return x.reshape(batch, channels, height // 2, 2, width // 2, 2).max(axis=(3, 5))


def numpy_features(state, images):
  """images (B, H, W, 3) → the five slice outputs, each (B, h, w, C), by running features[0:30] index by index."""
  x, outputs, index = images.transpose(0, 3, 1, 2).astype(np.float64), [], 0
  for layer in LAYERS:
    if layer == "M":
      x, index = _max_pool(x), index + 1
    else:
      weight, bias = state[f"features.{index}.weight"], state[f"features.{index}.bias"]
      x, index = np.maximum(_conv(x, weight.astype(np.float64), bias.astype(np.float64)), 0), index + 2
    if index in SLICE_ENDS:
      outputs.append(x.transpose(0, 2, 3, 1))
  return outputs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  state = _random_state(np.random.default_rng(0))
  path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
  safetensors.numpy.save_file(state, str(path))
  return path, state


def test_features_match_numpy(checkpoint):
  path, state = checkpoint
  module, variables = load_vgg19(path, widths=WIDTHS)
  images = np.random.default_rng(1).uniform(-1, 1, (2, 17, 20, 3)).astype(np.float32)  # odd sizes: floored pools
  features = jax.jit(module.apply)(variables, images)
  reference = numpy_features(state, images)
  shapes = [(2, 17, 20, 4), (2, 8, 10, 8), (2, 4, 5, 8), (2, 2, 2, 16), (2, 1, 1, 16)]
  assert [tuple(level.shape) for level in features] == shapes
  for level, (ours, expected) in enumerate(zip(features, reference)):
    assert expected.std() > 0.05 and (expected > 0).mean() > 0.2, f"degenerate reference at level {level}"
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5, rtol=1e-5, err_msg=f"level {level}")

  normalising, _ = load_vgg19(path, widths=WIDTHS, imagenet_normalise=True)
  normalised = ((images + 1) / 2 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
  for ours, expected in zip(normalising.apply(variables, images), numpy_features(state, normalised)):
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5, rtol=1e-5)


def test_loader_errors(checkpoint, tmp_path):
  path, state = checkpoint
  with pytest.raises(ConfigError, match=r"no VGG19 checkpoint at .*absent\.safetensors.*safetensors\.torch"):
    load_vgg19(tmp_path / "absent.safetensors", widths=WIDTHS)

  def write(name: str, tensors: dict) -> pathlib.Path:
    safetensors.numpy.save_file(tensors, str(tmp_path / name))
    return tmp_path / name

  missing = write("missing.safetensors", {name: value for name, value in state.items() if name != "features.12.bias"})
  with pytest.raises(ConfigError, match=r"missing\.safetensors has no tensor features\.12\.bias.*IMAGENET1K_V1"):
    load_vgg19(missing, widths=WIDTHS)
  unprefixed = write("unprefixed.safetensors", {name.removeprefix("features."): value for name, value in state.items()})
  with pytest.raises(ConfigError, match=r"has no tensor features\.0\.weight.*prefixed \"features\.\""):
    load_vgg19(unprefixed, widths=WIDTHS)
  with pytest.raises(ConfigError, match=r"features\.0\.weight has shape \(4, 3, 3, 3\), expected \(64, 3, 3, 3\)"):
    load_vgg19(path)  # the full-width default against the narrow file
  (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(ConfigError, match=r"corrupt\.safetensors is not a readable safetensors file"):
    load_vgg19(tmp_path / "corrupt.safetensors", widths=WIDTHS)


def test_perceptual_l1_matches_hand_computation():
  rng = np.random.default_rng(2)
  shapes = [(2, 8, 8, 3), (2, 4, 4, 5), (2, 2, 2, 7)]
  first = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
  second = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
  weights = (0.5, 2.0, 3.0)
  expected = sum(weight * np.abs(a - b).sum() / a.size for weight, a, b in zip(weights, first, second))
  np.testing.assert_allclose(losses.perceptual_l1(first, second, weights), expected, rtol=1e-6)
  # The default weights 1/32, 1/16, 1/8, 1/4, 1 on constant maps whose differences are 1, 2, 4, 8, 16.
  zeros = [jnp.zeros((1, 2, 2, 3))] * 5
  offsets = [jnp.full((1, 2, 2, 3), -(2.0**level)) for level in range(5)]
  np.testing.assert_allclose(losses.perceptual_l1(zeros, offsets), 1 / 32 + 2 / 16 + 4 / 8 + 8 / 4 + 16, rtol=1e-6)
  assert float(losses.perceptual_l1(first, first, weights)) == 0.0
  with pytest.raises(ValueError, match="as many weights as feature maps"):
    losses.perceptual_l1(first, second)
  with pytest.raises(ValueError, match="differ in shape"):
    losses.perceptual_l1(first, second[::-1], weights)
