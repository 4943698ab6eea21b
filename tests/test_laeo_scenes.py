"""The embedded procedural LAEO data: labels against hand-made geometry, the projection, the renderer's views, the
source's determinism, labels and balance, and the episodes' planted friendship."""

import math

import numpy as np
import pytest
import scipy.stats

from storyjax.data.laeo import scenes
from storyjax.data.laeo.scenes import (
  CATEGORIES,
  GAZE_TOLERANCE,
  HEAD_RADIUS,
  IMAGE_SIZE,
  Appearance,
  LaeoSceneSource,
  Scene,
  head_axes,
  head_boxes,
  laeo_labels,
  pair_window,
  render_head,
  render_shot_tracks,
  render_track,
  sample_episode,
)
from storyjax.errors import ConfigError, DataError

SKIN, HAIR = np.array([0.9, 0.7, 0.6], np.float32), np.array([0.3, 0.3, 0.8], np.float32)


def still_scene(positions, yaw_degrees, pitch_degrees=None) -> Scene:
  """One frame of heads at `positions` (N, 3) with yaws (N,) in degrees, all with skin SKIN and short HAIR."""
  positions = np.asarray(positions, np.float64)[None]
  count = positions.shape[1]
  pitch = np.zeros(count) if pitch_degrees is None else np.radians(pitch_degrees)
  appearance = Appearance(np.tile(SKIN, (count, 1)), np.tile(HAIR, (count, 1)), np.zeros(count, np.int64))
  return Scene(
    positions, np.radians(yaw_degrees)[None], pitch[None], appearance, IMAGE_SIZE, scenes.camera_focal(IMAGE_SIZE)
  )


FACING = ([[-0.6, 0.0, 3.0], [0.6, 0.0, 3.0]], [90.0, -90.0])  # two heads 1.2 m apart, turned to each other


def test_facing_heads_are_laeo_and_a_turned_head_is_not():
  labels = laeo_labels(still_scene(*FACING))[0]
  np.testing.assert_array_equal(labels, [[False, True], [True, False]])
  for turned in ([0.0, -90.0], [90.0, 90.0], [-90.0, 90.0]):  # one faces the camera; both face right; back to back
    assert not laeo_labels(still_scene(FACING[0], turned)).any()


def test_gaze_tolerance_includes_the_other_heads_angular_radius():
  head_angle = math.degrees(GAZE_TOLERANCE + math.asin(HEAD_RADIUS / 1.2))
  for error, expected in ((head_angle - 1.0, True), (head_angle + 1.0, False)):
    assert laeo_labels(still_scene(FACING[0], [90.0 + error, -90.0]))[0, 0, 1] == expected
    assert laeo_labels(still_scene(FACING[0], [90.0, -90.0], [0.0, error]))[0, 0, 1] == expected  # pitch too


def test_a_third_head_blocks_only_between_the_two_and_near_their_line():
  positions, yaw = FACING
  cases = {
    (0.0, 0.0, 3.0): False,  # exactly between
    (0.1, 0.1, 3.05): False,  # within one head radius of the line
    (0.0, -0.5, 3.0): True,  # half a metre above
    (0.0, 0.0, 4.0): True,  # a metre behind
    (1.2, 0.0, 3.0): True,  # on the line, beyond the right head
  }
  for third, expected in cases.items():
    labels = laeo_labels(still_scene([*positions, third], [*yaw, 0.0]))[0]
    assert labels[0, 1] == labels[1, 0] == expected, third
    assert not labels[2].any()


def test_labels_are_symmetric_with_an_empty_diagonal():
  source = LaeoSceneSource(40, seed=5)
  for index in range(len(source)):
    labels = laeo_labels(source.example_scene(index)[0])
    np.testing.assert_array_equal(labels, labels.transpose(0, 2, 1))
    assert not labels[:, np.arange(labels.shape[1]), np.arange(labels.shape[1])].any()


def test_head_boxes_project_the_sphere():
  boxes = head_boxes(still_scene([[0.0, 0.0, 2.0], [0.0, 0.0, 4.0], [0.5, -0.2, 4.0]], [0.0, 0.0, 0.0]))[0]
  sides = boxes[:, 2] - boxes[:, 0] + 1
  np.testing.assert_allclose(sides[:2], [2 * 288 * HEAD_RADIUS / 2.0, 2 * 288 * HEAD_RADIUS / 4.0])  # focal 288
  np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1] + 1, sides)
  np.testing.assert_allclose((boxes[0, :2] + boxes[0, 2:]) / 2, [159.5, 89.5])  # the image centre's pixel
  np.testing.assert_allclose((boxes[2, :2] + boxes[2, 2:]) / 2, [159.5 + 288 * 0.5 / 4, 89.5 - 288 * 0.2 / 4])


