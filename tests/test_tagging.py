"""E.T. tagger against plain-Python references written from the E.T. description, plus hand-made cases."""

import itertools

import numpy as np
import pytest

from storyjax.data.et import tagging

_PATTERNS = list(itertools.product((0, 1, -1), repeat=3))  # E.T.'s class order


def _reference_step_class(velocity, static_threshold, diff_threshold):
  """One step, literally as E.T. describes it: threshold, the 2-axis cases, the sequential 3-axis case."""
  vx, vy, vz = (float(value) for value in velocity)
  ax, ay, az = abs(vx), abs(vy), abs(vz)
  px, py, pz = ax > static_threshold, ay > static_threshold, az > static_threshold

  def ratio(a, b):
    if a == 0 and b == 0:
      return 0.0
    return (a - b) / max(a, b)

  xy, xz, yz = ratio(ax, ay), ratio(ax, az), ratio(ay, az)
  if (px, py, pz) == (True, True, False):
    if xy > diff_threshold:
      py = False
    elif xy < -diff_threshold:
      px = False
  elif (px, py, pz) == (True, False, True):
    if xz > diff_threshold:
      pz = False
    elif xz < -diff_threshold:
      px = False
  elif (px, py, pz) == (False, True, True):
    if yz > diff_threshold:
      pz = False
    elif yz < -diff_threshold:
      py = False
  elif (px, py, pz) == (True, True, True):
    if xy > diff_threshold:
      py = False
    elif xy < -diff_threshold:
      px = False
    if xz > diff_threshold:
      pz = False
    elif xz < -diff_threshold:
      px = False
    if yz > diff_threshold:
      pz = False
    elif yz < -diff_threshold:
      py = False
  signs = []
  for moving, value in ((px, vx), (py, vy), (pz, vz)):
    if not moving or value == 0:
      signs.append(0)
    elif value > 0:
      signs.append(1)
    else:
      signs.append(-1)
  return _PATTERNS.index(tuple(signs))


def _reference_smooth(labels, window):
  labels = list(labels)
  if len(labels) < window:
    return labels
  half = window // 2
  smoothed = []
  for i in range(len(labels)):
    segment = labels[max(0, i - half) : i + half + 1]
    best = None
    for label in sorted(set(segment)):
      if best is None or segment.count(label) > segment.count(best):
        best = label
    smoothed.append(best)
  return smoothed


def _reference_merge(labels, min_size):
  chunks = []  # [label, start, end]
  for i, label in enumerate(labels):
    if chunks and chunks[-1][0] == label:
      chunks[-1][2] = i + 1
    else:
      chunks.append([label, i, i + 1])
  while len(chunks) > 1:
    lengths = [end - start for _, start, end in chunks]
    shortest = min(lengths)
    if shortest >= min_size:
      break
    index = lengths.index(shortest)
    if index == 0:
      chunks[1][1] = chunks[0][1]
    elif index == len(chunks) - 1:
      chunks[-2][2] = chunks[-1][2]
    else:
      chunks[index - 1][2] += shortest - shortest // 2
      chunks[index + 1][1] -= shortest // 2
    del chunks[index]
  merged = []
  for label, start, end in chunks:
    merged += [label] * (end - start)
  return merged


def _poses(rotations, centres):
  return np.concatenate([np.asarray(rotations), np.asarray(centres)[:, :, None]], axis=2)


def _rotation_y(angle):
  cos, sin = np.cos(angle), np.sin(angle)
  return np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])


def test_class_names():
  assert tagging.PAD_CLASS == 27
  assert len(tagging.CAMERA_CLASS_NAMES) == len(set(tagging.CAMERA_CLASS_NAMES)) == 27
  assert len(tagging.CHARACTER_CLASS_NAMES) == len(set(tagging.CHARACTER_CLASS_NAMES)) == 27
  expected_camera = {
    0: "static",
    1: "push_in",
    2: "pull_out",
    3: "boom_bottom",
    4: "boom_bottom-push_in",
    6: "boom_top",
    9: "trucking_right",
    10: "trucking_right-push_in",
    14: "trucking_right-boom_bottom-pull_out",
    18: "trucking_left",
    26: "trucking_left-boom_top-pull_out",
  }
  for index, name in expected_camera.items():
    assert tagging.CAMERA_CLASS_NAMES[index] == name
  expected_character = {
    0: "static",
    1: "move_forward",
    2: "move_backward",
    3: "move_down",
    6: "move_up",
    9: "move_right",
    10: "move_right-move_forward",
    15: "move_right-move_up",
    18: "move_left",
  }
  for index, name in expected_character.items():
    assert tagging.CHARACTER_CLASS_NAMES[index] == name


