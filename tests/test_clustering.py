"""The first-neighbour search, C1C / FINCH against an independent dense numpy reference, the constraints, MuHPC."""

import clustering_reference as reference
import numpy as np
import pytest

from storyjax.clustering import NeighbourSearch, c1c, c1c_partitions, finch, hierarchy
from storyjax.clustering.muhpc import MuhpcThresholds, muhpc
from storyjax.clustering.neighbours import top_neighbours

pytestmark = pytest.mark.usefixtures("fast_compile")


def dense_top_k(points, k):
  unit = points / np.linalg.norm(points, axis=1, keepdims=True)
  similarity = unit @ unit.T
  np.fill_diagonal(similarity, -np.inf)
  order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
  return np.take_along_axis(similarity, order, axis=1), order


def blobs(rng, num, num_blobs, dim=16, noise=0.3):
  centres = rng.normal(size=(num_blobs, dim))
  identities = rng.integers(0, num_blobs, num)
  return (centres[identities] + noise * rng.normal(size=(num, dim))).astype(np.float32), identities


@pytest.mark.parametrize("num", [1, 2, 7, 300])
def test_exact_search_equals_dense_top_k(num):
  points = np.random.default_rng(num).normal(size=(num, 8)).astype(np.float32)
  values, indices = top_neighbours(points, 3, NeighbourSearch(method="exact", block_size=64))
  if num == 1:
    assert indices.tolist() == [[-1]] and values[0, 0] == -np.inf
    return
  want_values, want_indices = dense_top_k(points, min(3, num - 1))
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_allclose(values, want_values, atol=1e-5)


def test_exact_search_on_query_rows_and_over_eight_devices_matches_one():
  points = np.random.default_rng(0).normal(size=(1000, 8)).astype(np.float32)
  _, want = dense_top_k(points, 2)
  # 1000 points in blocks of 16 → 1024 padded query rows, split over the 8 test devices.
  _, sharded = top_neighbours(points, 2, NeighbourSearch(method="exact", block_size=16))
  np.testing.assert_array_equal(sharded, want)
  rows = np.array([999, 3, 500])
  _, some = top_neighbours(points, 2, NeighbourSearch(method="exact", block_size=16), query_rows=rows)
  np.testing.assert_array_equal(some, want[rows])


def test_approximate_search_finds_the_true_first_neighbour_of_clustered_points():
  points, identities = blobs(np.random.default_rng(1), 4000, 40)
  values, indices = top_neighbours(points, 2, NeighbourSearch(method="approximate", leaf_size=256, num_trees=4))
  want_values, want = dense_top_k(points, 1)
  assert indices.shape == (4000, 2) and (indices != np.arange(4000)[:, None]).all()
  assert np.mean(indices[:, 0] == want[:, 0]) > 0.9
  assert np.mean(identities[indices[:, 0]] == identities) > 0.99
  assert (values[:, 0] <= want_values[:, 0] + 1e-5).all()  # never better than the true first neighbour


def random_case(seed, num_tracks=60, per_track=3, num_pairs=40):
  rng = np.random.default_rng(seed)
  features, _ = blobs(rng, num_tracks * per_track, 6, dim=5, noise=0.8)
  track_ids = np.repeat(rng.permutation(num_tracks) * 7 + 100, per_track)
  pairs = rng.choice(np.unique(track_ids), size=(num_pairs, 2))
  return features, track_ids, pairs[pairs[:, 0] != pairs[:, 1]]


@pytest.mark.parametrize("seed", range(4))
def test_c1c_hierarchy_equals_the_dense_reference(seed):
  features, track_ids, cannot_link = random_case(seed)
  search = NeighbourSearch(method="exact", block_size=32)
  got = c1c_partitions(features, track_ids, cannot_link, search=search)
  want = reference.hierarchy(features, track_ids, cannot_link)
  assert len(got) == len(want) >= 3
  for level, (mine, theirs) in enumerate(zip(got, want, strict=True)):
    np.testing.assert_array_equal(mine, theirs, err_msg=f"level {level}")
  unconstrained = c1c_partitions(features, None, None, search=search)
  for mine, theirs in zip(unconstrained, reference.hierarchy(features), strict=True):
    np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("seed", range(3))
def test_requested_number_of_clusters_equals_the_reference_and_keeps_constraints(seed):
  features, track_ids, cannot_link = random_case(seed)
  search = NeighbourSearch(method="exact", block_size=32)
  levels = c1c_partitions(features, track_ids, cannot_link, search=search)
  counts = [int(level.max()) + 1 for level in levels]
  target = counts[1] - 3
  start = max(i for i, count in enumerate(counts) if count >= target)
  got = c1c(features, track_ids, cannot_link, target, search=search)
  want = reference.merge_to(features, track_ids, cannot_link, levels[start], target)
  np.testing.assert_array_equal(got, want)
  assert got.max() + 1 == target


def violations(labels, track_ids, cannot_link):
  first_row = {track: np.flatnonzero(track_ids == track)[0] for track in np.unique(track_ids)}
  return sum(labels[first_row[a]] == labels[first_row[b]] for a, b in cannot_link)


