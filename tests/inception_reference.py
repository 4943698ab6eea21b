"""A plain numpy reference of the FID Inception-v3 network, for parity tests of the Flax port. No JAX, no torch.

The network is pytorch-fid's `fid_inception_v3()` (torch-fidelity's "inception-v3-compat"): torchvision's Inception-v3
layout with the 2015 TensorFlow FID graph's weights (`pt_inception-2015-12-05`) and its pooling quirks:
- every conv is a BasicConv2d: conv without bias → BatchNorm (eps 0.001, inference form) → ReLU;
- the branch_pool of the A, C and first E blocks (Mixed_5b-d, 6b-e, 7b) is a 3×3 stride-1 average pool with padding 1
  that does not count the padded zeros (count_include_pad=False);
- the branch_pool of the last E block (Mixed_7c) is a 3×3 stride-1 max pool with padding 1;
- the B and D blocks (Mixed_6a, 7a) and the stem use 3×3 stride-2 max pools without padding;
- no pooling uses ceil_mode.

Features are pytorch-fid's pool3 (block index 3): Mixed_7c's output averaged over space, (N, 2048). Written to be
obviously correct in float64, channels last inside (NHWC) so every conv is one im2col matmul.
"""

from typing import NamedTuple

import numpy as np

BN_EPS = 0.001
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
NUM_CLASSES = 1008  # the TF graph's 1008-way classifier; fc is in the state dict but not used for the features


class ConvSpec(NamedTuple):
  """One BasicConv2d: its state-dict prefix, channels, kernel (kh, kw), stride and padding (ph, pw)."""

  name: str
  in_channels: int
  out_channels: int
  kernel: tuple[int, int]
  stride: int
  padding: tuple[int, int]


class Block(NamedTuple):
  """One entry of the network: kind "conv" (a stem BasicConv2d), "max_pool" (3×3 stride 2) or an Inception block
  "A" … "E". `option`: (kernel, stride, padding) for "conv", pool_features for "A", channels_7x7 for "C"; `pool`:
  the pooling the block applies to its input (for A/C/E: before branch_pool's 1×1 conv; for B/D: as a branch)."""

  name: str
  kind: str
  in_channels: int
  out_channels: int
  option: object
  pool: str


# Pooling variants named in the table below.
AVG_EXCLUDE_PAD = "avg 3x3 s1 p1 count_include_pad=False"
MAX_S1 = "max 3x3 s1 p1"
MAX_S2 = "max 3x3 s2 p0"

BLOCKS = (
  Block("Conv2d_1a_3x3", "conv", 3, 32, (3, 2, 0), ""),
  Block("Conv2d_2a_3x3", "conv", 32, 32, (3, 1, 0), ""),
  Block("Conv2d_2b_3x3", "conv", 32, 64, (3, 1, 1), ""),
  Block("maxpool1", "max_pool", 64, 64, None, MAX_S2),
  Block("Conv2d_3b_1x1", "conv", 64, 80, (1, 1, 0), ""),
  Block("Conv2d_4a_3x3", "conv", 80, 192, (3, 1, 0), ""),
  Block("maxpool2", "max_pool", 192, 192, None, MAX_S2),
  Block("Mixed_5b", "A", 192, 256, 32, AVG_EXCLUDE_PAD),
  Block("Mixed_5c", "A", 256, 288, 64, AVG_EXCLUDE_PAD),
  Block("Mixed_5d", "A", 288, 288, 64, AVG_EXCLUDE_PAD),
  Block("Mixed_6a", "B", 288, 768, None, MAX_S2),
  Block("Mixed_6b", "C", 768, 768, 128, AVG_EXCLUDE_PAD),
  Block("Mixed_6c", "C", 768, 768, 160, AVG_EXCLUDE_PAD),
  Block("Mixed_6d", "C", 768, 768, 160, AVG_EXCLUDE_PAD),
  Block("Mixed_6e", "C", 768, 768, 192, AVG_EXCLUDE_PAD),
  Block("Mixed_7a", "D", 768, 1280, None, MAX_S2),
  Block("Mixed_7b", "E", 1280, 2048, None, AVG_EXCLUDE_PAD),
  Block("Mixed_7c", "E", 2048, 2048, None, MAX_S1),
)


