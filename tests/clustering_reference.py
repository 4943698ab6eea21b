"""A plain dense numpy reference of first-neighbour clustering (FINCH) with cannot-link constraints, for parity tests.

O(M²) distance matrices and python loops over edges: written to be obviously correct, not fast. No JAX.

Definitions:
- cosine distance d(i, j) = 1 − x_i·x_j / (|x_i| |x_j|), float64, exactly symmetric;
- first neighbour κ_i = argmin over allowed j ≠ i (ties → smallest j), −1 when none is allowed or d > max_distance;
- the first-neighbour graph has the edges i–κ_i (a mutual pair is one edge); each forbidden pair (a, b), taken in
  sorted order, is separated by removing the largest-distance edge on the path a → b (ties → the first met);
- labels are canonical: the cluster holding the lowest index is 0, the next unseen lowest index 1, and so on.
"""

import itertools

import numpy as np


def canonical(labels) -> np.ndarray:
  """Renumber (N,) labels by first appearance: the cluster of item 0 is 0, the next new cluster 1, …"""
  numbering = {}
  return np.array([numbering.setdefault(label, len(numbering)) for label in np.asarray(labels).tolist()], np.int64)


def cosine_distances(points) -> np.ndarray:
  """(M, M) cosine distances of (M, D) points, float64, symmetric bit for bit."""
  points = np.asarray(points, np.float64)
  unit = points / np.linalg.norm(points, axis=1, keepdims=True)
  similarity = unit @ unit.T
  return 1.0 - (similarity + similarity.T) / 2


def _pair_set(pairs) -> set[tuple[int, int]]:
  """Unordered pairs as a set of (low, high) tuples, self-pairs dropped."""
  return {(min(a, b), max(a, b)) for a, b in pairs if a != b}


def first_neighbours(points, forbidden=(), max_distance=None) -> tuple[np.ndarray, np.ndarray]:
  """First neighbour (M,) int (−1 = none) and its distance (M,) float64 (inf when none) of (M, D) points.

  `forbidden`: unordered index pairs that may not be neighbours.
  """
  distances = cosine_distances(points)
  np.fill_diagonal(distances, np.inf)
  for a, b in _pair_set(forbidden):
    distances[a, b] = distances[b, a] = np.inf
  neighbour = np.argmin(distances, axis=1)  # the first minimum: ties → smallest j
  neighbour_distance = distances[np.arange(len(distances)), neighbour]
  none_allowed = np.isinf(neighbour_distance)
  if max_distance is not None:
    none_allowed |= neighbour_distance > max_distance
  neighbour[none_allowed], neighbour_distance[none_allowed] = -1, np.inf
  return neighbour, neighbour_distance


def _components(num_points: int, edges) -> np.ndarray:
  """Canonical (M,) component labels of an undirected graph given as {(low, high): weight}."""
  adjacency = {i: [] for i in range(num_points)}
  for a, b in edges:
    adjacency[a].append(b)
    adjacency[b].append(a)
  labels = np.full(num_points, -1, np.int64)
  next_label = 0
  for start in range(num_points):
    if labels[start] >= 0:
      continue
    labels[start] = next_label
    stack = [start]
    while stack:
      node = stack.pop()
      for other in adjacency[node]:
        if labels[other] < 0:
          labels[other] = next_label
          stack.append(other)
    next_label += 1
  return labels


def _path(edges, start: int, end: int) -> list[int]:
  """The nodes on the path start → end in a forest given as {(low, high): weight} (both ends included)."""
  adjacency = {}
  for a, b in edges:
    adjacency.setdefault(a, []).append(b)
    adjacency.setdefault(b, []).append(a)
  parent = {start: None}
  queue = [start]
  while queue:
    node = queue.pop(0)
    for other in adjacency.get(node, []):
      if other not in parent:
        parent[other] = node
        queue.append(other)
  path = [end]
  while path[-1] != start:
    path.append(parent[path[-1]])
  return path[::-1]


