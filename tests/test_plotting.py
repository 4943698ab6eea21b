import matplotlib.image
import numpy as np
import pytest

from storyjax import plotting


def test_plot_writes_a_png(tmp_path):
  frames = 60
  poses = np.tile(np.eye(4)[:3], (frames, 1, 1))
  poses[:, 0, 3] = np.linspace(0, 1.5, frames)  # trucking right
  poses[:, 2, 3] = -2.0
  char_pos = np.stack([np.zeros(frames), np.zeros(frames), np.linspace(0, 1, frames)], -1)
  path = tmp_path / "trajectory.png"
  plotting.plot_camera_trajectory(path, poses, char_pos, caption="The camera trucks right.", tags="trucking_right")
  image = matplotlib.image.imread(path)
  assert image.shape[0] >= 400 and image.shape[1] >= 900 and image.shape[2] in (3, 4)
  assert image[..., :3].std() > 0.05  # something was drawn


def test_plot_rejects_bad_shape(tmp_path):
  with pytest.raises(ValueError, match=r"\(N, 3, 4\)"):
    plotting.plot_camera_trajectory(tmp_path / "x.png", np.zeros((5, 12)))
