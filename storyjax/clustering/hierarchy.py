"""First-neighbour agglomerative clustering (FINCH's linking rule) with must-link and cannot-link constraints: C1C.

One level (`link_level`): every point i picks its first neighbour κ_i, the most cosine-similar point that it is
not cannot-linked with (ties → the lower index; none when all are forbidden or, with max_distance, when the
distance 1 − cos exceeds it); the edges i–κ_i (FINCH links i and j when j = κ_i, i = κ_j or κ_i = κ_j, which the
connected components of these edges already give) make the new partition. Chaining can still join two
cannot-linked points through others: then, pair by pair in sorted order, the weakest edge (largest distance; the
first on the path from the pair's lower point on a tie) on the path between them is cut — the minimum cut that
separates two nodes of a tree, and the first-neighbour graph is a forest (only 2-cycles can occur).

The hierarchy (`partitions`): level 0 is the must-linked groups (the tracks: all detections of a track are one
point); each next level links the previous level's clusters, represented by the mean of their original rows, with
the cannot-link pairs lifted to clusters. It stops when a level merges nothing or leaves one cluster.

Choosing a partition (`select`): with num_clusters, the coarsest level with at least that many clusters, then
FINCH's final step — merge only the closest allowed first-neighbour pair, recompute, repeat — down to exactly
num_clusters (or as far as the cannot-links allow). Without it, the coarsest level: pass max_distance to stop
merging at a distance (C1C and MuHPC's "threshold on the maximum NN distance").
"""

import numpy as np

from storyjax.clustering.neighbours import NeighbourSearch, top_neighbours

# Cannot-link degree up to which one top-k search holds an allowed neighbour for every point; points with more
# forbidden partners than this that find no allowed candidate are searched again with a larger k.
_MAX_CANDIDATES = 16


def canonical_labels(labels: np.ndarray) -> np.ndarray:
  """Renumbers (N,) labels 0.. in order of each cluster's lowest index."""
  _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
  rank = np.empty(len(first), np.int64)
  rank[np.argsort(first)] = np.arange(len(first))
  return rank[inverse.reshape(-1)]


def pair_codes(pairs: np.ndarray, num: int) -> np.ndarray:
  """(P, 2) unordered index pairs → sorted unique int64 codes min · num + max."""
  pairs = np.sort(np.asarray(pairs, np.int64).reshape(-1, 2), axis=1)
  return np.unique(pairs[:, 0] * num + pairs[:, 1])


