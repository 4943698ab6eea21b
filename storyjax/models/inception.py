"""The FID Inception-v3 in Flax, channels-last, from a local copy of its weights: Inception FID of image generators.

The network is TensorFlow's 2015 Inception graph as ported by pytorch-fid (`fid_inception_v3`, whose weights
`pt_inception-2015-12-05-6726825d.pth` CAD's torch-fidelity "inception-v3-compat" also uses): torchvision's
Inception-v3 layers with the FID patches (average pools that skip padding in Mixed_5b–6e and 7b, a max pool in
Mixed_7c's pool branch). Features are the 2048-d global average pool after Mixed_7c (pytorch-fid's block 3).
`features` takes images in [−1, 1], resizes them to 299 × 299 bilinearly (half-pixel centres, no antialiasing, as
pytorch-fid's F.interpolate) and runs the network; BatchNorm (eps 0.001) is folded into each convolution's scale
and bias when the weights are loaded.
"""

import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from storyjax.data.pipeline import apply_in_batches
from storyjax.errors import ConfigError
from storyjax.layers.conv import conv
from storyjax.text.hf_files import checkpoint_tensor

INPUT_SIZE = 299
FEATURES = 2048
BATCH_NORM_EPS = 1e-3
HOW_TO_GET = (
  "convert pytorch-fid's weights once where torch is installed: python -c \"import torch, safetensors.torch as st; "
  "st.save_file(torch.load('pt_inception-2015-12-05-6726825d.pth'), 'fid_inception.safetensors')\" (the .pth "
  "is pytorch-fid's FID_WEIGHTS_URL release asset)"
)


class ConvBN(nn.Module):
  """Convolution without bias, folded BatchNorm ("scale", "bias"), ReLU: (B, H, W, C) → (B, H', W', features)."""

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    padding = [(self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])]
    x = conv(self.features, self.kernel_size, (self.strides, self.strides), padding, name="conv", use_bias=False)(x)
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return nn.relu(x * scale + bias)