@pytest.mark.parametrize("seed", range(6))
def test_no_cannot_link_pair_ever_shares_a_cluster_and_tracks_stay_whole(seed):
  features, track_ids, cannot_link = random_case(seed + 10, num_pairs=150)
  search = NeighbourSearch(method="exact", block_size=32)
  for labels in [
    *c1c_partitions(features, track_ids, cannot_link, search=search),
    c1c(features, track_ids, cannot_link, 2, search=search),
  ]:
    assert violations(labels, track_ids, cannot_link) == 0
    for track in np.unique(track_ids):
      assert len(np.unique(labels[track_ids == track])) == 1


def test_a_chain_across_a_cannot_link_is_cut_at_its_weakest_edge():
  # Points on a line 0-1-2-3: first neighbours chain them; 0 and 3 are cannot-linked. The weakest edge on the
  # path (largest distance) is 2-3 here, so 3 leaves alone.
  angles = np.array([0.0, 0.1, 0.25, 0.6])
  points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
  labels = c1c(points, np.arange(4), np.array([[0, 3]]), search=NeighbourSearch(method="exact"))
  assert labels.tolist() == [0, 0, 0, 1]
  assert finch(points, search=NeighbourSearch(method="exact")).tolist() == [0, 0, 0, 0]


def test_finch_returns_the_requested_number_and_recovers_blobs():
  points, identities = blobs(np.random.default_rng(3), 1500, 12, dim=16, noise=0.2)
  labels = finch(points, 12)
  assert labels.max() + 1 == 12
  assert len(np.unique(np.stack([identities, labels], 1), axis=0)) == 12  # each blob exactly one cluster


def test_max_distance_stops_merging():
  points, _ = blobs(np.random.default_rng(4), 300, 3, dim=8, noise=0.05)
  assert finch(points, max_distance=1e-9).max() + 1 == 300
  assert finch(points, max_distance=0.2).max() + 1 == 3


@pytest.mark.parametrize(
  ("features", "track_ids", "cannot_link", "num_clusters", "message"),
  [
    (np.zeros((3,)), None, None, None, "(N, D)"),
    (np.full((3, 2), np.nan), None, None, None, "NaN"),
    (np.ones((3, 2)), np.arange(2), None, None, "track_ids"),
    (np.ones((3, 2)), np.arange(3), np.array([1, 2, 3]), None, "(P, 2)"),
    (np.ones((3, 2)), np.arange(3), np.array([[1, 1]]), None, "itself"),
    (np.ones((3, 2)), np.arange(3), np.array([[1, 9]]), None, "track id 9"),
    (np.ones((3, 2)), np.arange(3), None, 0, "num_clusters"),
  ],
)
def test_bad_inputs_name_the_problem(features, track_ids, cannot_link, num_clusters, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    c1c(features, track_ids, cannot_link, num_clusters)


def test_muhpc_voice_bridges_two_views_and_bodies_attach_faceless_tracks():
  rng = np.random.default_rng(5)
  unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
  frontal, profile, other = unit(rng.normal(size=(3, 16)))
  profile = unit(0.3 * frontal + profile)  # far from frontal (cosine ≈ 0.3)
  voice_a, voice_b = unit(rng.normal(size=(2, 8)))
  outfit_a, outfit_b = unit(rng.normal(size=(2, 8)))

  def noisy(vector, scale=0.05):
    return unit(vector + scale * rng.normal(size=vector.shape))

  # Tracks 0-3: person A (two frontal, two profile, all speaking); 4-5: person B (frontal, speaking);
  # 6: A without a face in shot 2 next to track 3; 7: B without face, far away in shot 9.
  face = np.stack(
    [
      noisy(frontal),
      noisy(frontal),
      noisy(profile),
      noisy(profile),
      noisy(other),
      noisy(other),
      np.zeros(16),
      np.zeros(16),
    ]
  )
  voice = np.stack([noisy(voice_a)] * 4 + [noisy(voice_b)] * 2 + [np.zeros(8)] * 2)
  body = np.stack([noisy(outfit_a)] * 4 + [noisy(outfit_b)] * 2 + [noisy(outfit_a), noisy(outfit_b)])
  shots = np.array([0, 1, 2, 2, 0, 1, 2, 9])
  has_face = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
  has_voice = np.array([1, 1, 1, 1, 1, 1, 0, 0], bool)
  cannot_link = np.array([[0, 4], [1, 5]])
  labels = muhpc(
    face,
    voice,
    body,
    has_face,
    has_voice,
    np.ones(8, bool),
    cannot_link,
    shots,
    thresholds=MuhpcThresholds(),
    search=NeighbourSearch(method="exact"),
  )
  assert labels.tolist() == [0, 0, 0, 0, 1, 1, 0, 2]
  # Without voices the profile tracks stay apart from the frontal ones.
  silent = muhpc(face, voice, body, has_face, np.zeros(8, bool), np.ones(8, bool), cannot_link, shots)
  assert silent[0] == silent[1] and silent[2] == silent[3] and silent[0] != silent[2]


def test_level_linking_helpers():
  assert hierarchy.canonical_labels(np.array([5, 5, 2, 9, 2])).tolist() == [0, 0, 1, 2, 1]
  assert hierarchy.lift_pairs(np.array([[0, 3], [1, 2], [2, 1]]), np.array([0, 1, 0, 1])).tolist() == [[0, 1]]
  assert hierarchy.subset_pairs(np.array([[0, 3], [1, 2]]), np.array([2, 1]), 4).tolist() == [[1, 0]]
