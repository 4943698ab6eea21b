"""First-nearest-neighbour search by cosine similarity, blocked on device: never an (M, M) matrix.

`top_neighbours(points, k)` returns each point's k most similar other points:
- "exact": every query block (block_size rows) scans the key blocks with a running top-k, so memory is
  O(M · k + block_size²) and time O(M² · D). Query blocks are split over every device present (shard_map over a
  one-axis mesh); keys are replicated.
- "approximate" (random-projection forest, as FINCH switches to an approximate search for large inputs): each of
  num_trees trees splits the points at the median of a random projection, depth times, into leaves of leaf_size
  points; the exact top-k is taken within each leaf and the trees' candidates are merged. Time
  O(num_trees · M · (depth log M + leaf_size · D)), memory O(M · (D + num_trees · k)): near-linear in M.
- "auto": exact up to exact_max_points points, approximate above.

Ties go to the lower index (lax.top_k keeps the first of equal values and candidates are concatenated in index
order). Missing candidates (fewer than k other points) have index -1 and similarity -inf.
"""

import dataclasses
import functools

import jax
from jax import lax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec
import numpy as np

SEARCH_METHODS = ("auto", "exact", "approximate")


@dataclasses.dataclass(frozen=True)
class NeighbourSearch:
  """How first neighbours are found (module docstring); `configs/clustering.py` `search` sets these."""

  method: str = "auto"
  exact_max_points: int = 20_000
  block_size: int = 1024
  leaf_size: int = 1024
  num_trees: int = 4
  seed: int = 0

  def __post_init__(self):
    if self.method not in SEARCH_METHODS:
      raise ValueError(f"search method {self.method!r} is not one of {SEARCH_METHODS}")
    for name in ("exact_max_points", "block_size", "leaf_size", "num_trees"):
      if getattr(self, name) < 1:
        raise ValueError(f"search {name} must be positive, got {getattr(self, name)}")

  def uses_exact(self, num_points: int) -> bool:
    return self.method == "exact" or (self.method == "auto" and num_points <= self.exact_max_points)


def normalise(points: np.ndarray) -> np.ndarray:
  """(M, D) → float32 rows of unit norm (zero rows stay zero: similarity 0 to everything)."""
  points = np.asarray(points, np.float32)
  norms = np.linalg.norm(points, axis=1, keepdims=True)
  return points / np.maximum(norms, 1e-12)


def _padded_size(num: int, multiple: int) -> int:
  """The next power of two ≥ num, at least `multiple` (a power of two): few distinct shapes, few compiles."""
  return max(multiple, 1 << max(num - 1, 0).bit_length())


def _merge_top_k(values, indices, new_values, new_indices, k):
  """Running top-k: (Q, k) ∪ (Q, B) → (Q, k); earlier candidates come first, so ties keep the lower index."""
  values = jnp.concatenate([values, new_values], axis=1)
  indices = jnp.concatenate([indices, new_indices], axis=1)
  values, position = lax.top_k(values, k)
  return values, jnp.take_along_axis(indices, position, axis=1)


def _block_top_k(queries, query_index, keys, num_keys, k, block_size):
  """queries (Mq, D) with their global indices (Mq,), keys (Mk, D) → top-k similarities and indices (Mq, k)."""
  key_blocks = keys.reshape(-1, block_size, keys.shape[1])

  def one_query_block(args):
    query_block, query_block_index = args

    def scan_keys(carry, block_and_offset):
      key_block, offset = block_and_offset
      key_index = offset + jnp.arange(block_size)
      similarity = query_block @ key_block.T
      invalid = (key_index[None, :] == query_block_index[:, None]) | (key_index[None, :] >= num_keys)
      similarity = jnp.where(invalid, -jnp.inf, similarity)
      return _merge_top_k(*carry, similarity, jnp.broadcast_to(key_index, similarity.shape), k), None

    initial = (
      jnp.full((query_block.shape[0], k), -jnp.inf, jnp.float32),
      jnp.full((query_block.shape[0], k), -1, jnp.int32),
    )
    offsets = jnp.arange(key_blocks.shape[0], dtype=jnp.int32) * block_size
    (values, indices), _ = lax.scan(scan_keys, initial, (key_blocks, offsets))
    return values, indices

  query_blocks = queries.reshape(-1, block_size, queries.shape[1])
  values, indices = lax.map(one_query_block, (query_blocks, query_index.reshape(-1, block_size)))
  return values.reshape(-1, k), indices.reshape(-1, k)


@functools.partial(jax.jit, static_argnames=("k", "block_size", "mesh"))
def _exact_top_k(queries, query_index, keys, num_keys, *, k, block_size, mesh):
  search = functools.partial(_block_top_k, k=k, block_size=block_size)
  if mesh is None:
    return search(queries, query_index, keys, num_keys)
  rows, replicated = PartitionSpec("queries"), PartitionSpec()
  return jax.shard_map(
    search, mesh=mesh, in_specs=(rows, rows, replicated, replicated), out_specs=(rows, rows), check_vma=False
  )(queries, query_index, keys, num_keys)