def hue_matches(crop: np.ndarray, colour: np.ndarray) -> np.ndarray:
  """(64, 64) bool: pixels whose chromaticity (shading divided out) is `colour`'s."""
  return np.abs(crop / crop.sum(-1, keepdims=True) - colour / colour.sum()).sum(-1) < 0.05


HEAD = np.hypot(*np.mgrid[-31.5:32, -31.5:32]) < 25  # pixels well inside the head's outline
RIGHT_HALF = np.mgrid[:64, :64][1] >= 32


def test_crops_show_the_head_as_seen_along_the_viewing_ray():
  front = render_head(*head_axes(0.0, 0.0), SKIN, HAIR, 0)
  back = render_head(*head_axes(math.pi, 0.0), SKIN, HAIR, 0)
  assert front.shape == (64, 64, 3) and front.dtype == np.float32
  assert front.min() >= 0.0 and front.max() <= 1.0
  assert np.abs(front - back).mean() > 0.1
  assert hue_matches(back, HAIR)[HEAD].mean() > 0.9  # from behind: hair, and the nape at the bottom
  assert hue_matches(front, SKIN)[HEAD].mean() > 0.6 > hue_matches(back, SKIN)[HEAD].mean() * 5
  assert (front[HEAD].sum(-1) < 0.4).sum() > 20 > (back[HEAD].sum(-1) < 0.4).sum()  # dark eyes only from the front

  right = render_track(still_scene([[0.0, 0.0, 3.0]], [90.0]), 0, [0])[0]  # turned to the image's right
  left = render_track(still_scene([[0.0, 0.0, 3.0]], [-90.0]), 0, [0])[0]
  np.testing.assert_allclose(left, right[:, ::-1], atol=1e-5)  # mirror images
  assert np.abs(left - right).mean() > 0.05
  skin, hair = hue_matches(right, SKIN), hue_matches(right, HAIR)
  assert skin[HEAD & RIGHT_HALF].mean() > 0.7 > 0.3 > skin[HEAD & ~RIGHT_HALF].mean()  # the face side is the right
  assert hair[HEAD & ~RIGHT_HALF].mean() > 0.6 > 0.2 > hair[HEAD & RIGHT_HALF].mean()
  drawn = np.abs(right - 0.5).sum(-1) > 0.05  # not the grey background
  assert drawn[:, 63].sum() >= 4 and not drawn[:, 0].any()  # beyond the sphere, the nose sticks out on the right

  edge = np.array([-1.5, 0.0, 3.0])  # at the image's left edge, turned to face the camera
  facing_camera = math.degrees(math.atan2(-edge[0], edge[2]))
  np.testing.assert_allclose(render_track(still_scene([edge], [facing_camera]), 0, [0])[0], front, atol=1e-5)


def test_tracks_with_nuisance_are_valid_and_reproducible():
  scene = scenes.sample_scene(np.random.default_rng(0), "mutual", frames=6)
  crops = render_track(scene, 1, range(6), np.random.default_rng(3))
  assert crops.shape == (6, 64, 64, 3) and crops.dtype == np.float32
  assert crops.min() >= 0.0 and crops.max() <= 1.0
  np.testing.assert_array_equal(crops, render_track(scene, 1, range(6), np.random.default_rng(3)))
  assert np.abs(crops - render_track(scene, 1, range(6))).mean() > 0.02
  with pytest.raises(DataError, match="out of range"):
    render_track(scene, 1, [6])


def test_pair_window_puts_the_left_person_first():
  scene = still_scene([[0.8, 0.0, 3.0], [-0.8, 0.1, 3.0], [0.0, -0.4, 4.0]], [-90.0, 90.0, 0.0])
  tracks = {person: render_track(scene, person, [0]) for person in range(3)}
  window = pair_window(scene, tracks, 0, 1, 0, 1)
  assert (window["left"], window["right"]) == (1, 0)
  np.testing.assert_array_equal(window["head_left"], tracks[1])
  head_map = window["head_map"][0]
  assert head_map.shape == (64, 64, 3) and head_map.dtype == np.float32 and head_map.max() <= 1.0
  assert head_map[:, :32, 0].sum() > 0.95 * head_map[..., 0].sum() > 0
  assert head_map[:, 32:, 1].sum() > 0.95 * head_map[..., 1].sum() > 0
  assert head_map[..., 2].sum() > 0
  with pytest.raises(DataError, match="does not fit"):
    pair_window(scene, tracks, 0, 1, 0, 2)


