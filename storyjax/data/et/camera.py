"""E.T. camera and character trajectory conventions: the 9-D camera feature, the 3-D character feature, KITTI files.

Poses are camera-to-world [R|t] with OpenCV camera axes (x right, y down, z forward), so t is the camera centre
in world units; world = the shot's first camera, 25 fps, at most 300 frames.
"""

import os

import numpy as np

FPS = 25.0
MAX_FRAMES = 300
CAMERA_FEATURES = 9  # per frame: rot6d ‖ standardized translation step (encode_camera)
CHARACTER_FEATURES = 3  # per frame: standardized character step (encode_character)

# The E.T. '0300' standardization, hard-coded in the released DIRECTOR and CLaTr configs (no stats file exists).
CAM_VEL_MEAN = np.array([7.93987673e-05, -9.98621393e-05, 4.12940653e-04])  # per-frame camera Δt
CAM_VEL_STD = np.array([0.027841, 0.01819818, 0.03138536])
CAM_SHIFT_MEAN = np.array([0.00201079, -0.27488501, -1.23616805])  # frame-0 camera position
CAM_SHIFT_STD = np.array([1.13433516, 1.19061042, 1.58744263])
CHAR_VEL_MEAN = np.array([6.676e-05, -5.084e-05, -7.782e-04])  # character, all frames
CHAR_VEL_STD = np.array([0.0105, 0.006958, 0.01145])

_KITTI_NUMBERS = 12


def _as_poses(poses) -> np.ndarray:
  """(N, 3, 4) or (N, 4, 4) → (N, 3, 4) float64 [R|t]."""
  poses = np.asarray(poses, np.float64)
  if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
    raise ValueError(f"poses must have shape (N, 3, 4) or (N, 4, 4) (camera-to-world [R|t]), got {poses.shape}.")
  return poses[:, :3, :]


def _first_then_deltas(positions: np.ndarray) -> np.ndarray:
  """(..., N, 3) → (..., N, 3): frame 0 as is, then per-frame differences."""
  return np.concatenate([positions[..., :1, :], np.diff(positions, axis=-2)], axis=-2)


def encode_camera(poses) -> np.ndarray:
  """(N, 3, 4) or (N, 4, 4) camera-to-world → (N, 9) float32 E.T. feature.

  Per frame: rot6d = the first two columns of R, [R00, R10, R20, R01, R11, R21]; then frame 0's camera centre
  standardized with CAM_SHIFT_*, and for later frames the per-frame Δt standardized with CAM_VEL_*.
  """
  poses = _as_poses(poses)
  rot6d = np.swapaxes(poses[:, :, :2], 1, 2).reshape(-1, 6)
  steps = _first_then_deltas(poses[:, :, 3])
  translation = np.concatenate([(steps[:1] - CAM_SHIFT_MEAN) / CAM_SHIFT_STD, (steps[1:] - CAM_VEL_MEAN) / CAM_VEL_STD])
  return np.concatenate([rot6d, translation], axis=1).astype(np.float32)


def _normalize(vectors: np.ndarray) -> np.ndarray:
  # The floor keeps all-zero (padded) frames at zero instead of NaN.
  return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def decode_camera(feature) -> np.ndarray:
  """(..., N, 9) E.T. feature → (..., N, 3, 4) float64 camera-to-world [R|t].

  R by E.T.'s Gram–Schmidt: x = normalize(a1), z = normalize(x × a2), y = z × x, R = [x | y | z] (columns);
  t = cumulative sum of the un-standardized frame-0 position and per-frame Δt.
  """
  feature = np.asarray(feature, np.float64)
  if feature.ndim < 2 or feature.shape[-1] != 9:
    raise ValueError(f"camera feature must have shape (..., N, 9), got {feature.shape}.")
  x_axis = _normalize(feature[..., 0:3])
  z_axis = _normalize(np.cross(x_axis, feature[..., 3:6]))
  y_axis = np.cross(z_axis, x_axis)
  rotation = np.stack([x_axis, y_axis, z_axis], axis=-1)
  steps = np.concatenate(
    [feature[..., :1, 6:9] * CAM_SHIFT_STD + CAM_SHIFT_MEAN, feature[..., 1:, 6:9] * CAM_VEL_STD + CAM_VEL_MEAN],
    axis=-2,
  )
  return np.concatenate([rotation, np.cumsum(steps, axis=-2)[..., None]], axis=-1)