def _conv(name, in_channels, out_channels, kernel, stride=1, padding=0) -> ConvSpec:
  """A ConvSpec; an int kernel or padding means the same along both axes."""
  kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
  return ConvSpec(name, in_channels, out_channels, kernel, stride, padding)


def block_convs(block: Block) -> dict[str, ConvSpec]:
  """The BasicConv2d layers of a block, by branch name (the state-dict name is f"{block.name}.{branch}")."""
  cin, p = block.in_channels, block.name + "."
  if block.kind == "conv":
    kernel, stride, padding = block.option
    convs = [_conv(block.name, cin, block.out_channels, kernel, stride, padding)]
  elif block.kind == "max_pool":
    convs = []
  elif block.kind == "A":
    convs = [
      _conv(p + "branch1x1", cin, 64, 1),
      _conv(p + "branch5x5_1", cin, 48, 1),
      _conv(p + "branch5x5_2", 48, 64, 5, padding=2),
      _conv(p + "branch3x3dbl_1", cin, 64, 1),
      _conv(p + "branch3x3dbl_2", 64, 96, 3, padding=1),
      _conv(p + "branch3x3dbl_3", 96, 96, 3, padding=1),
      _conv(p + "branch_pool", cin, block.option, 1),
    ]
  elif block.kind == "B":
    convs = [
      _conv(p + "branch3x3", cin, 384, 3, stride=2),
      _conv(p + "branch3x3dbl_1", cin, 64, 1),
      _conv(p + "branch3x3dbl_2", 64, 96, 3, padding=1),
      _conv(p + "branch3x3dbl_3", 96, 96, 3, stride=2),
    ]
  elif block.kind == "C":
    c7 = block.option
    convs = [
      _conv(p + "branch1x1", cin, 192, 1),
      _conv(p + "branch7x7_1", cin, c7, 1),
      _conv(p + "branch7x7_2", c7, c7, (1, 7), padding=(0, 3)),
      _conv(p + "branch7x7_3", c7, 192, (7, 1), padding=(3, 0)),
      _conv(p + "branch7x7dbl_1", cin, c7, 1),
      _conv(p + "branch7x7dbl_2", c7, c7, (7, 1), padding=(3, 0)),
      _conv(p + "branch7x7dbl_3", c7, c7, (1, 7), padding=(0, 3)),
      _conv(p + "branch7x7dbl_4", c7, c7, (7, 1), padding=(3, 0)),
      _conv(p + "branch7x7dbl_5", c7, 192, (1, 7), padding=(0, 3)),
      _conv(p + "branch_pool", cin, 192, 1),
    ]
  elif block.kind == "D":
    convs = [
      _conv(p + "branch3x3_1", cin, 192, 1),
      _conv(p + "branch3x3_2", 192, 320, 3, stride=2),
      _conv(p + "branch7x7x3_1", cin, 192, 1),
      _conv(p + "branch7x7x3_2", 192, 192, (1, 7), padding=(0, 3)),
      _conv(p + "branch7x7x3_3", 192, 192, (7, 1), padding=(3, 0)),
      _conv(p + "branch7x7x3_4", 192, 192, 3, stride=2),
    ]
  elif block.kind == "E":
    convs = [
      _conv(p + "branch1x1", cin, 320, 1),
      _conv(p + "branch3x3_1", cin, 384, 1),
      _conv(p + "branch3x3_2a", 384, 384, (1, 3), padding=(0, 1)),
      _conv(p + "branch3x3_2b", 384, 384, (3, 1), padding=(1, 0)),
      _conv(p + "branch3x3dbl_1", cin, 448, 1),
      _conv(p + "branch3x3dbl_2", 448, 384, 3, padding=1),
      _conv(p + "branch3x3dbl_3a", 384, 384, (1, 3), padding=(0, 1)),
      _conv(p + "branch3x3dbl_3b", 384, 384, (3, 1), padding=(1, 0)),
      _conv(p + "branch_pool", cin, 192, 1),
    ]
  else:
    raise ValueError(f"unknown block kind {block.kind!r}")
  return {spec.name.removeprefix(p): spec for spec in convs}


