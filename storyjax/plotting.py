"""Figures: camera trajectories (matplotlib's Agg canvas, no display, no pyplot global state) and image grids."""

import pathlib
import textwrap

from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import numpy as np
from PIL import Image

from storyjax.data.et.camera import FPS

# Camera axes = columns of R in camera-to-world [R|t]: OpenCV x right, y down, z forward.
CAMERA_AXES = (("right (x)", "tab:red"), ("down (y)", "tab:green"), ("forward (z)", "tab:blue"))
CHARACTER_COLOR = "tab:orange"
# Each view: (title, horizontal label, vertical label, world point (..., 3) → (..., 2) plane coordinates).
# Height is −y because OpenCV's y points down.
VIEWS = (
  ("top view", "x (right)", "z (forward)", lambda points: np.stack([points[..., 0], points[..., 2]], -1)),
  ("side view", "z (forward)", "height (−y)", lambda points: np.stack([points[..., 2], -points[..., 1]], -1)),
)
_PANEL_WIDTH_IN, _PANEL_HEIGHT_IN = 5.6, 4.6
_CAPTION_LINE_IN, _TAGS_LINE_IN, _LEGEND_IN = 0.24, 0.24, 0.55


def _check_inputs(camera_pose, char_pos, axes_every):
  """→ camera_pose (N, 3, 4) float64, char_pos (N, 3) float64 or None; ValueError naming the bad input."""
  camera_pose = np.asarray(camera_pose, np.float64)
  if camera_pose.ndim != 3 or camera_pose.shape[1:] not in ((3, 4), (4, 4)) or len(camera_pose) == 0:
    raise ValueError(f"camera_pose must be (N, 3, 4) camera-to-world [R|t] with N ≥ 1, got {camera_pose.shape}.")
  camera_pose = camera_pose[:, :3]
  if char_pos is not None:
    char_pos = np.asarray(char_pos, np.float64)
    if char_pos.shape != (len(camera_pose), 3):
      raise ValueError(f"char_pos must be (N, 3) = ({len(camera_pose)}, 3) like camera_pose, got {char_pos.shape}.")
  if int(axes_every) < 1:
    raise ValueError(f"axes_every must be a positive number of frames, got {axes_every}.")
  return camera_pose, char_pos


def plot_camera_trajectory(
  path, camera_pose, char_pos=None, caption: str = "", tags: str = "", axes_every: int = 10
) -> None:
  """Saves a PNG at `path`: top view (x, z) and side view (z, height = −y) of a camera path.

  camera_pose (N, 3, 4) camera-to-world, OpenCV axes (x right, y down, z forward; world up = −y);
  char_pos (N, 3) world positions or None. The camera path is coloured by time (25 fps), with short arrows
  for the camera's right / down / forward axes every `axes_every` frames; the character path is dashed.
  Title = caption (wrapped), subtitle = tags.
  """
  camera_pose, char_pos = _check_inputs(camera_pose, char_pos, axes_every)
  centers, rotations = camera_pose[:, :, 3], camera_pose[:, :, :3]
  time = np.arange(len(centers)) / FPS
  time_norm = Normalize(0.0, max(time[-1], 1.0 / FPS))
  everything = centers if char_pos is None else np.concatenate([centers, char_pos])
  # Arrows scale with the scene so that they stay short whether the camera moves 10 cm or 10 m.
  arrow_length = 0.08 * max(float(np.ptp(everything, axis=0).max()), 0.25)

  caption_lines = textwrap.wrap(caption, 100)
  header_in = 0.25 + _CAPTION_LINE_IN * len(caption_lines) + (_TAGS_LINE_IN if tags else 0.0)
  width_in, height_in = 2 * _PANEL_WIDTH_IN + 1.2, _PANEL_HEIGHT_IN + header_in + _LEGEND_IN
  figure = Figure(figsize=(width_in, height_in), dpi=100)
  axes = figure.subplots(1, 2)
  figure.subplots_adjust(
    left=0.06, right=0.9, wspace=0.25, top=1 - header_in / height_in, bottom=(_LEGEND_IN + 0.45) / height_in
  )

  for axis, (title, horizontal_label, vertical_label, project) in zip(axes, VIEWS):
    plane = project(centers)
    path_segments = LineCollection(
      np.stack([plane[:-1], plane[1:]], 1), cmap="viridis", norm=time_norm, linewidths=2.5, zorder=2
    )
    path_segments.set_array((time[:-1] + time[1:]) / 2)
    axis.add_collection(path_segments)
    axis.scatter(*plane.T, c=time, cmap="viridis", norm=time_norm, s=6, zorder=2)
    frames = np.arange(0, len(centers), int(axes_every))
    for column, (_, color) in enumerate(CAMERA_AXES):
      direction = project(rotations[frames, :, column]) * arrow_length
      axis.quiver(
        *plane[frames].T, *direction.T, color=color, angles="xy", scale_units="xy", scale=1, width=0.004, zorder=3
      )
    axis.plot(*plane[0], "k^", ms=9, zorder=4)
    axis.plot(*plane[-1], "ks", ms=8, zorder=4)
    if char_pos is not None:
      char_plane = project(char_pos)
      axis.plot(*char_plane.T, "--", color=CHARACTER_COLOR, lw=1.5, zorder=1)
      axis.plot(*char_plane[0], "^", color=CHARACTER_COLOR, ms=8, zorder=4)
      axis.plot(*char_plane[-1], "s", color=CHARACTER_COLOR, ms=7, zorder=4)
    axis.set(title=title, xlabel=horizontal_label, ylabel=vertical_label)
    axis.autoscale_view()
    axis.margins(0.12)
    axis.set_aspect("equal", adjustable="datalim")
    axis.grid(alpha=0.3)

  colorbar = figure.colorbar(path_segments, ax=axes, fraction=0.03, pad=0.02)
  colorbar.set_label("time (s)")
  legend = [
    Line2D([], [], color="k", marker="^", ls="", label="camera start"),
    Line2D([], [], color="k", marker="s", ls="", label="camera end"),
  ]
  legend += [Line2D([], [], color=color, label=f"camera {name}") for name, color in CAMERA_AXES]
  if char_pos is not None:
    legend.append(Line2D([], [], color=CHARACTER_COLOR, ls="--", marker="^", label="character (▲ start, ■ end)"))
  figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=8, frameon=False)
  top = 1 - 0.15 / height_in
  if caption_lines:
    figure.text(0.5, top, "\n".join(caption_lines), ha="center", va="top", fontsize=11, weight="bold")
  if tags:
    figure.text(
      0.5,
      top - _CAPTION_LINE_IN * len(caption_lines) / height_in,
      tags,
      ha="center",
      va="top",
      fontsize=9,
      style="italic",
      color="0.3",
    )
  figure.savefig(pathlib.Path(path), dpi=100)


def save_image_grid(path, images, columns: int = 8) -> None:
  """Images (N, H, W, 3) in [−1, 1] → one PNG grid, `columns` wide, with a 1-pixel grey border between images."""
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
    raise ValueError(f"images must be (N, H, W, 3) with N ≥ 1, got {images.shape}")
  count, height, width, _ = images.shape
  columns = min(columns, count)
  rows = -(-count // columns)
  grid = np.full((rows * (height + 1) + 1, columns * (width + 1) + 1, 3), 128, np.uint8)
  pixels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
  for index, image in enumerate(pixels):
    top, left = 1 + (index // columns) * (height + 1), 1 + (index % columns) * (width + 1)
    grid[top : top + height, left : left + width] = image
  Image.fromarray(grid).save(path)