def _average_pool(x):
  """3 × 3, stride 1, padding 1, averaging over the real pixels only (TensorFlow's, count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, strides: int = 2, padding: int = 0):
  return nn.max_pool(x, (3, 3), strides=(strides, strides), padding=((padding, padding), (padding, padding)))


class InceptionA(nn.Module):
  """Mixed_5b/c/d: [1×1 64 | 1×1 48 → 5×5 64 | 1×1 64 → 3×3 96 → 3×3 96 | avg pool → 1×1 pool_features]."""

  pool_features: int

  @nn.compact
  def __call__(self, x):
    branch1x1 = ConvBN(64, (1, 1), name="branch1x1")(x)
    branch5x5 = ConvBN(64, (5, 5), padding=(2, 2), name="branch5x5_2")(ConvBN(48, (1, 1), name="branch5x5_1")(x))
    branch3x3dbl = ConvBN(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = ConvBN(self.pool_features, (1, 1), name="branch_pool")(_average_pool(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a, the 35 → 17 reduction: [3×3/2 384 | 1×1 64 → 3×3 96 → 3×3/2 96 | max pool/2]."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = ConvBN(384, (3, 3), strides=2, name="branch3x3")(x)
    branch3x3dbl = ConvBN(64, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = ConvBN(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = ConvBN(96, (3, 3), strides=2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b–e: [1×1 192 | 1×1 c → 1×7 c → 7×1 192 | 1×1 c → 7×1 → 1×7 → 7×1 c → 1×7 192 | avg pool → 1×1 192]."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c = self.channels_7x7
    row, column = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
    branch1x1 = ConvBN(192, (1, 1), name="branch1x1")(x)
    branch7x7 = ConvBN(c, (1, 1), name="branch7x7_1")(x)
    branch7x7 = ConvBN(c, **row, name="branch7x7_2")(branch7x7)
    branch7x7 = ConvBN(192, **column, name="branch7x7_3")(branch7x7)
    branch7x7dbl = ConvBN(c, (1, 1), name="branch7x7dbl_1")(x)
    for index, (features, kernel) in enumerate(((c, column), (c, row), (c, column), (192, row)), start=2):
      branch7x7dbl = ConvBN(features, **kernel, name=f"branch7x7dbl_{index}")(branch7x7dbl)
    branch_pool = ConvBN(192, (1, 1), name="branch_pool")(_average_pool(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a, the 17 → 8 reduction: [1×1 192 → 3×3/2 320 | 1×1 192 → 1×7 → 7×1 → 3×3/2 192 | max pool/2]."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = ConvBN(320, (3, 3), strides=2, name="branch3x3_2")(ConvBN(192, (1, 1), name="branch3x3_1")(x))
    branch7x7x3 = ConvBN(192, (1, 1), name="branch7x7x3_1")(x)
    branch7x7x3 = ConvBN(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = ConvBN(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = ConvBN(192, (3, 3), strides=2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/c: [1×1 320 | 1×1 384 → (1×3 ‖ 3×1) 384 each | 1×1 448 → 3×3 384 → (1×3 ‖ 3×1) | pool → 1×1 192].

  The pool is the padding-skipping average (Mixed_7b) or, in the FID graph's Mixed_7c, a 3 × 3 max pool.
  """

  max_pool: bool

  @nn.compact
  def __call__(self, x):
    def split(inputs, prefix):
      wide = ConvBN(384, (1, 3), padding=(0, 1), name=f"{prefix}a")(inputs)
      tall = ConvBN(384, (3, 1), padding=(1, 0), name=f"{prefix}b")(inputs)
      return jnp.concatenate([wide, tall], axis=-1)

    branch1x1 = ConvBN(320, (1, 1), name="branch1x1")(x)
    branch3x3 = split(ConvBN(384, (1, 1), name="branch3x3_1")(x), "branch3x3_2")
    branch3x3dbl = ConvBN(448, (1, 1), name="branch3x3dbl_1")(x)
    branch3x3dbl = split(ConvBN(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl), "branch3x3dbl_3")
    pooled = _max_pool(x, strides=1, padding=1) if self.max_pool else _average_pool(x)
    branch_pool = ConvBN(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionV3(nn.Module):
  """Images (B, H, W, 3) in [−1, 1] at the size to run at (≥ 75; 299 for FID) → pool features (B, 2048)."""

  @nn.compact
  def __call__(self, images):
    x = ConvBN(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(images)
    x = ConvBN(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = _max_pool(ConvBN(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x))
    x = ConvBN(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = _max_pool(ConvBN(192, (3, 3), name="Conv2d_4a_3x3")(x))
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))


def resize_for_inception(images) -> jax.Array:
  """(B, H, W, 3) → (B, 299, 299, 3) float32, bilinear with half-pixel centres and no antialiasing."""
  images = jnp.asarray(images, jnp.float32)
  return jax.image.resize(images, (images.shape[0], INPUT_SIZE, INPUT_SIZE, 3), "bilinear", antialias=False)


def _parameter_shapes() -> dict:
  """The Flax parameter tree of FIDInceptionV3 as ShapeDtypeStructs (no weights are made)."""
  tree = jax.eval_shape(FIDInceptionV3().init, jax.random.PRNGKey(0), jnp.zeros((1, 75, 75, 3)))
  return nn.unbox(tree["params"])


def convert_state_dict(state: dict[str, np.ndarray]) -> dict:
  """pytorch-fid's state dict (torch names and layouts; `fc.*` and `num_batches_tracked` ignored) → Flax params.

  Each ConvBN gets kernel = weight (O, I, kh, kw) as (kh, kw, I, O), scale = γ / √(running_var + 0.001) and
  bias = β − running_mean · scale. A missing or wrongly shaped tensor is a DataError naming it.
  """

  def tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    return checkpoint_tensor(state, (name,), shape, "FID Inception")

  def conv_bn(prefix: str, shapes: dict) -> dict:
    kh, kw, channels_in, channels_out = shapes["conv"]["kernel"].shape
    weight = tensor(f"{prefix}.conv.weight", (channels_out, channels_in, kh, kw))
    gamma, beta, mean, variance = (
      tensor(f"{prefix}.bn.{name}", (channels_out,)) for name in ("weight", "bias", "running_mean", "running_var")
    )
    scale = gamma / np.sqrt(variance + BATCH_NORM_EPS)
    return {"conv": {"kernel": weight.transpose(2, 3, 1, 0)}, "scale": scale, "bias": beta - mean * scale}

  def walk(shapes: dict, prefix: str) -> dict:
    if "conv" in shapes:
      return conv_bn(prefix, shapes)
    return {name: walk(child, f"{prefix}.{name}" if prefix else name) for name, child in shapes.items()}

  return walk(_parameter_shapes(), "")


class FIDInception:
  """The frozen network with its weights, jitted: `features(images (B, H, W, 3) in [−1, 1]) → (B, 2048)`."""

  def __init__(self, params: dict):
    self.params = params
    network = FIDInceptionV3()
    self._features = jax.jit(lambda params, images: network.apply({"params": params}, resize_for_inception(images)))

  def features(self, images, batch_size: int = 50) -> np.ndarray:
    """Pool features (B, 2048) float64 of images (B, H, W, 3) in [−1, 1], `batch_size` images at a time."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FID Inception images must be (B, H, W, 3) RGB in [-1, 1], got shape {images.shape}")
    # fewer images than a batch run as they are; more, with the last chunk padded to the others' shape
    chunk_size = min(batch_size, len(images))
    features = apply_in_batches(lambda chunk: self._features(self.params, chunk), (images,), chunk_size)
    return features.astype(np.float64)


def check_weights_file(path: str) -> pathlib.Path:
  """`path` as a Path if it is a file, else a ConfigError saying how to get the weights (checked before training)."""
  file = pathlib.Path(path)
  if not file.is_file():
    raise ConfigError(f"no FID Inception weights at {file}: expected a .safetensors file; {HOW_TO_GET}")
  return file


@functools.cache
def load_fid_inception(path: str) -> FIDInception:
  """pytorch-fid's FID Inception weights saved as safetensors (see HOW_TO_GET) → the network; loaded once per path."""
  file = check_weights_file(path)
  try:
    state = safetensors.numpy.load_file(file)
  except (safetensors.SafetensorError, OSError) as error:
    raise ConfigError(f"{file} is not a readable safetensors file ({error}); {HOW_TO_GET}") from error
  return FIDInception(convert_state_dict(state))