def lift_pairs(pairs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Cannot-link pairs of points → pairs of the clusters holding them (P', 2), sorted, unique, no self-pairs."""
  if not len(pairs):
    return np.zeros((0, 2), np.int64)
  lifted = np.sort(labels[pairs], axis=1)
  lifted = np.unique(lifted[lifted[:, 0] != lifted[:, 1]], axis=0)
  return lifted.reshape(-1, 2).astype(np.int64)


def subset_pairs(pairs: np.ndarray, rows: np.ndarray, num: int) -> np.ndarray:
  """(P, 2) pairs of indices in [0, num) → the pairs with both ends in `rows`, renumbered to positions in rows."""
  position = np.full(num, -1)
  position[rows] = np.arange(len(rows))
  inside = position[np.asarray(pairs, np.int64).reshape(-1, 2)]
  return inside[(inside >= 0).all(axis=1)]


def first_neighbours(
  points: np.ndarray, forbidden: np.ndarray, max_distance: float | None, search: NeighbourSearch
) -> tuple[np.ndarray, np.ndarray]:
  """points (M, D), forbidden (F, 2) → (κ (M,) with -1 = none, cosine distance to κ (M,))."""
  num = len(points)
  degree = np.bincount(forbidden.reshape(-1), minlength=num) if len(forbidden) else np.zeros(num, np.int64)
  codes = pair_codes(forbidden, num)

  def choose(rows, similarity, candidates):
    """The first allowed candidate of each row: (index, similarity, found)."""
    low, high = np.minimum(rows[:, None], candidates), np.maximum(rows[:, None], candidates)
    allowed = (candidates >= 0) & ~np.isin(low * num + high, codes)
    first = np.argmax(allowed, axis=1)
    found = allowed[np.arange(len(rows)), first]
    return candidates[np.arange(len(rows)), first], similarity[np.arange(len(rows)), first], found

  rows = np.arange(num)
  similarity, candidates = top_neighbours(points, min(int(degree.max(initial=0)) + 1, _MAX_CANDIDATES), search)
  neighbour, best, found = choose(rows, similarity, candidates)
  retry = rows[~found & (degree < num - 1)]
  if len(retry):  # more forbidden partners than candidates: search those rows again, exactly, with enough k
    similarity, candidates = top_neighbours(points, int(degree[retry].max()) + 1, search, query_rows=retry)
    neighbour[retry], best[retry], found[retry] = choose(retry, similarity, candidates)
  distance = (1.0 - best).astype(np.float64)
  keep = found if max_distance is None else found & (distance <= max_distance)
  return np.where(keep, neighbour, -1), np.where(keep, distance, np.inf)


def _roots(parent: np.ndarray) -> np.ndarray:
  """Parent pointers (−1 = root) → each node's root, by pointer jumping."""
  root = np.where(parent >= 0, parent, np.arange(len(parent)))
  while True:
    jumped = root[root]
    if np.array_equal(jumped, root):
      return root
    root = jumped


def _chain(parent: np.ndarray, node: int) -> list[int]:
  chain = [node]
  while parent[chain[-1]] >= 0:
    chain.append(int(parent[chain[-1]]))
  return chain


def link_level(neighbour: np.ndarray, distance: np.ndarray, forbidden: np.ndarray) -> np.ndarray:
  """First-neighbour edges → the partition (M,), canonically numbered, with cannot-linked pairs split apart."""
  num = len(neighbour)
  parent = neighbour.copy()
  index = np.arange(num)
  mutual = (parent >= 0) & (parent[np.maximum(parent, 0)] == index) & (index < parent)
  parent[mutual] = -1  # of a mutual pair the lower index is the root, the other hangs from it
  root = _roots(parent)
  if len(forbidden):
    for a, b in forbidden[root[forbidden[:, 0]] == root[forbidden[:, 1]]]:
      chain_a, chain_b = _chain(parent, int(a)), _chain(parent, int(b))
      if chain_a[-1] != chain_b[-1]:
        continue  # already separated by an earlier cut
      on_b = set(chain_b)
      meet = next(node for node in chain_a if node in on_b)
      # The edge "node — parent(node)" weighs distance[node]; walk a → meet → b.
      path = chain_a[: chain_a.index(meet)] + chain_b[: chain_b.index(meet)][::-1]
      parent[path[int(np.argmax(distance[path]))]] = -1
    root = _roots(parent)
  return canonical_labels(root)


def cluster_means(features: np.ndarray, labels: np.ndarray, num_clusters: int) -> np.ndarray:
  """(N, D) rows and their (N,) labels in [0, C) → (C, D) mean of each cluster's rows."""
  order = np.argsort(labels, kind="stable")
  counts = np.bincount(labels, minlength=num_clusters)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  sums = np.add.reduceat(np.asarray(features, np.float64)[order], starts, axis=0)
  return (sums / counts[:, None]).astype(np.float32)


def group_rows(groups: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """(P, 2) pairs of group ids → (P, 2) pairs of one row of each group (ValueError for an id without rows)."""
  ids, first_row = np.unique(groups, return_index=True)
  pairs = np.asarray(pairs).reshape(-1, 2)
  position = np.minimum(np.searchsorted(ids, pairs), len(ids) - 1)
  unknown = ids[position] != pairs
  if unknown.any():
    raise ValueError(f"cannot_link names track id {pairs[unknown][0]} that no row of track_ids has")
  return first_row[position]


def partitions(
  features: np.ndarray,
  groups: np.ndarray | None = None,
  cannot_link: np.ndarray | None = None,
  *,
  max_distance: float | None = None,
  search: NeighbourSearch = NeighbourSearch(),
) -> list[np.ndarray]:
  """The hierarchy: (N, D) rows, groups (N,) must-linked row groups (None: every row alone), cannot_link (P, 2)
  pairs of group labels → [level 0 = the groups, level 1, …], each (N,) labels numbered by lowest row."""
  groups = np.arange(len(features)) if groups is None else np.asarray(groups)
  labels = canonical_labels(groups)
  forbidden = np.zeros((0, 2), np.int64)
  if cannot_link is not None and len(cannot_link):
    forbidden = lift_pairs(group_rows(groups, cannot_link), labels)
  levels = [labels]
  while (num := int(labels.max()) + 1) > 1:
    neighbour, distance = first_neighbours(cluster_means(features, labels, num), forbidden, max_distance, search)
    merged = link_level(neighbour, distance, forbidden)
    if merged.max() + 1 == num:
      break
    labels = merged[labels]
    forbidden = lift_pairs(forbidden, merged)
    levels.append(labels)
  return levels


def merge_to(
  features: np.ndarray,
  labels: np.ndarray,
  forbidden: np.ndarray,
  num_clusters: int,
  search: NeighbourSearch = NeighbourSearch(),
) -> np.ndarray:
  """FINCH's final step: merge the single closest allowed first-neighbour pair of clusters until num_clusters.

  labels (N,) canonical, forbidden (F, 2) pairs of those clusters. Stops early when no allowed pair is left."""
  while (num := int(labels.max()) + 1) > num_clusters:
    neighbour, distance = first_neighbours(cluster_means(features, labels, num), forbidden, None, search)
    if (neighbour < 0).all():
      break
    closest = int(np.argmin(distance))
    merged = np.arange(num)
    merged[max(closest, neighbour[closest])] = min(closest, neighbour[closest])
    merged = canonical_labels(merged)
    labels, forbidden = merged[labels], lift_pairs(forbidden, merged)
  return labels


def select(
  features: np.ndarray,
  levels: list[np.ndarray],
  forbidden_rows: np.ndarray,
  num_clusters: int | None,
  search: NeighbourSearch = NeighbourSearch(),
) -> np.ndarray:
  """One partition of the hierarchy (module docstring): the coarsest, or exactly num_clusters where the
  cannot-links allow. forbidden_rows (F, 2) are cannot-linked pairs of rows."""
  if num_clusters is None:
    return levels[-1]
  counts = [int(level.max()) + 1 for level in levels]
  start = max((i for i, count in enumerate(counts) if count >= num_clusters), default=0)
  labels = levels[start]
  return merge_to(features, labels, lift_pairs(forbidden_rows, labels), num_clusters, search)
