"""E.T.'s camera and character motion tagger: one of 27 translation classes per velocity step.

A step's class is its per-axis sign pattern s ∈ {0, +1, −1}³ (after a static threshold and a dominance rule),
numbered 9·d(sx) + 3·d(sy) + d(sz) with d(0) = 0, d(+1) = 1, d(−1) = 2. Camera velocities are in the camera
frame (OpenCV: x right, y down, z forward) and ignore rotation, so pans and tilts are 'static'; character
velocities are in world axes. The per-step labels are then mode-filtered and short runs are merged away.
"""

import heapq
import itertools

import numpy as np

from storyjax.data.et.camera import FPS, _as_poses

PAD_CLASS = 27


def _class_names(axis_names) -> tuple[str, ...]:
  """axis_names: per axis (x, y, z), the (+, −) names → the 27 names in class order."""
  names = []
  for signs in itertools.product((0, 1, -1), repeat=3):
    parts = [axis_names[axis][0 if sign > 0 else 1] for axis, sign in enumerate(signs) if sign]
    names.append("-".join(parts) or "static")
  return tuple(names)


CAMERA_CLASS_NAMES = _class_names(
  (("trucking_right", "trucking_left"), ("boom_bottom", "boom_top"), ("push_in", "pull_out"))
)
CHARACTER_CLASS_NAMES = _class_names(
  (("move_right", "move_left"), ("move_down", "move_up"), ("move_forward", "move_backward"))
)

_SIGN_DIGIT_WEIGHTS = np.array([9, 3, 1])


def class_from_signs(signs) -> int:
  """(3,) signs in {−1, 0, 1} (x, y, z) → class id in [0, 27)."""
  signs = np.asarray(signs)
  if signs.shape != (3,) or not np.all(np.isin(signs, (-1, 0, 1))):
    raise ValueError(f"signs must have shape (3,) with values in {{-1, 0, 1}}, got {signs!r}.")
  # sign % 3 is the digit d: 0 → 0, 1 → 1, −1 → 2.
  return int((signs.astype(np.int64) % 3) @ _SIGN_DIGIT_WEIGHTS)


def camera_velocity(poses, fps: float = FPS) -> np.ndarray:
  """(N, 3, 4) or (N, 4, 4) camera-to-world → (N−1, 3): fps · translation of inv(P_t) @ P_{t+1}, camera frame of t."""
  poses = _as_poses(poses)
  rotation, centre = poses[:, :, :3], poses[:, :, 3]
  step = np.diff(centre, axis=0)[..., None]
  return fps * np.linalg.solve(rotation[:-1], step)[..., 0]


def character_velocity(char_pos, fps: float = FPS) -> np.ndarray:
  """(N, 3) world positions → (N−1, 3) world-frame velocity per second."""
  char_pos = np.asarray(char_pos, np.float64)
  if char_pos.ndim != 2 or char_pos.shape[1] != 3:
    raise ValueError(f"char_pos must have shape (N, 3), got {char_pos.shape}.")
  return fps * np.diff(char_pos, axis=0)


def step_classes(velocity, static_threshold: float, diff_threshold: float) -> np.ndarray:
  """(M, 3) velocities → (M,) int64 classes, one per step.

  An axis moves when |v| > static_threshold. For each pair (a, b) of moving axes, the dominance ratio
  (|v_a| − |v_b|) / max(|v_a|, |v_b|) beyond ±diff_threshold drops the weaker axis.
  """
  velocity = np.asarray(velocity, np.float64)
  if velocity.ndim != 2 or velocity.shape[1] != 3:
    raise ValueError(f"velocity must have shape (M, 3), got {velocity.shape}.")
  speed = np.abs(velocity)
  moving = speed > static_threshold
  keep = moving.copy()
  # E.T. tests xy, xz, yz in turn within the 3-axis case, always on the original speeds and only ever
  # dropping axes, so applying every pair rule to the original `moving` gives the same result.
  for axis_a, axis_b in ((0, 1), (0, 2), (1, 2)):
    both = moving[:, axis_a] & moving[:, axis_b]
    larger = np.maximum(speed[:, axis_a], speed[:, axis_b])
    ratio = np.divide(speed[:, axis_a] - speed[:, axis_b], larger, out=np.zeros_like(larger), where=larger > 0)
    keep[:, axis_b] &= ~(both & (ratio > diff_threshold))
    keep[:, axis_a] &= ~(both & (ratio < -diff_threshold))
  signs = np.sign(velocity).astype(np.int64) * keep
  return (signs % 3) @ _SIGN_DIGIT_WEIGHTS


def _as_labels(classes) -> np.ndarray:
  classes = np.asarray(classes)
  if classes.ndim != 1 or not (classes.size == 0 or np.issubdtype(classes.dtype, np.integer)):
    raise ValueError(f"classes must be a 1-D integer array (M,), got shape {classes.shape} dtype {classes.dtype}.")
  return classes.astype(np.int64)