def _state_shapes() -> dict[str, tuple[int, ...]]:
  shapes = {}
  for block in BLOCKS:
    for spec in block_convs(block).values():
      kh, kw = spec.kernel
      shapes[f"{spec.name}.conv.weight"] = (spec.out_channels, spec.in_channels, kh, kw)
      # BatchNorm2d also stores `bn.num_batches_tracked` (an int64 scalar): unused in inference, left out here.
      for field in BN_FIELDS:
        shapes[f"{spec.name}.bn.{field}"] = (spec.out_channels,)
  shapes["fc.weight"] = (NUM_CLASSES, 2048)
  shapes["fc.bias"] = (NUM_CLASSES,)
  return shapes


# Every tensor of pytorch-fid's FID Inception state dict (fid_inception_v3(): aux_logits=False, so no AuxLogits.*),
# by its PyTorch name, in module order; conv weights are (out, in, kh, kw).
STATE_SHAPES: dict[str, tuple[int, ...]] = _state_shapes()


def random_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """float32 tensors for every name in STATE_SHAPES, scaled so activations stay O(1) through the network."""
  state = {}
  for name, shape in STATE_SHAPES.items():
    if name.endswith(".conv.weight"):
      fan_in = shape[1] * shape[2] * shape[3]
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)  # He: keeps E[x²] through conv → ReLU
    elif name.endswith(".bn.weight"):
      value = 1.0 + 0.1 * rng.normal(size=shape)
    elif name.endswith(".bn.bias") or name.endswith(".bn.running_mean"):
      value = 0.1 * rng.normal(size=shape)
    elif name.endswith(".bn.running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name == "fc.weight":
      value = rng.normal(0.0, np.sqrt(1.0 / shape[1]), shape)
    else:  # fc.bias
      value = 0.1 * rng.normal(size=shape)
    state[name] = value.astype(np.float32)
  return state


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: tuple[int, int] = (0, 0)) -> np.ndarray:
  """(N, H, W, Cin) ⊛ PyTorch-layout weight (Cout, Cin, kh, kw) → (N, Ho, Wo, Cout), zero padding, no bias.

  Cross-correlation as torch: out[n, y, x, o] = Σ_{i, j, c} pad(x)[n, y·s + i, x·s + j, c] · weight[o, c, i, j]."""
  out_channels, in_channels, kh, kw = weight.shape
  ph, pw = padding
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  n, height, width, _ = x.shape
  out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
  patches = [
    x[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride, :]
    for i in range(kh)
    for j in range(kw)
  ]
  columns = np.stack(patches, axis=3).reshape(n * out_h * out_w, kh * kw * in_channels)  # (i, j, c) order
  kernel = np.asarray(weight, np.float64).transpose(2, 3, 1, 0).reshape(kh * kw * in_channels, out_channels)
  return (columns @ kernel).reshape(n, out_h, out_w, out_channels)


def _windows(x: np.ndarray, size: int, stride: int) -> list[np.ndarray]:
  """The size² strided (N, Ho, Wo, C) views of an already padded (N, H, W, C) array, one per window offset."""
  out_h, out_w = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
  return [
    x[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride, :]
    for i in range(size)
    for j in range(size)
  ]


def max_pool(x: np.ndarray, size: int = 3, stride: int = 2, padding: int = 0) -> np.ndarray:
  """Max pool of (N, H, W, C) (floor mode; padding counts as −inf, as torch's)."""
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  x = np.pad(x, pad, constant_values=-np.inf)
  return np.maximum.reduce(_windows(x, size, stride))


def avg_pool_exclude_pad(x: np.ndarray, size: int = 3, stride: int = 1, padding: int = 1) -> np.ndarray:
  """Average pool of (N, H, W, C) over the window's in-bounds pixels only (torch's count_include_pad=False)."""
  pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
  total = np.add.reduce(_windows(np.pad(x, pad), size, stride))
  count = np.add.reduce(_windows(np.pad(np.ones((1, *x.shape[1:3], 1)), pad), size, stride))
  return total / count


POOLS = {
  AVG_EXCLUDE_PAD: lambda x: avg_pool_exclude_pad(x, 3, stride=1, padding=1),
  MAX_S1: lambda x: max_pool(x, 3, stride=1, padding=1),
  MAX_S2: lambda x: max_pool(x, 3, stride=2, padding=0),
}