@pytest.mark.parametrize("index, signs", list(enumerate(_PATTERNS)))
def test_each_of_the_27_patterns(index, signs):
  assert tagging.class_from_signs(signs) == index
  velocity = 0.7 * np.array([signs], np.float64)
  assert _reference_step_class(velocity[0], 0.02, 0.4) == index
  np.testing.assert_array_equal(tagging.step_classes(velocity, 0.02, 0.4), [index])


def test_class_from_signs_rejects_bad_input():
  with pytest.raises(ValueError, match=r"\(3,\)"):
    tagging.class_from_signs([2, 0, 0])
  with pytest.raises(ValueError, match=r"\(3,\)"):
    tagging.class_from_signs([1, 0])


@pytest.mark.parametrize(
  "velocity, expected",
  [
    # static threshold: |v| must be strictly above 0.02
    ((0.02, 0.0, 0.0), 0),
    ((0.0200001, 0.0, 0.0), 9),
    ((-0.02, 0.0, 0.03), 1),
    ((0.0, -0.03, -0.02), 6),
    # x/y dominance on both sides of ±0.4, and exactly at it (no drop)
    ((1.0, 0.59, 0.0), 9),
    ((1.0, 0.61, 0.0), 12),
    ((0.59, 1.0, 0.0), 3),
    ((0.61, 1.0, 0.0), 12),
    ((1.0, 0.6, 0.0), 12),
    ((0.6, -1.0, 0.0), 15),
    # x/z
    ((1.0, 0.0, -0.59), 9),
    ((1.0, 0.0, -0.61), 11),
    ((-0.59, 0.0, 1.0), 1),
    ((-0.61, 0.0, 1.0), 19),
    # y/z
    ((0.0, -1.0, 0.59), 6),
    ((0.0, -1.0, 0.61), 7),
    ((0.0, 0.59, 1.0), 1),
    ((0.0, 0.61, 1.0), 4),
    # 3 axes, rules applied in turn: xy drops y; xz and yz within ±0.4 keep x and z
    ((1.0, 0.5, 0.8), 10),
    ((-1.0, 0.5, -0.8), 20),
    # xy drops y, then xz drops z
    ((1.0, 0.5, 0.55), 9),
    # xy drops x, xz = −0.4 drops nothing, yz drops z
    ((0.3, 1.0, 0.5), 3),
    # xy within, xz and yz both drop z
    ((1.0, -1.0, 0.1), 15),
    # all within: all three kept
    ((1.0, 1.0, -0.7), 14),
  ],
)
def test_hand_made_steps(velocity, expected):
  assert _reference_step_class(velocity, 0.02, 0.4) == expected
  np.testing.assert_array_equal(tagging.step_classes(np.array([velocity]), 0.02, 0.4), [expected])


@pytest.mark.parametrize("static_threshold, diff_threshold", [(0.02, 0.4), (0.22, 0.32)])
def test_step_classes_match_reference_on_random_velocities(static_threshold, diff_threshold):
  rng = np.random.default_rng(0)
  scale = rng.choice([0.0, 2.5 * static_threshold, 3.0], size=(4000, 3))
  velocity = rng.uniform(-1.0, 1.0, size=(4000, 3)) * scale
  classes = tagging.step_classes(velocity, static_threshold, diff_threshold)
  assert classes.dtype == np.int64 and classes.shape == (4000,)
  expected = [_reference_step_class(step, static_threshold, diff_threshold) for step in velocity]
  np.testing.assert_array_equal(classes, expected)
  assert len(set(expected)) == 27


