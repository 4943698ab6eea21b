"""Who looks at whom: LAEO-Net++ over every pair of simultaneous head tracks, and the social analysis of thesis §2.1
(facts laeo-scam A.5, A.7).

A shot is a list of `HeadTrack`s. For each pair of tracks the model scores every T-frame window of their temporal
intersection (stride 1; an intersection shorter than T is padded by repeating its first and last frames, ⌊d/2⌋
copies before, as `mj_padImageTrack`). From the window scores:
  pair score       the max over windows (the released demo's "Max score"), per track pair;
  frame score      the mean of the scores of the windows that contain the frame (the thesis does not say how a frame
                   gets a score; this is our choice), per frame of the intersection;
  average-LAEO     (AL) per identity pair and shot: the mean frame score over the frames where both are present;
  SCR              the shots-coexistence ratio: frames where both are present / frames of the shot;
  friend-ness      per identity pair over an episode: the mean of AL over the shots where both appear.
Identities come from clustering when available (storyjax issue 17); otherwise pass each track's id.
"""

from collections.abc import Callable, Sequence
import itertools
import pathlib
from typing import NamedTuple

import numpy as np

from storyjax.data.laeo.head_map import draw_head_map, left_first
from storyjax.errors import DataError


class HeadTrack(NamedTuple):
  """One head track of a shot: `identity` (character or track id), first frame `start`, crops (n, 64, 64, 3)
  float32 in [0, 1] and boxes (n, 4) (x1, y1, x2, y2) in frame pixels for frames start … start + n − 1."""

  identity: int
  start: int
  crops: np.ndarray
  boxes: np.ndarray

  @property
  def end(self) -> int:
    return self.start + len(self.crops)


class PairScores(NamedTuple):
  """Scores of one track pair: its shot frames (n,), the frame scores (n,) and the window scores (W,)."""

  frames: np.ndarray
  frame_scores: np.ndarray
  window_scores: np.ndarray


