"""LAEO-Net++ and LAEO-Net (thesis §2.1; facts laeo-scam A.3): are two people Looking At Each Other over T frames?

Inputs are channels-last windows of T frames: two head tracks (B, T, 64, 64, 3) and the head map (B, T, 64, 64, 3)
(one map per frame; version 1 uses only the middle frame's). Layers carry the Keras names of the released models
(hconv3d_1, bn_1, embedding, mconv3d_1, mconv_1, fc_1, output_laeo) so `load_keras_weights` maps a released
HDF5 file onto them one to one.

version 2 (LAEO-Net++): the head branch is the inflated self-supervised face encoder (4 strided 3-D convs with
LeakyReLU 0.2 and BatchNorm, then a (T', 4, 4) "embedding" conv to one 256-d vector per head, no normalisation);
the map branch a 3-D conv stack → 48-d, L2-normalised. version 1 (LAEO-Net): the head branch is that 3-D conv
stack (48-d, L2) and the map branch a 2-D conv stack on the middle frame's map (16-d, L2). Both concatenate
[left head, right head, map] → Dense 32 ReLU → dropout → Dense 2 (logits; the softmax is the loss's).
"""

from collections.abc import Sequence
import pathlib
import re
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from storyjax.errors import CheckpointError
from storyjax.layers.conv import ACTIVATION_AXES, conv
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import dense
from storyjax.layers.norms import make_norm

Dtype = Any
VERSIONS = (1, 2)
CROP_SHAPE = (64, 64, 3)
LEAKY_SLOPE = 0.2
BATCH_NORM = {"momentum": 0.99, "epsilon": 1e-5}  # Keras' BatchNormalization as saved in the released JSON


def _l2_normalise(features, epsilon: float = 1e-12):
  """(B, F) → rows of unit L2 norm (Keras' K.l2_normalize: x / sqrt(max(Σx², ε)))."""
  features = features.astype(jnp.float32)
  return features * jax.lax.rsqrt(jnp.maximum(jnp.sum(features**2, axis=-1, keepdims=True), epsilon))


def _check_window(name: str, inputs) -> None:
  if inputs.ndim != 5 or tuple(inputs.shape[2:]) != CROP_SHAPE:
    raise ValueError(f"{name} must be (B, T, 64, 64, 3) windows, got shape {inputs.shape}")


class HeadEncoder3D(nn.Module):
  """LAEO-Net++'s head branch (`headBranchSelf64`): head track (B, T, 64, 64, 3) → (B, embedding_dim) float32.

  Layer i (1-based): zero-pad H and W by 1, Conv3D widths[i] with kernel (k_t, 4, 4), stride (1, 2, 2), valid
  (64 → 32 → 16 → 8 → 4); BatchNorm after all but the first; LeakyReLU 0.2. k_t = 3 while at least 2 frames
  remain after it, else 1 (the release's rule for short windows). Then "embedding": Conv3D embedding_dim with
  kernel (remaining T, 4, 4) → (B, 1, 1, 1, embedding_dim), flattened; no normalisation. T = 10: (8, 6, 4, 2) frames.
  """

  widths: Sequence[int] = (32, 64, 128, 256)
  embedding_dim: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, head_track, train: bool = False):
    _check_window("head track", head_track)
    features = head_track.astype(self.dtype)
    for index, width in enumerate(self.widths, start=1):
      temporal_kernel = 3 if features.shape[1] - 2 >= 2 else 1
      features = conv(
        width, (temporal_kernel, 4, 4), (1, 2, 2), ((0, 0), (1, 1), (1, 1)), dtype=self.dtype, name=f"hconv3d_{index}"
      )(features)
      features = nn.with_logical_constraint(features, ACTIVATION_AXES[3])
      if index > 1:
        features = make_norm("batch", self.dtype, f"bn_{index - 1}", axis_name="conv_out", train=train, **BATCH_NORM)(
          features
        )
      features = nn.leaky_relu(features, LEAKY_SLOPE)
    embedding = conv(
      self.embedding_dim, features.shape[1:4], padding="VALID", dtype=self.dtype, name="embedding"
    )(features)  # fmt: skip
    return embedding.reshape(embedding.shape[0], -1).astype(jnp.float32)