def test_step_classes_shape_error():
  with pytest.raises(ValueError, match=r"\(M, 3\)"):
    tagging.step_classes(np.zeros((4, 2)), 0.02, 0.4)


def test_smoothing_by_hand_with_ties():
  # half = 2: windows [5,1,1] [5,1,1,5] [5,1,1,5,5] [1,1,5,5,2] [1,5,5,2] [5,5,2]; ties go to the smaller label.
  labels = [5, 1, 1, 5, 5, 2]
  np.testing.assert_array_equal(tagging.smooth_classes(labels, window=4), [1, 1, 5, 1, 5, 5])
  np.testing.assert_array_equal(tagging.smooth_classes(labels, window=5), [1, 1, 5, 1, 5, 5])
  np.testing.assert_array_equal(tagging.smooth_classes(labels, window=7), labels)
  assert tagging.smooth_classes(np.array(labels, np.int32), window=4).dtype == np.int64


def test_smoothing_default_window_matches_reference():
  rng = np.random.default_rng(1)
  for length in (0, 1, 55, 56, 57, 120, 299):
    blocks = rng.integers(0, 27, size=length // 3 + 1).repeat(rng.integers(1, 30, size=length // 3 + 1))
    labels = blocks[:length]
    assert len(labels) == length
    np.testing.assert_array_equal(tagging.smooth_classes(labels), _reference_smooth(labels.tolist(), 56))
  short = rng.integers(0, 3, size=55)
  np.testing.assert_array_equal(tagging.smooth_classes(short), short)


@pytest.mark.parametrize(
  "labels, min_size, expected",
  [
    # first run: the next run grows backwards
    ([0, 1, 1, 1, 2, 2, 2], 3, [1, 1, 1, 1, 2, 2, 2]),
    # last run: the previous run grows forwards
    ([1, 1, 1, 2, 2, 2, 0], 3, [1, 1, 1, 2, 2, 2, 2]),
    # middle run of odd length 3: left takes 2, right takes 1
    ([1, 1, 1, 1, 0, 0, 0, 2, 2, 2, 2], 4, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]),
    # middle run of length 1: left takes it
    ([1, 1, 1, 0, 2, 2, 2], 2, [1, 1, 1, 1, 2, 2, 2]),
    # equal-label neighbours stay separate runs: the second 1-run (length 2) is split again
    ([1, 1, 0, 1, 1, 2, 2, 2, 2, 2], 3, [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]),
    # of two shortest runs the first is merged first, which makes the second long enough
    ([3, 3, 3, 3, 0, 0, 1, 1, 5, 5, 5, 5], 3, [3, 3, 3, 3, 3, 1, 1, 1, 5, 5, 5, 5]),
    # down to one run
    ([0, 1], 25, [1, 1]),
    ([4, 4, 4], 25, [4, 4, 4]),
    ([], 25, []),
  ],
)
def test_merge_short_runs_by_hand(labels, min_size, expected):
  assert _reference_merge(labels, min_size) == expected
  merged = tagging.merge_short_runs(np.array(labels, np.int64), min_size)
  assert merged.dtype == np.int64
  np.testing.assert_array_equal(merged, expected)


def test_merge_short_runs_matches_reference_on_random_labels():
  rng = np.random.default_rng(2)
  for _ in range(300):
    num_runs = int(rng.integers(1, 40))
    labels = rng.integers(0, 4, size=num_runs).repeat(rng.integers(1, 35, size=num_runs))
    min_size = int(rng.choice([2, 5, 25]))
    np.testing.assert_array_equal(
      tagging.merge_short_runs(labels, min_size), _reference_merge(labels.tolist(), min_size)
    )


def test_runs():
  assert tagging.runs([3, 3, 0, 0, 0, 3]) == [(3, 0, 2), (0, 2, 5), (3, 5, 6)]
  assert tagging.run_sequence(np.array([3, 3, 0, 0, 0, 3], np.int32)) == (3, 0, 3)
  assert tagging.runs([]) == [] and tagging.run_sequence([]) == ()
  assert tagging.runs([7]) == [(7, 0, 1)]