def encode_character(char_pos) -> np.ndarray:
  """(N, 3) world positions → (N, 3) float32: frame 0 absolute, then per-frame Δ, all z-scored with CHAR_VEL_*."""
  char_pos = np.asarray(char_pos, np.float64)
  if char_pos.ndim != 2 or char_pos.shape[1] != 3:
    raise ValueError(f"char_pos must have shape (N, 3), got {char_pos.shape}.")
  return ((_first_then_deltas(char_pos) - CHAR_VEL_MEAN) / CHAR_VEL_STD).astype(np.float32)


def padded_features(camera_pose, char_pos, max_frames: int) -> dict:
  """A trajectory's first T = max_frames frames as model features, zero-padded to T: camera_traj (T, 9) and
  char_traj (T, 3) float32 (encode_camera, encode_character), mask (T,) bool, num_frames () int32."""
  num_frames = min(len(camera_pose), max_frames)
  camera_traj = np.zeros((max_frames, CAMERA_FEATURES), np.float32)
  camera_traj[:num_frames] = encode_camera(np.asarray(camera_pose)[:num_frames])
  char_traj = np.zeros((max_frames, CHARACTER_FEATURES), np.float32)
  char_traj[:num_frames] = encode_character(np.asarray(char_pos)[:num_frames])
  return {
    "camera_traj": camera_traj,
    "char_traj": char_traj,
    "mask": np.arange(max_frames) < num_frames,
    "num_frames": np.int32(num_frames),
  }


def decode_character(feature) -> np.ndarray:
  """(..., N, 3) character feature → (..., N, 3) float64 world positions."""
  feature = np.asarray(feature, np.float64)
  if feature.ndim < 2 or feature.shape[-1] != 3:
    raise ValueError(f"character feature must have shape (..., N, 3), got {feature.shape}.")
  return np.cumsum(feature * CHAR_VEL_STD + CHAR_VEL_MEAN, axis=-2)


def read_kitti_poses(path) -> np.ndarray:
  """KITTI pose text (one frame a line: 12 numbers, row-major [R|t]) → (N, 3, 4) float64."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"KITTI pose file not found: {path}")
  with open(path, encoding="utf-8") as file:
    lines = file.read().rstrip().splitlines()
  poses = []
  for line_number, line in enumerate(lines, start=1):
    fields = line.split()
    if len(fields) != _KITTI_NUMBERS:
      raise ValueError(
        f"{path}, line {line_number}: expected {_KITTI_NUMBERS} numbers (row-major 3x4 [R|t]), "
        f"got {len(fields)}: {line!r}"
      )
    try:
      values = [float(field) for field in fields]
    except ValueError:
      raise ValueError(f"{path}, line {line_number}: not all fields are numbers: {line!r}") from None
    if not np.all(np.isfinite(values)):
      raise ValueError(f"{path}, line {line_number}: non-finite value in {line!r}")
    poses.append(values)
  if not poses:
    raise ValueError(f"{path} contains no poses.")
  return np.array(poses, np.float64).reshape(-1, 3, 4)


def write_kitti_poses(path, poses) -> None:
  """Writes (N, 3, 4) or (N, 4, 4) camera-to-world poses as KITTI text: one frame a line, "%.6e", space separated."""
  rows = _as_poses(poses).reshape(-1, _KITTI_NUMBERS)
  with open(path, "w", encoding="utf-8") as file:
    file.writelines(" ".join(f"{value:.6e}" for value in row) + "\n" for row in rows)