class ConvStackEncoder(nn.Module):
  """The small valid-conv ReLU stack LAEO-Net uses twice, with dropout and L2 normalisation at the end:
  (B, T, 64, 64, 3) → (B, T'·widths[−1]) (3-D kernels) or (B, 64, 64, 3) → (B, widths[−1]) (2-D kernels).

  3-D as released (LAEO-Net++'s map branch, LAEO-Net's head branch): widths (16, 24, 32, 12), kernels (3, 5, 5),
  (3, 3, 3), (3, 3, 3), (1, 6, 6), strides (1, 2, 2) ×3 then 1: T = 10 → (4, 1, 1, 12) → 48-d. 2-D (LAEO-Net's map
  branch): widths (8, 16, 24, 16), kernels 5, 3, 3, 3, strides 2, 2, 2, 4 → (1, 1, 16) → 16-d. Layers are named
  `{prefix}_{i}` (the Keras names: hconv3d, mconv3d, mconv).
  """

  widths: Sequence[int]
  kernels: Sequence[Sequence[int]]
  strides: Sequence[Sequence[int]]
  prefix: str
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    features = inputs.astype(self.dtype)
    for index, (width, kernel, stride) in enumerate(zip(self.widths, self.kernels, self.strides), start=1):
      if any(size < tap for size, tap in zip(features.shape[1:-1], kernel)):
        raise ValueError(f"{self.prefix}_{index}: input {features.shape[1:-1]} is smaller than its kernel {kernel}")
      features = conv(width, kernel, stride, "VALID", dtype=self.dtype, name=f"{self.prefix}_{index}")(features)
      features = nn.with_logical_constraint(features, ACTIVATION_AXES[len(kernel)])
      features = nn.relu(features)
    features = Dropout(self.dropout_rate)(features, deterministic=not train)
    return _l2_normalise(features.reshape(features.shape[0], -1))


MAP_STACK_3D = {
  "widths": (16, 24, 32, 12),
  "kernels": ((3, 5, 5), (3, 3, 3), (3, 3, 3), (1, 6, 6)),
  "strides": ((1, 2, 2), (1, 2, 2), (1, 2, 2), (1, 1, 1)),
}
MAP_STACK_2D = {
  "widths": (8, 16, 24, 16),
  "kernels": ((5, 5), (3, 3), (3, 3), (3, 3)),
  "strides": ((2, 2),) * 3 + ((4, 4),),
}