@pytest.fixture(scope="module")
def source() -> LaeoSceneSource:
  return LaeoSceneSource(120, seed=11)


def test_source_examples_are_reproducible_and_typed(source):
  example = source[3]
  assert {key: (value.shape, value.dtype) for key, value in example.items()} == {
    "head_left": ((10, 64, 64, 3), np.float32),
    "head_right": ((10, 64, 64, 3), np.float32),
    "head_map": ((10, 64, 64, 3), np.float32),
    "label": ((), np.int32),
    "category": ((), np.int32),
  }
  for key in ("head_left", "head_right", "head_map"):
    assert example[key].min() >= 0.0 and example[key].max() <= 1.0
  again = LaeoSceneSource(120, seed=11)[3]
  for key, value in example.items():
    np.testing.assert_array_equal(value, again[key])
  assert not np.array_equal(example["head_left"], source[4]["head_left"])
  assert not np.array_equal(example["head_left"], LaeoSceneSource(120, seed=12)[3]["head_left"])
  with pytest.raises(IndexError, match="out of range"):
    source[120]
  with pytest.raises(ConfigError, match="unknown"):
    LaeoSceneSource(10, seed=0, categories=("random", "staring"))


def test_labels_are_the_middle_frames_geometry_and_balanced(source):
  labels, categories = [], []
  for index in range(len(source)):
    scene, (left, right), category = source.example_scene(index)
    labels.append(laeo_labels(scene)[source.window // 2, left, right])
    categories.append(category)
    boxes = head_boxes(scene)[source.window // 2]
    assert boxes[left, 0] <= boxes[right, 0] + 1
    if index < 6:
      example = source[index]
      assert example["label"] == labels[-1] and example["category"] == category
      left_half = example["head_map"][source.window // 2, :, :32, 0].sum()
      assert left_half > 0.5 * example["head_map"][source.window // 2, ..., 0].sum()
  assert set(categories) == set(range(len(CATEGORIES)))
  assert 0.3 <= np.mean(labels) <= 0.7
  by_category = {CATEGORIES[category]: [] for category in categories}
  for category, label in zip(categories, labels):
    by_category[CATEGORIES[category]].append(label)
  for name in ("mutual", "profiles_facing", "oblique_facing"):
    assert np.mean(by_category[name]) > 0.8, name
  for name in ("one_looks", "profiles_away", "same_direction", "frontal_profile", "frontal_frontal"):
    assert not any(by_category[name]), name


def test_occluded_examples_have_both_labels():
  source = LaeoSceneSource(60, seed=2, categories=("occluded",))
  labels = [
    laeo_labels(scene)[source.window // 2, left, right]
    for scene, (left, right), _ in map(source.example_scene, range(60))
  ]
  assert 0.3 <= np.mean(labels) <= 0.7


def test_episode_friendship_drives_mutual_gaze():
  episode = sample_episode(seed=0)
  friendship = episode.friendship
  np.testing.assert_array_equal(friendship, friendship.T)
  assert np.all(np.diag(friendship) == 0) and friendship.min() >= 0 and friendship.max() <= 1
  assert (friendship > 0.5).sum() >= 2 and (friendship == 0).sum() > 6
  assert len(episode.shots) == 12
  assert all(2 <= len(shot.characters) <= 4 and shot.scene.num_frames == 40 for shot in episode.shots)
  fraction = scenes.laeo_frame_fraction(episode)
  pairs = np.triu_indices(len(friendship), 1)
  together = ~np.isnan(fraction[pairs])
  assert together.sum() >= 8
  assert scipy.stats.spearmanr(friendship[pairs][together], fraction[pairs][together])[0] > 0.6
  again = sample_episode(seed=0)
  np.testing.assert_array_equal(again.shots[5].scene.yaw, episode.shots[5].scene.yaw)
  shot = episode.shots[0]
  tracks = render_shot_tracks(shot, (0, 0))
  assert sorted(tracks) == list(range(len(shot.characters)))
  assert all(track.shape == (40, 64, 64, 3) for track in tracks.values())
  assert pair_window(shot.scene, tracks, 0, 1, 10, 10)["head_map"].shape == (10, 64, 64, 3)


def test_scene_rejects_inconsistent_arrays():
  scene = still_scene(*FACING)
  with pytest.raises(DataError, match="disagree"):
    Scene(scene.positions, scene.yaw[:, :1], scene.pitch, scene.appearance, IMAGE_SIZE, 288.0)
  with pytest.raises(DataError, match="in front of the camera"):
    still_scene([[0.0, 0.0, -1.0]], [0.0])