def test_camera_velocity_is_in_the_frame_of_step_start():
  rng = np.random.default_rng(3)
  angles = np.cumsum(rng.normal(scale=0.1, size=20))
  poses = _poses([_rotation_y(angle) for angle in angles], rng.normal(size=(20, 3)))
  homogeneous = np.tile(np.eye(4), (20, 1, 1))
  homogeneous[:, :3] = poses
  expected = [25.0 * (np.linalg.inv(homogeneous[t]) @ homogeneous[t + 1])[:3, 3] for t in range(19)]
  np.testing.assert_allclose(tagging.camera_velocity(poses), expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(tagging.camera_velocity(homogeneous, fps=10.0), np.array(expected) * 0.4, atol=1e-12)


def test_pure_pan_is_static():
  angles = np.linspace(0.0, np.pi / 3, 120)
  poses = _poses([_rotation_y(angle) for angle in angles], np.tile([0.3, -0.2, -1.5], (120, 1)))
  tags = tagging.tag_camera(poses)
  assert tags.shape == (119,) and tags.dtype == np.int64
  np.testing.assert_array_equal(tags, 0)


def test_push_in_is_measured_in_the_camera_frame():
  # Rotated 90° about y, the camera's +z is world +x: moving along it is push_in, not trucking_right.
  rotation = _rotation_y(np.pi / 2)
  centres = np.arange(100)[:, None] * (0.6 / 25.0) * rotation[:, 2]
  tags = tagging.tag_camera(_poses(np.tile(rotation, (100, 1, 1)), centres))
  np.testing.assert_array_equal(tags, 1)
  assert tagging.CAMERA_CLASS_NAMES[tags[0]] == "push_in"
  # Still push_in while it also turns, as long as it moves along its current +z.
  angles = np.linspace(0.0, np.pi, 100)
  rotations = np.stack([_rotation_y(angle) for angle in angles])
  centres = np.concatenate([np.zeros((1, 3)), np.cumsum(rotations[:-1, :, 2] * 0.6 / 25.0, axis=0)])
  np.testing.assert_array_equal(tagging.tag_camera(_poses(rotations, centres)), 1)


def test_tag_camera_removes_a_blip_between_two_segments():
  # 100 steps trucking right, a 10-step boom_bottom blip, 100 steps boom_top (camera frame = world here).
  velocity = np.concatenate(
    [np.tile([0.5, 0.0, 0.0], (100, 1)), np.tile([0.0, 0.5, 0.0], (10, 1)), np.tile([0.0, -0.5, 0.0], (100, 1))]
  )
  centres = np.concatenate([np.zeros((1, 3)), np.cumsum(velocity / 25.0, axis=0)])
  tags = tagging.tag_camera(_poses(np.tile(np.eye(3), (211, 1, 1)), centres))
  assert tags.shape == (210,)
  assert tagging.run_sequence(tags) == (9, 6)
  assert [tagging.CAMERA_CLASS_NAMES[c] for c in tagging.run_sequence(tags)] == ["trucking_right", "boom_top"]


def test_tag_character_uses_world_axes_and_its_thresholds():
  velocity = np.concatenate(
    [np.tile([0.0, 0.0, 1.0], (80, 1)), np.tile([-0.8, 0.0, 0.0], (80, 1)), np.tile([0.0, 0.0, 0.2], (80, 1))]
  )  # the last part is below the 0.22 threshold
  char_pos = np.concatenate([np.zeros((1, 3)), np.cumsum(velocity / 25.0, axis=0)])
  tags = tagging.tag_character(char_pos)
  assert tags.shape == (240,)
  assert tagging.runs(tags) == [(1, 0, 80), (18, 80, 160), (0, 160, 240)]
  assert tagging.CHARACTER_CLASS_NAMES[18] == "move_left"
  with pytest.raises(ValueError, match=r"\(N, 3\)"):
    tagging.tag_character(np.zeros((10, 2)))


def test_single_frame_gives_no_steps():
  assert tagging.tag_camera(np.eye(4)[None]).shape == (0,)
  assert tagging.tag_character(np.zeros((1, 3))).shape == (0,)