def smooth_classes(classes, window: int = 56) -> np.ndarray:
  """(M,) labels → (M,) int64 sliding mode of the original labels over [i − window//2, i + window//2].

  Windows are truncated at the edges; ties go to the smallest label; sequences shorter than `window` are
  returned unchanged.
  """
  labels = _as_labels(classes)
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}.")
  if len(labels) < window:
    return labels
  half = window // 2
  values, codes = np.unique(labels, return_inverse=True)  # sorted, so argmax's first maximum is the smallest label
  counts = np.zeros((len(labels) + 1, len(values)), np.int64)
  counts[1:] = np.cumsum(np.eye(len(values), dtype=np.int64)[codes], axis=0)
  index = np.arange(len(labels))
  start, end = np.maximum(index - half, 0), np.minimum(index + half + 1, len(labels))
  return values[np.argmax(counts[end] - counts[start], axis=1)]


def merge_short_runs(classes, min_size: int = 25) -> np.ndarray:
  """(M,) labels → (M,) int64 with every run shorter than `min_size` merged into its neighbours (E.T. order).

  Repeatedly takes the first shortest run: the first run is absorbed by the next, the last by the previous,
  a middle run of length L gives ⌈L/2⌉ to its left and ⌊L/2⌋ to its right neighbour. Neighbours with equal
  labels stay separate runs. Stops when the shortest run has ≥ min_size steps or one run is left.
  """
  labels = _as_labels(classes)
  found = runs(labels)
  label = [run_class for run_class, _, _ in found]
  start = [run_start for _, run_start, _ in found]
  end = [run_end for _, _, run_end in found]
  previous = [run - 1 for run in range(len(found))]
  following = [run + 1 if run + 1 < len(found) else -1 for run in range(len(found))]
  alive = [True] * len(found)
  # Heap of (length, start, run): the smallest key is the first shortest run; entries whose run has since
  # died or changed are skipped, which keeps the whole merge O(R log R) for R runs.
  heap = [(end[run] - start[run], start[run], run) for run in range(len(found))]
  heapq.heapify(heap)
  num_alive = len(found)
  while num_alive > 1:
    length, run_start, run = heapq.heappop(heap)
    if not alive[run] or (end[run] - start[run], start[run]) != (length, run_start):
      continue
    if length >= min_size:
      break
    left, right = previous[run], following[run]
    if left < 0:
      start[right] = start[run]
    elif right < 0:
      end[left] = end[run]
    else:
      end[left] += (length + 1) // 2
      start[right] -= length // 2
    for neighbour in (left, right):
      if neighbour >= 0:
        heapq.heappush(heap, (end[neighbour] - start[neighbour], start[neighbour], neighbour))
    if left >= 0:
      following[left] = right
    if right >= 0:
      previous[right] = left
    alive[run] = False
    num_alive -= 1
  merged = np.empty_like(labels)
  for run in range(len(found)):
    if alive[run]:
      merged[start[run] : end[run]] = label[run]
  return merged


def tag_camera(
  poses,
  fps: float = FPS,
  static_threshold: float = 0.02,
  diff_threshold: float = 0.4,
  window: int = 56,
  min_size: int = 25,
) -> np.ndarray:
  """(N, 3, 4) or (N, 4, 4) camera-to-world → (N−1,) int64 E.T. camera classes (see CAMERA_CLASS_NAMES)."""
  classes = step_classes(camera_velocity(poses, fps), static_threshold, diff_threshold)
  return merge_short_runs(smooth_classes(classes, window), min_size)


def tag_character(
  char_pos,
  fps: float = FPS,
  static_threshold: float = 0.22,
  diff_threshold: float = 0.32,
  window: int = 56,
  min_size: int = 25,
) -> np.ndarray:
  """(N, 3) world positions → (N−1,) int64 E.T. character classes (see CHARACTER_CLASS_NAMES)."""
  classes = step_classes(character_velocity(char_pos, fps), static_threshold, diff_threshold)
  return merge_short_runs(smooth_classes(classes, window), min_size)


def runs(classes) -> list[tuple[int, int, int]]:
  """(M,) labels → [(class, start, end_exclusive), ...], one entry per maximal block of equal labels."""
  labels = _as_labels(classes)
  bounds = [0, *(np.flatnonzero(np.diff(labels)) + 1).tolist(), len(labels)] if len(labels) else []
  return [(int(labels[start]), start, end) for start, end in itertools.pairwise(bounds)]


def run_sequence(classes) -> tuple[int, ...]:
  """(M,) labels → the class of each run, in order."""
  return tuple(run_class for run_class, _, _ in runs(classes))
