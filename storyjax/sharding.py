"""Device mesh and the one logical-axis → mesh-axis rules table.

Every parameter is annotated with logical axis names (`nn.with_logical_partitioning`); this module
maps them onto a `Mesh` with axes `data`, `fsdp`, `model`. Batches are split over (`data`, `fsdp`);
parameters and optimizer state are sharded over `fsdp` (ZeRO-3 style) and `model` (tensor parallel).
Layers also pin their activations with `activation_*` names (`nn.with_logical_constraint`), so that
under fsdp XLA gathers the weights rather than the batch; those constraints act only inside
`activation_sharding(mesh)`.
"""

from collections.abc import Sequence
import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from storyjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")

# Logical axis name → mesh axis (or None = replicated). One table for every model.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
  ("batch", BATCH_AXES),
  ("embed", "fsdp"),
  ("mlp", "model"),
  ("heads", "model"),
  ("vocab", None),
  ("length", None),
  ("io", None),
  ("folds", None),  # the k-fold ensemble axis of stacked models (storyjax/models/multimodal.py)
  # Conv kernels (depth, height, width, in, out): the few taps stay replicated, channels shard like embed/mlp.
  ("conv_depth", None),
  ("conv_height", None),
  ("conv_width", None),
  ("conv_in", "fsdp"),
  ("conv_out", "model"),
  ("activation_batch", BATCH_AXES),
  ("activation_length", None),
  ("activation_embed", None),
  ("activation_heads", "model"),
  ("activation_kv", None),
  ("activation_mlp", "model"),
  ("activation_depth", None),
  ("activation_height", None),
  ("activation_width", None),
  ("activation_channels", None),
)


def make_mesh(axis_sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds the (data, fsdp, model) mesh; one size may be -1 (= all remaining devices)."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ConfigError(f"unknown mesh axes {sorted(unknown)}; the mesh has {MESH_AXES}.")
  sizes = [int(axis_sizes.get(name, 1)) for name in MESH_AXES]
  asked = dict(zip(MESH_AXES, sizes))
  fix = f"set --config.mesh.{{data,fsdp,model}} so that their product divides the {len(devices)} device(s)"
  if sizes.count(-1) > 1:
    raise ConfigError(f"mesh {asked}: at most one axis may be -1 (all remaining devices).")
  if any(size == 0 or size < -1 for size in sizes):
    raise ConfigError(f"mesh {asked}: axis sizes are positive, or -1 for all remaining devices.")
  known = math.prod(size for size in sizes if size != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ConfigError(f"{len(devices)} device(s) cannot be split into mesh {asked}; {fix}.")
    sizes[sizes.index(-1)] = len(devices) // known
  total = math.prod(sizes)
  if total > len(devices):
    raise ConfigError(f"mesh {asked} needs {total} devices but {len(devices)} are available; {fix}.")
  device_grid = np.asarray(devices[:total]).reshape(sizes)
  return Mesh(device_grid, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """Replicates the dimensions whose size the mesh axes do not divide (e.g. a 9-channel output)."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = math.prod(mesh.shape[name] for name in names)
    fitted.append(axes if ways > 1 and dim % ways == 0 else None)
  return PartitionSpec(*fitted)


def logical_shardings(boxed_tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for a tree of (abstract) values carrying logical partitioning metadata."""
  logical_specs = nn.get_partition_spec(boxed_tree)
  mesh_specs = nn.logical_to_mesh(logical_specs, LOGICAL_AXIS_RULES)
  return jax.tree.map(
    lambda spec, leaf: NamedSharding(mesh, _fit_spec(spec, leaf.shape, mesh)),
    mesh_specs,
    nn.unbox(boxed_tree),
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


@contextlib.contextmanager
def activation_sharding(mesh: Mesh):
  """Context in which to trace (jit/lower) a step so the layers' activation constraints apply on `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield
