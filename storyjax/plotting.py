"""Trajectory figures (matplotlib, Agg backend: no display needed)."""
import pathlib
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after selecting the backend)
import numpy as np  # noqa: E402

from storyjax.data.camera import FPS  # noqa: E402

AXIS_COLORS = {"right (x)": "tab:red", "down (y)": "tab:green", "forward (z)": "tab:blue"}


def plot_camera_trajectory(path, camera_pose, char_pos=None, caption: str = "", tags: str = "",
                           axes_every: int = 10) -> None:
  """Saves a PNG with a top view (x, z) and a side view (z, height = −y) of a camera path.

  camera_pose (N, 3, 4) camera-to-world, OpenCV axes (x right, y down, z forward; world up = −y);
  char_pos (N, 3) world positions or None. The camera path is coloured by time, with the camera's
  right / down / forward axes drawn every `axes_every` frames; the character path is dashed.
  """
  camera_pose = np.asarray(camera_pose, np.float64)
  if camera_pose.ndim != 3 or camera_pose.shape[1:] not in ((3, 4), (4, 4)):
    raise ValueError(f"camera_pose must be (N, 3, 4) or (N, 4, 4), got {camera_pose.shape}")
  centers, rotations = camera_pose[:, :3, 3], camera_pose[:, :3, :3]
  time = np.arange(len(centers)) / FPS
  extent = np.ptp(np.concatenate([centers] + ([np.asarray(char_pos)] if char_pos is not None else [])), 0)
  arrow_length = 0.08 * max(float(extent.max()), 0.5)
  # (horizontal, vertical) world coordinates of each view; height is −y because y points down.
  views = {"top view": (lambda p: p[..., 0], lambda p: p[..., 2], "x (right)", "z (forward)"),
           "side view": (lambda p: p[..., 2], lambda p: -p[..., 1], "z (forward)", "height (−y)")}
  figure, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
  for axis, (title, (horizontal, vertical, xlabel, ylabel)) in zip(axes, views.items()):
    points = axis.scatter(horizontal(centers), vertical(centers), c=time, cmap="viridis", s=8, zorder=3)
    for frame in range(0, len(centers), axes_every):
      for column, color in enumerate(AXIS_COLORS.values()):
        direction = rotations[frame, :, column] * arrow_length
        axis.arrow(horizontal(centers[frame]), vertical(centers[frame]), horizontal(direction),
                   vertical(direction), color=color, width=arrow_length * 0.02, length_includes_head=True)
    axis.plot(horizontal(centers[:1]), vertical(centers[:1]), "k^", ms=9, label="camera start")
    axis.plot(horizontal(centers[-1:]), vertical(centers[-1:]), "ks", ms=8, label="camera end")
    if char_pos is not None:
      char_pos = np.asarray(char_pos)
      axis.plot(horizontal(char_pos), vertical(char_pos), "--", color="tab:orange", label="character")
      axis.plot(horizontal(char_pos[:1]), vertical(char_pos[:1]), "o", color="tab:orange")
    for name, color in AXIS_COLORS.items():
      axis.plot([], [], color=color, label=f"camera {name}")
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axis.set_aspect("equal", adjustable="datalim")
    axis.margins(0.15)
    axis.grid(alpha=0.3)
  axes[0].legend(fontsize=7, loc="best")
  figure.colorbar(points, ax=axes, label="time (s)", shrink=0.8)
  figure.suptitle("\n".join(textwrap.wrap(caption, 110) + ([tags] if tags else [])), fontsize=9)
  figure.savefig(pathlib.Path(path), dpi=100)
  plt.close(figure)
