"""E.T. camera/character features and KITTI files: hand-computed values, round trips, input errors."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from storyjax.data.et import camera


def _smooth_trajectory(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """(num_frames, 3, 4) camera-to-world poses with slowly turning rotations and a wandering centre."""
  rotvec_steps = rng.normal(scale=0.02, size=(num_frames, 3))
  rotvec_steps[0] = rng.normal(scale=1.0, size=3)
  rotations = Rotation.from_rotvec(rotvec_steps[0])
  matrices = [rotations.as_matrix()]
  for step in rotvec_steps[1:]:
    rotations = rotations * Rotation.from_rotvec(step)
    matrices.append(rotations.as_matrix())
  centres = rng.normal(scale=1.5, size=3) + np.cumsum(rng.normal(scale=0.03, size=(num_frames, 3)), axis=0)
  return np.concatenate([np.stack(matrices), centres[:, :, None]], axis=2)


def test_statistics_are_the_et_0300_values():
  np.testing.assert_array_equal(camera.CAM_VEL_MEAN, [7.93987673e-05, -9.98621393e-05, 4.12940653e-04])
  np.testing.assert_array_equal(camera.CAM_VEL_STD, [0.027841, 0.01819818, 0.03138536])
  np.testing.assert_array_equal(camera.CAM_SHIFT_MEAN, [0.00201079, -0.27488501, -1.23616805])
  np.testing.assert_array_equal(camera.CAM_SHIFT_STD, [1.13433516, 1.19061042, 1.58744263])
  np.testing.assert_array_equal(camera.CHAR_VEL_MEAN, [6.676e-05, -5.084e-05, -7.782e-04])
  np.testing.assert_array_equal(camera.CHAR_VEL_STD, [0.0105, 0.006958, 0.01145])
  assert camera.FPS == 25.0 and camera.MAX_FRAMES == 300


@pytest.mark.parametrize("num_frames", [1, 2, 57, 300])
def test_camera_round_trip(num_frames):
  poses = _smooth_trajectory(np.random.default_rng(num_frames), num_frames)
  feature = camera.encode_camera(poses)
  assert feature.shape == (num_frames, 9) and feature.dtype == np.float32
  decoded = camera.decode_camera(feature)
  assert decoded.shape == (num_frames, 3, 4) and decoded.dtype == np.float64
  np.testing.assert_allclose(decoded, poses, rtol=0, atol=1e-5)


def test_encode_accepts_homogeneous_poses():
  poses = _smooth_trajectory(np.random.default_rng(0), 10)
  homogeneous = np.tile(np.eye(4), (10, 1, 1))
  homogeneous[:, :3, :] = poses
  np.testing.assert_array_equal(camera.encode_camera(homogeneous), camera.encode_camera(poses))


def test_rot6d_layout_and_standardization_by_hand():
  # A cyclic axis permutation: column 0 = (0, 1, 0), column 1 = (0, 0, 1); its rows differ from its columns.
  rotation = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  centres = np.array([[1.0, 2.0, 3.0], [1.1, 2.0, 3.0], [1.1, 1.9, 3.05]])
  poses = np.concatenate([np.tile(rotation, (3, 1, 1)), centres[:, :, None]], axis=2)
  expected = np.array(
    [
      [
        0,
        1,
        0,
        0,
        0,
        1,
        (1.0 - 0.00201079) / 1.13433516,
        (2.0 + 0.27488501) / 1.19061042,
        (3.0 + 1.23616805) / 1.58744263,
      ],
      [
        0,
        1,
        0,
        0,
        0,
        1,
        (0.1 - 7.93987673e-05) / 0.027841,
        (0.0 + 9.98621393e-05) / 0.01819818,
        (0.0 - 4.12940653e-04) / 0.03138536,
      ],
      [
        0,
        1,
        0,
        0,
        0,
        1,
        (0.0 - 7.93987673e-05) / 0.027841,
        (-0.1 + 9.98621393e-05) / 0.01819818,
        (0.05 - 4.12940653e-04) / 0.03138536,
      ],
    ]
  )
  np.testing.assert_allclose(camera.encode_camera(poses), expected, rtol=1e-6, atol=1e-6)


def test_decode_gram_schmidt_by_hand():
  # a1 = (0, 2, 0), a2 = (0, 1, -5): x = (0, 1, 0), z = normalize(x × a2) = (-1, 0, 0), y = z × x = (0, 0, -1).
  feature = np.array([[0.0, 2.0, 0.0, 0.0, 1.0, -5.0, 0.0, 0.0, 0.0]])
  expected_rotation = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
  decoded = camera.decode_camera(feature)
  np.testing.assert_allclose(decoded[0, :, :3], expected_rotation, atol=1e-12)
  np.testing.assert_allclose(decoded[0, :, 3], [0.00201079, -0.27488501, -1.23616805], atol=1e-12)


def test_batch_decode_equals_per_sample_decode():
  rng = np.random.default_rng(1)
  features = np.stack([camera.encode_camera(_smooth_trajectory(rng, 40)) for _ in range(6)]).reshape(2, 3, 40, 9)
  batched = camera.decode_camera(features)
  assert batched.shape == (2, 3, 40, 3, 4)
  for i in range(2):
    for j in range(3):
      np.testing.assert_array_equal(batched[i, j], camera.decode_camera(features[i, j]))


def test_character_by_hand_and_round_trip():
  char_pos = np.array([[0.0, 0.0, 0.0], [0.01, -0.02, 0.03]])
  expected = np.array(
    [
      [(0.0 - 6.676e-05) / 0.0105, (0.0 + 5.084e-05) / 0.006958, (0.0 + 7.782e-04) / 0.01145],
      [(0.01 - 6.676e-05) / 0.0105, (-0.02 + 5.084e-05) / 0.006958, (0.03 + 7.782e-04) / 0.01145],
    ]
  )
  feature = camera.encode_character(char_pos)
  assert feature.dtype == np.float32
  np.testing.assert_allclose(feature, expected, rtol=1e-6)

  rng = np.random.default_rng(2)
  walks = np.cumsum(rng.normal(scale=0.02, size=(4, 120, 3)), axis=1)
  features = np.stack([camera.encode_character(walk) for walk in walks])
  np.testing.assert_allclose(camera.decode_character(features), walks, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(camera.decode_character(features)[2], camera.decode_character(features[2]))


@pytest.mark.parametrize(
  "call, bad_input, expected",
  [
    (camera.encode_camera, np.zeros((5, 3, 3)), r"\(N, 3, 4\) or \(N, 4, 4\)"),
    (camera.encode_camera, np.zeros((3, 4)), r"\(N, 3, 4\) or \(N, 4, 4\)"),
    (camera.decode_camera, np.zeros((5, 8)), r"\(\.\.\., N, 9\)"),
    (camera.decode_camera, np.zeros((9,)), r"\(\.\.\., N, 9\)"),
    (camera.encode_character, np.zeros((5, 2)), r"\(N, 3\)"),
    (camera.decode_character, np.zeros((5, 4)), r"\(\.\.\., N, 3\)"),
  ],
)
def test_shape_errors_name_the_expected_shape(call, bad_input, expected):
  with pytest.raises(ValueError, match=expected):
    call(bad_input)


def test_kitti_round_trip(tmp_path):
  poses = _smooth_trajectory(np.random.default_rng(3), 50)
  path = tmp_path / "traj.txt"
  camera.write_kitti_poses(path, poses)
  text = path.read_text()
  lines = text.split("\n")
  assert text.endswith("\n") and not text.endswith("\n\n")
  assert len(lines) == 51 and lines[-1] == ""
  assert all(len(line.split(" ")) == 12 for line in lines[:-1])
  assert lines[0].split(" ")[0] == f"{poses[0, 0, 0]:.6e}"
  assert lines[0].split(" ")[3] == f"{poses[0, 0, 3]:.6e}"  # row-major: tx is the 4th number
  read = camera.read_kitti_poses(path)
  assert read.shape == (50, 3, 4) and read.dtype == np.float64
  np.testing.assert_allclose(read, poses, rtol=1e-6, atol=1e-12)

  homogeneous_path = tmp_path / "traj44.txt"
  homogeneous = np.tile(np.eye(4), (50, 1, 1))
  homogeneous[:, :3] = poses
  camera.write_kitti_poses(homogeneous_path, homogeneous)
  assert homogeneous_path.read_text() == text


def test_kitti_reader_allows_trailing_blank_lines(tmp_path):
  path = tmp_path / "traj.txt"
  path.write_text("1 0 0 0.5 0 1 0 0 0 0 1 -2\n0 -1 0 1 1 0 0 2 0 0 1 3\n\n\n")
  np.testing.assert_array_equal(
    camera.read_kitti_poses(path),
    [[[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, -2]], [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3]]],
  )


@pytest.mark.parametrize(
  "second_line", ["1 0 0 0 0 1 0 0 0 0 1", "1 0 0 0 0 1 0 0 0 0 1 x", "1 0 0 0 0 1 0 0 0 0 1 nan", ""]
)
def test_malformed_kitti_line_names_file_and_line(tmp_path, second_line):
  path = tmp_path / "broken_traj.txt"
  path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n" + second_line + "\n1 0 0 0 0 1 0 0 0 0 1 0\n")
  with pytest.raises(ValueError, match=r"broken_traj\.txt, line 2"):
    camera.read_kitti_poses(path)


def test_kitti_missing_and_empty_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing_traj.txt"):
    camera.read_kitti_poses(tmp_path / "missing_traj.txt")
  empty = tmp_path / "empty_traj.txt"
  empty.write_text("\n")
  with pytest.raises(ValueError, match="empty_traj.txt"):
    camera.read_kitti_poses(empty)