def link(neighbour, distance, forbidden=()) -> np.ndarray:
  """Canonical (M,) cluster labels: components of the graph i–neighbour[i], each forbidden pair cut apart."""
  edges = {}
  for i, j in enumerate(np.asarray(neighbour).tolist()):
    if j >= 0:
      edges.setdefault((min(i, j), max(i, j)), float(distance[i]))
  for a, b in sorted(_pair_set(forbidden)):
    while (components := _components(len(neighbour), edges))[a] == components[b]:
      path = _path(edges, a, b)
      path_edges = [(min(u, v), max(u, v)) for u, v in itertools.pairwise(path)]
      weakest = path_edges[0]
      for edge in path_edges[1:]:
        if edges[edge] > edges[weakest]:
          weakest = edge
      del edges[weakest]
  return _components(len(neighbour), edges)


def _groups_and_constraints(features, groups, cannot_link) -> tuple[np.ndarray, set[tuple[int, int]]]:
  """Canonical (N,) level-0 labels and the cannot-link pairs as pairs of level-0 clusters."""
  num_rows = len(features)
  groups = np.arange(num_rows) if groups is None else np.asarray(groups)
  if groups.shape != (num_rows,):
    raise ValueError(f"groups must be ({num_rows},), got {groups.shape}")
  level0 = canonical(groups)
  cluster_of_group = dict(zip(groups.tolist(), level0.tolist()))
  pairs = np.zeros((0, 2), np.int64) if cannot_link is None else np.asarray(cannot_link).reshape(-1, 2)
  for a, b in pairs.tolist():
    if a not in cluster_of_group or b not in cluster_of_group:
      raise ValueError(f"cannot_link pair ({a}, {b}) names a group that is not in groups")
  return level0, _pair_set((cluster_of_group[a], cluster_of_group[b]) for a, b in pairs.tolist())


def _means_and_forbidden(features, labels, level0, group_pairs):
  """(K, D) mean of the original rows of each cluster, and the cannot-link pairs lifted to clusters."""
  features = np.asarray(features, np.float64)
  means = np.stack([features[labels == cluster].mean(axis=0) for cluster in range(int(labels.max()) + 1)])
  cluster_of_group = {}
  for group, cluster in zip(level0.tolist(), labels.tolist()):
    cluster_of_group[group] = cluster
  return means, _pair_set((cluster_of_group[a], cluster_of_group[b]) for a, b in group_pairs)


def hierarchy(features, groups=None, cannot_link=None, max_distance=None) -> list[np.ndarray]:
  """FINCH's partitions of (N, D) features: [level 0 (the groups), level 1, …], each (N,) canonical labels.

  groups: (N,) group id per row (None: every row its own group); cannot_link: (P, 2) pairs of group ids that may
  never share a cluster. Stops when a level has one cluster or would not reduce the number of clusters.
  """
  level0, group_pairs = _groups_and_constraints(features, groups, cannot_link)
  partitions = [level0]
  while partitions[-1].max() > 0:
    labels = partitions[-1]
    means, forbidden = _means_and_forbidden(features, labels, level0, group_pairs)
    neighbour, distance = first_neighbours(means, forbidden, max_distance)
    merged = canonical(link(neighbour, distance, forbidden)[labels])
    if merged.max() >= labels.max():
      break
    partitions.append(merged)
  return partitions


def merge_to(features, groups, cannot_link, labels, num_clusters: int) -> np.ndarray:
  """Merge the closest allowed first-neighbour pair of clusters, one pair at a time, down to num_clusters.

  labels: (N,) a partition of the rows that keeps each group whole. Each step merges (i, κ_i) with the smallest
  distance (ties → smallest i), recomputing means and lifted constraints; stops early when no pair is allowed.
  Returns canonical (N,) labels.
  """
  level0, group_pairs = _groups_and_constraints(features, groups, cannot_link)
  labels = canonical(labels)
  for group in range(int(level0.max()) + 1):
    if len(np.unique(labels[level0 == group])) != 1:
      raise ValueError(f"labels split group {group} (canonical numbering); a partition must keep each group whole")
  while labels.max() + 1 > num_clusters:
    means, forbidden = _means_and_forbidden(features, labels, level0, group_pairs)
    neighbour, distance = first_neighbours(means, forbidden)
    if np.all(neighbour < 0):
      break
    closest = int(np.argmin(distance))
    labels = canonical(np.where(labels == neighbour[closest], closest, labels))
  return labels