def _window_frames(start: int, end: int, window: int) -> np.ndarray:
  """Shot frames (W, window) of every window of [start, end), padded as mj_padImageTrack when shorter than `window`."""
  frames = np.arange(start, end)
  if len(frames) < window:
    missing = window - len(frames)
    frames = np.concatenate([np.full(missing // 2, start), frames, np.full(missing - missing // 2, end - 1)])
  return np.stack([frames[offset : offset + window] for offset in range(len(frames) - window + 1)])


def pair_windows(
  tracks: Sequence[HeadTrack], first: int, second: int, image_size: tuple[int, int], window: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """LAEO-Net++ inputs of tracks `first` and `second` over their intersection → ({"head_left", "head_right",
  "head_map": (W, window, 64, 64, 3) float32}, shot frames (W, window)). Left and right are decided per window at
  its middle frame (A.1); every other track present in a frame goes into that frame's map channel 2 (A.2)."""
  track_a, track_b = tracks[first], tracks[second]
  start, end = max(track_a.start, track_b.start), min(track_a.end, track_b.end)
  if end <= start:
    raise DataError(f"tracks {first} and {second} do not overlap in time ([{track_a.start}, {track_a.end}) and "
                    f"[{track_b.start}, {track_b.end}))")  # fmt: skip
  frames = _window_frames(start, end, window)
  others = [track for index, track in enumerate(tracks) if index not in (first, second)]
  inputs = {name: np.empty((len(frames), window, 64, 64, 3), np.float32) for name in ("head_left", "head_right")}
  inputs["head_map"] = np.empty((len(frames), window, 64, 64, 3), np.float32)
  maps = {}
  for row, window_frames in enumerate(frames):
    middle = window_frames[window // 2]
    boxes = [track.boxes[middle - track.start] for track in (track_a, track_b)]
    left, right = (track_a, track_b) if left_first(*boxes, image_size) else (track_b, track_a)
    for column, frame in enumerate(window_frames):
      inputs["head_left"][row, column] = left.crops[frame - left.start]
      inputs["head_right"][row, column] = right.crops[frame - right.start]
      key = (left is track_a, frame)
      if key not in maps:
        pair_boxes = np.stack([left.boxes[frame - left.start], right.boxes[frame - right.start]])
        other_boxes = [track.boxes[frame - track.start] for track in others if track.start <= frame < track.end]
        maps[key] = draw_head_map(pair_boxes, np.reshape(other_boxes, (-1, 4)), image_size) / 255.0
      inputs["head_map"][row, column] = maps[key]
  return inputs, frames


def score_shot(
  predict: Callable[[dict[str, np.ndarray]], np.ndarray],
  tracks: Sequence[HeadTrack],
  image_size: tuple[int, int],
  window: int = 10,
) -> dict[tuple[int, int], PairScores]:
  """Every pair (i < j) of tracks that overlap in time → its PairScores. `predict` maps the inputs of W windows
  (W, window, 64, 64, 3) × 3 to LAEO probabilities (W,) (e.g. `storyjax.tasks.laeo.Task.predict`, which batches)."""
  scores = {}
  for first, second in itertools.combinations(range(len(tracks)), 2):
    if min(tracks[first].end, tracks[second].end) <= max(tracks[first].start, tracks[second].start):
      continue
    inputs, frames = pair_windows(tracks, first, second, image_size, window)
    window_scores = np.asarray(predict(inputs))
    shot_frames = np.arange(frames.min(), frames.max() + 1)
    totals = np.zeros(len(shot_frames))
    counts = np.zeros(len(shot_frames))
    for window_frames, score in zip(frames, window_scores):
      unique = np.unique(window_frames) - shot_frames[0]
      totals[unique] += score
      counts[unique] += 1
    scores[first, second] = PairScores(shot_frames, totals / counts, window_scores)
  return scores


class ShotStatistics(NamedTuple):
  """Per identity pair (a < b) of one shot: AL (mean frame score over co-present frames), SCR and the pair score."""

  average_laeo: dict[tuple[int, int], float]
  coexistence_ratio: dict[tuple[int, int], float]
  pair_score: dict[tuple[int, int], float]


def shot_statistics(tracks: Sequence[HeadTrack], scores: dict[tuple[int, int], PairScores]) -> ShotStatistics:
  """AL, SCR and pair score per identity pair of a shot from `score_shot`'s scores; several track pairs of one
  identity pair (a character tracked twice) pool their frames."""
  shot_length = max(track.end for track in tracks) - min(track.start for track in tracks)
  frame_scores, pair_scores = {}, {}
  for (first, second), pair in scores.items():
    identities = tuple(sorted((tracks[first].identity, tracks[second].identity)))
    if identities[0] == identities[1]:
      continue
    frame_scores.setdefault(identities, []).append(pair.frame_scores)
    pair_scores[identities] = max(pair_scores.get(identities, -np.inf), float(pair.window_scores.max()))
  average = {pair: float(np.concatenate(values).mean()) for pair, values in frame_scores.items()}
  coexistence = {pair: sum(map(len, values)) / shot_length for pair, values in frame_scores.items()}
  return ShotStatistics(average, coexistence, pair_scores)


def friendness(shots: Sequence[ShotStatistics]) -> dict[tuple[int, int], float]:
  """Friend-ness per identity pair over an episode (A.7): the mean of the shots' AL where both appear."""
  values = {}
  for statistics in shots:
    for pair, average in statistics.average_laeo.items():
      values.setdefault(pair, []).append(average)
  return {pair: float(np.mean(averages)) for pair, averages in values.items()}


def draw_social_graph(
  weights: dict[tuple[int, int], float], names: dict[int, str], path: str | pathlib.Path, title: str = ""
) -> pathlib.Path:
  """The social graph as a PNG at `path`: characters on a circle, one edge per pair with width and opacity
  proportional to its weight (friend-ness), labelled with it near the first character of the pair."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  identities = sorted(names)
  angles = np.linspace(0, 2 * np.pi, len(identities), endpoint=False) + np.pi / 2
  position = {identity: (np.cos(angle), np.sin(angle)) for identity, angle in zip(identities, angles)}
  largest = max(weights.values(), default=1.0) or 1.0
  figure, axes = plt.subplots(figsize=(5, 5))
  for (first, second), weight in sorted(weights.items(), key=lambda item: item[1]):
    (x1, y1), (x2, y2) = position[first], position[second]
    share = weight / largest
    axes.plot([x1, x2], [y1, y2], color="tab:red", linewidth=0.5 + 8 * share, alpha=0.25 + 0.75 * share, zorder=1)
    # Labels a third of the way along their edge, so those of crossing diagonals do not meet in the middle.
    axes.text(x1 + (x2 - x1) / 3, y1 + (y2 - y1) / 3, f"{weight:.2f}", fontsize=7, ha="center", va="center", zorder=3)
  for identity, (x, y) in position.items():
    axes.scatter([x], [y], s=900, color="white", edgecolors="black", zorder=2)
    axes.text(x, y, names[identity], ha="center", va="center", fontsize=8, zorder=4)
  axes.set_xlim(-1.3, 1.3)
  axes.set_ylim(-1.3, 1.3)
  axes.set_aspect("equal")
  axes.axis("off")
  axes.set_title(title or "friend-ness (mean average-LAEO over shared shots)", fontsize=9)
  path = pathlib.Path(path)
  figure.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(figure)
  return path
