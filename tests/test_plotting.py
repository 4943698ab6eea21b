"""Trajectory figure: a readable PNG of the expected size for hand-made trajectories; input errors."""

import matplotlib.image
import numpy as np
import pytest

from storyjax import plotting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _orbit_and_push_in(num_frames: int):
  """(N, 3, 4) camera circling a quarter turn around the origin while rising, always facing it; character (N, 3)."""
  angle = np.linspace(0.0, np.pi / 2, num_frames)
  radius = np.linspace(3.0, 1.5, num_frames)
  centers = np.stack([radius * np.sin(angle), -np.linspace(0.0, 0.8, num_frames), -radius * np.cos(angle)], -1)
  forward = -centers / np.linalg.norm(centers, axis=-1, keepdims=True)
  right = np.cross(np.array([0.0, 1.0, 0.0]), forward)  # world down × forward, so that right × down = forward
  right /= np.linalg.norm(right, axis=-1, keepdims=True)
  down = np.cross(forward, right)
  poses = np.concatenate([np.stack([right, down, forward], -1), centers[..., None]], -1)
  char_pos = np.stack([np.linspace(0.0, 0.5, num_frames), np.zeros(num_frames), np.zeros(num_frames)], -1)
  return poses, char_pos


def _read_png(path):
  assert path.read_bytes()[:8] == PNG_SIGNATURE
  return matplotlib.image.imread(path)


def test_orbit_figure_is_a_readable_png(tmp_path):
  poses, char_pos = _orbit_and_push_in(120)
  np.testing.assert_allclose(
    poses[:, :, :3].transpose(0, 2, 1) @ poses[:, :, :3], np.tile(np.eye(3), (120, 1, 1)), atol=1e-12
  )
  np.testing.assert_allclose(np.linalg.det(poses[:, :, :3]), 1.0, atol=1e-12)
  path = tmp_path / "orbit.png"
  caption = (
    "The camera arcs around the character while moving in and rising slightly, then holds on the "
    "character who steps to the right; a long caption that has to be wrapped onto two lines."
  )
  plotting.plot_camera_trajectory(path, poses, char_pos, caption=caption, tags="generated tags: push_in, boom_top")
  image = _read_png(path)
  assert image.ndim == 3 and image.shape[2] in (3, 4)
  assert 500 <= image.shape[0] <= 800 and 1100 <= image.shape[1] <= 1400, image.shape
  rgb = image[..., :3]
  assert rgb.std() > 0.05  # not a blank canvas
  assert (np.abs(rgb - 1.0).max(-1) > 0.3).mean() > 0.01  # at least 1 % of the pixels are drawn on


def test_minimal_inputs(tmp_path):
  """No character, no caption, a single frame: still a PNG (the caption header shrinks the figure)."""
  poses, _ = _orbit_and_push_in(1)
  path = tmp_path / "one_frame.png"
  plotting.plot_camera_trajectory(path, poses)
  image = _read_png(path)
  assert 400 <= image.shape[0] <= 600 and image.shape[1] >= 1100
  four_by_four = np.concatenate([_orbit_and_push_in(30)[0], np.tile([[[0, 0, 0, 1.0]]], (30, 1, 1))], 1)
  plotting.plot_camera_trajectory(tmp_path / "square.png", four_by_four, axes_every=1)
  assert _read_png(tmp_path / "square.png").shape[1] >= 1100


@pytest.mark.parametrize(
  "camera_pose,char_pos,axes_every,match",
  [
    (np.zeros((5, 12)), None, 10, r"camera_pose must be \(N, 3, 4\)"),
    (np.zeros((0, 3, 4)), None, 10, "N ≥ 1"),
    (np.zeros((5, 3, 4)), np.zeros((4, 3)), 10, r"char_pos must be \(N, 3\) = \(5, 3\)"),
    (np.zeros((5, 3, 4)), None, 0, "axes_every"),
  ],
)
def test_bad_inputs_are_named(tmp_path, camera_pose, char_pos, axes_every, match):
  with pytest.raises(ValueError, match=match):
    plotting.plot_camera_trajectory(tmp_path / "bad.png", camera_pose, char_pos, axes_every=axes_every)
  assert not (tmp_path / "bad.png").exists()