def _tree_order(points, key, depth):
  """Random-projection tree: (M, D) → a permutation (M,) that puts each of the 2**depth leaves contiguously."""
  num, dim = points.shape
  order = jnp.arange(num, dtype=jnp.int32)
  for level in range(depth):
    segments = 2**level
    directions = jax.random.normal(jax.random.fold_in(key, level), (segments, dim), points.dtype)
    projection = jnp.einsum("sld,sd->sl", points.reshape(segments, -1, dim), directions)
    within = jnp.argsort(projection, axis=1)
    order = jnp.take_along_axis(order.reshape(segments, -1), within, axis=1).reshape(num)
    points = jnp.take_along_axis(points.reshape(segments, -1, dim), within[..., None], axis=1).reshape(num, dim)
  return order, points


@functools.partial(jax.jit, static_argnames=("k", "leaf_size", "num_trees", "mesh"))
def _forest_top_k(points, num_points, key, *, k, leaf_size, num_trees, mesh):
  num, dim = points.shape
  depth = (num // leaf_size).bit_length() - 1

  def leaf_top_k(leaf_points, leaf_index):
    """(L, leaf, D), (L, leaf) → (L, leaf, k) values and global indices: the exact top-k inside each leaf."""

    def one_leaf(args):
      leaf, index = args
      similarity = leaf @ leaf.T
      invalid = (index[None, :] == index[:, None]) | (index[None, :] >= num_points)
      values, position = lax.top_k(jnp.where(invalid, -jnp.inf, similarity), k)
      return values, jnp.where(jnp.isfinite(values), index[position], -1)

    return lax.map(one_leaf, (leaf_points, leaf_index), batch_size=4)

  if mesh is not None:
    leaves = PartitionSpec("queries")
    leaf_top_k = jax.shard_map(
      leaf_top_k, mesh=mesh, in_specs=(leaves, leaves), out_specs=(leaves, leaves), check_vma=False
    )

  def one_tree(tree_key):
    order, sorted_points = _tree_order(points, tree_key, depth)
    values, indices = leaf_top_k(sorted_points.reshape(-1, leaf_size, dim), order.reshape(-1, leaf_size))
    back = jnp.zeros((num, k), jnp.float32).at[order].set(values.reshape(num, k))
    return back, jnp.full((num, k), -1, jnp.int32).at[order].set(indices.reshape(num, k))

  values, indices = lax.map(one_tree, jax.random.split(key, num_trees))  # (trees, M, k)
  values = jnp.moveaxis(values, 0, 1).reshape(num, -1)
  indices = jnp.moveaxis(indices, 0, 1).reshape(num, -1)
  # A candidate found by several trees counts once: sort by index, drop repeats, keep the best k.
  by_index = jnp.argsort(indices, axis=1)
  indices = jnp.take_along_axis(indices, by_index, axis=1)
  values = jnp.take_along_axis(values, by_index, axis=1)
  repeated = jnp.concatenate([jnp.zeros((num, 1), bool), indices[:, 1:] == indices[:, :-1]], axis=1)
  values = jnp.where(repeated | (indices < 0), -jnp.inf, values)
  values, position = lax.top_k(values, k)
  return values, jnp.where(jnp.isfinite(values), jnp.take_along_axis(indices, position, axis=1), -1)


def _query_mesh(rows: int, block: int) -> Mesh | None:
  """A one-axis mesh of every device when the rows split into whole blocks per device, else None (one device)."""
  devices = jax.devices()
  if len(devices) == 1 or rows % (len(devices) * block):
    return None
  return Mesh(np.array(devices), ("queries",))


def top_neighbours(
  points: np.ndarray, k: int, search: NeighbourSearch = NeighbourSearch(), query_rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Each point's k most cosine-similar other points.

  points (M, D) (normalised here); query_rows (Q,) restricts the queries to those rows (exact search only; the
  keys are still all points). Returns (similarity (Q, k) float32, index (Q, k) int64), best first; -inf / -1
  where fewer than k other points exist.
  """
  points = normalise(points)
  num, dim = points.shape
  k = max(1, min(k, num - 1)) if num > 1 else 1
  if num == 1:
    return np.full((1, 1), -np.inf, np.float32), np.full((1, 1), -1, np.int64)
  exact = query_rows is not None or search.uses_exact(num)
  if exact:
    block = min(search.block_size, _padded_size(num, 8))
    keys = np.zeros((_padded_size(num, block), dim), np.float32)
    keys[:num] = points
    rows = np.arange(num) if query_rows is None else np.asarray(query_rows, np.int64)
    padded_rows = _padded_size(len(rows), block)
    query_index = np.full(padded_rows, num, np.int32)  # padding queries: index num matches no key
    query_index[: len(rows)] = rows
    queries = keys[np.minimum(query_index, num - 1)]
    values, indices = _exact_top_k(
      queries, query_index, keys, np.int32(num), k=k, block_size=block, mesh=_query_mesh(padded_rows, block)
    )
    values, indices = np.asarray(values)[: len(rows)], np.asarray(indices)[: len(rows)]
  else:
    leaf = min(search.leaf_size, _padded_size(num, 8))
    padded = _padded_size(num, leaf)
    padded_points = np.zeros((padded, dim), np.float32)
    padded_points[:num] = points
    leaves = padded // leaf
    mesh = _query_mesh(leaves, 1)
    values, indices = _forest_top_k(
      padded_points,
      np.int32(num),
      jax.random.PRNGKey(search.seed),
      k=min(k, leaf - 1),
      leaf_size=leaf,
      num_trees=search.num_trees,
      mesh=mesh,
    )
    values, indices = np.asarray(values)[:num], np.asarray(indices)[:num]
  indices = np.where(np.isfinite(values), indices, -1).astype(np.int64)
  return values, indices