class LaeoNet(nn.Module):
  """(head_left, head_right (B, T, 64, 64, 3), head_map (B, T, 64, 64, 3)) → LAEO logits (B, 2) float32.

  version 2 = LAEO-Net++, 1 = LAEO-Net (module docstring). `use_head_map=False` drops the map branch (the
  ablation: the classifier sees the two heads only). `head_widths` / `embedding_dim` size version 2's head branch
  (released: (32, 64, 128, 256), 256). The same head branch (shared weights) encodes both heads.
  """

  version: int = 2
  head_widths: Sequence[int] = (32, 64, 128, 256)
  embedding_dim: int = 256
  hidden_dim: int = 32
  dropout_rate: float = 0.2
  use_head_map: bool = True
  dtype: Dtype = jnp.float32

  def setup(self):
    if self.version not in VERSIONS:
      raise ValueError(f"LaeoNet version {self.version!r}; choose one of {VERSIONS}")
    if self.version == 2:
      self.head_branch = HeadEncoder3D(tuple(self.head_widths), self.embedding_dim, self.dtype)
      map_stack, map_prefix = MAP_STACK_3D, "mconv3d"
    else:
      self.head_branch = ConvStackEncoder(
        **MAP_STACK_3D, prefix="hconv3d", dropout_rate=self.dropout_rate, dtype=self.dtype
      )  # fmt: skip
      map_stack, map_prefix = MAP_STACK_2D, "mconv"
    if self.use_head_map:
      self.map_branch = ConvStackEncoder(
        **map_stack, prefix=map_prefix, dropout_rate=self.dropout_rate, dtype=self.dtype
      )  # fmt: skip
    self.fc_1 = dense(self.hidden_dim, ("embed", "mlp"), self.dtype)
    self.top_dropout = Dropout(self.dropout_rate)
    self.output_laeo = dense(2, ("mlp", "io"), self.dtype)

  def __call__(self, head_left, head_right, head_map, train: bool = False):
    if head_left.shape != head_right.shape:
      raise ValueError(f"head tracks differ in shape: {head_left.shape} and {head_right.shape}")
    _check_window("head_map", head_map)
    # One branch called twice, as Keras' shared Sequential: shared weights, BatchNorm statistics per head.
    codes = [self.head_branch(head_left, train), self.head_branch(head_right, train)]
    if self.use_head_map:
      maps = head_map if self.version == 2 else head_map[:, head_map.shape[1] // 2]
      codes.append(self.map_branch(maps, train))
    hidden = nn.relu(self.fc_1(jnp.concatenate(codes, axis=-1).astype(self.dtype)))
    hidden = self.top_dropout(hidden, deterministic=not train)
    return self.output_laeo(hidden).astype(jnp.float32)


KERAS_LAYER = re.compile(r"^(hconv3d_\d|mconv3d_\d|mconv_\d|bn_\d|embedding|fc_1|output_laeo)(_\d+)?$")
# Keras variable name → (Flax collection, variable name)
KERAS_VARIABLES = {
  "kernel": ("params", "kernel"),
  "bias": ("params", "bias"),
  "gamma": ("params", "scale"),
  "beta": ("params", "bias"),
  "moving_mean": ("batch_stats", "mean"),
  "moving_variance": ("batch_stats", "var"),
}


def _keras_arrays(path: pathlib.Path) -> dict[tuple[str, str, str], np.ndarray]:
  """{(collection, Keras layer name, variable): array} of every weight in a Keras 2 HDF5 file (a whole model saved
  by `model.save`, weights under "model_weights", or `save_weights`); layer-name suffixes such as the "_2" of
  "sequential_2/hconv3d_1_2/kernel:0" are dropped."""
  import h5py  # only needed to import released weights

  arrays = {}
  try:
    with h5py.File(path, "r") as file:
      root = file.get("model_weights", file)

      def visit(name, item):
        if not isinstance(item, h5py.Dataset):
          return
        *_, layer, variable = name.split("/")
        match, variable = KERAS_LAYER.match(layer), variable.split(":")[0]
        if match is None or variable not in KERAS_VARIABLES:
          raise CheckpointError(f"{path}: unexpected weight {name!r}; is this a LAEO-Net Keras file?")
        collection, flax_name = KERAS_VARIABLES[variable]
        key = (collection, match.group(1), flax_name)
        if key in arrays:
          raise CheckpointError(f"{path}: layer {match.group(1)!r} has two {variable!r} weights")
        arrays[key] = np.asarray(item, np.float32)

      root.visititems(visit)
  except OSError as error:
    raise CheckpointError(f"cannot read Keras weights {path}: {error}") from error
  return arrays


def load_keras_weights(path: str | pathlib.Path, model: LaeoNet) -> dict:
  """Variables {"params", "batch_stats"} of `model` from a released Keras HDF5 file (facts A.3: the LAEO-Net
  models-hmaps-tr*.hdf5 or LAEO-Net++'s model-hmaps-trava_*.hdf5 / weights.h5); `model` must have the file's
  sizes (configs/laeo.py:paper). Kernel layouts (kT, kH, kW, in, out) and Flatten order (T, H, W, C) are Flax's,
  so arrays are copied as they are; every weight of the model must be in the file exactly once, with its shape.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise CheckpointError(f"Keras weights file {path} does not exist")
  arrays = _keras_arrays(path)
  window = jnp.zeros((1, 10, *CROP_SHAPE), jnp.float32)
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), window, window, window)))
  leaves = {
    tuple(entry.key for entry in key_path): leaf for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]
  }
  keras_key = lambda flax_path: (flax_path[0], *flax_path[-2:])  # (collection, layer, variable)
  if unused := sorted(set(arrays) - {keras_key(flax_path) for flax_path in leaves}):
    raise CheckpointError(f"{path} has weights this model does not use: {unused[:5]}; version or use_head_map?")
  variables = {}
  for flax_path, leaf in leaves.items():
    collection, layer, name = keras_key(flax_path)
    if (collection, layer, name) not in arrays:
      raise CheckpointError(f"{path} has no {layer}/{name} weight ({collection}) for this model; version or sizes?")
    array = arrays[collection, layer, name]
    if array.shape != leaf.shape:
      raise CheckpointError(
        f"{path}: {layer}/{name} has shape {array.shape}, the model expects {leaf.shape}; "
        "build the model with the file's sizes (configs/laeo.py:paper)"
      )
    variables[flax_path] = array
  return flax.traverse_util.unflatten_dict(variables)