def basic_conv(state: dict, spec: ConvSpec, x: np.ndarray) -> np.ndarray:
  """BasicConv2d on (N, H, W, Cin) → (N, Ho, Wo, Cout): conv (no bias) → inference BatchNorm (eps 0.001) → ReLU."""
  bn = {field: np.asarray(state[f"{spec.name}.bn.{field}"], np.float64) for field in BN_FIELDS}
  y = conv2d(x, state[f"{spec.name}.conv.weight"], spec.stride, spec.padding)
  y = (y - bn["running_mean"]) / np.sqrt(bn["running_var"] + BN_EPS) * bn["weight"] + bn["bias"]
  return np.maximum(y, 0.0)


def run_block(state: dict, block: Block, x: np.ndarray) -> np.ndarray:
  """One table entry on (N, H, W, in_channels) → (N, Ho, Wo, out_channels); branches concatenated in torch's order."""
  convs = block_convs(block)
  pool = POOLS.get(block.pool)

  def conv(branch: str, y: np.ndarray) -> np.ndarray:
    return basic_conv(state, convs[branch], y)

  def chain(y: np.ndarray, *branches: str) -> np.ndarray:
    """The named convs applied one after the other."""
    for branch in branches:
      y = conv(branch, y)
    return y

  if block.kind == "conv":
    return conv(block.name, x)
  if block.kind == "max_pool":
    return pool(x)
  if block.kind == "A":
    outputs = [
      conv("branch1x1", x),
      chain(x, "branch5x5_1", "branch5x5_2"),
      chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
      conv("branch_pool", pool(x)),
    ]
  elif block.kind == "B":
    outputs = [conv("branch3x3", x), chain(x, "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), pool(x)]
  elif block.kind == "C":
    outputs = [
      conv("branch1x1", x),
      chain(x, "branch7x7_1", "branch7x7_2", "branch7x7_3"),
      chain(x, *(f"branch7x7dbl_{k}" for k in range(1, 6))),
      conv("branch_pool", pool(x)),
    ]
  elif block.kind == "D":
    outputs = [
      chain(x, "branch3x3_1", "branch3x3_2"),
      chain(x, *(f"branch7x7x3_{k}" for k in range(1, 5))),
      pool(x),
    ]
  elif block.kind == "E":
    branch3x3 = conv("branch3x3_1", x)
    branch3x3dbl = chain(x, "branch3x3dbl_1", "branch3x3dbl_2")
    outputs = [
      conv("branch1x1", x),
      conv("branch3x3_2a", branch3x3),
      conv("branch3x3_2b", branch3x3),
      conv("branch3x3dbl_3a", branch3x3dbl),
      conv("branch3x3dbl_3b", branch3x3dbl),
      conv("branch_pool", pool(x)),
    ]
  else:
    raise ValueError(f"unknown block kind {block.kind!r}")
  return np.concatenate(outputs, axis=-1)


def numpy_features(state: dict, images: np.ndarray) -> np.ndarray:
  """pool3 features (N, 2048) float64 of (N, 3, H, W) images already in the network's range (2·x − 1 of [0, 1]
  images) and at the size to run at (no resizing here; H, W ≥ 75)."""
  images = np.asarray(images, np.float64)
  if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[2:]) < 75:
    raise ValueError(f"expected (N, 3, H ≥ 75, W ≥ 75) images, got {images.shape}")
  x = images.transpose(0, 2, 3, 1)  # channels last
  for block in BLOCKS:
    x = run_block(state, block, x)
    assert x.shape[-1] == block.out_channels, (block.name, x.shape)
  return x.mean(axis=(1, 2))


def _bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) interpolation weights: half-pixel centres, source index clamped at 0, no antialiasing —
  torch's F.interpolate(mode="bilinear", align_corners=False) given a size (scale = in/out)."""
  scale = in_size / out_size
  source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  frac = source - lower
  weights = np.zeros((out_size, in_size))
  np.add.at(weights, (np.arange(out_size), lower), 1.0 - frac)
  np.add.at(weights, (np.arange(out_size), upper), frac)
  return weights


def numpy_resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
  """(N, C, H, W) → (N, C, size, size) float64, bilinear as torch's F.interpolate(align_corners=False)."""
  images = np.asarray(images, np.float64)
  rows = _bilinear_matrix(images.shape[2], size)
  cols = _bilinear_matrix(images.shape[3], size)
  return np.einsum("yh,nchw,xw->ncyx", rows, images, cols, optimize=True)
