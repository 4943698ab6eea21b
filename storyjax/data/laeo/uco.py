"""UCO-LAEO (facts laeo-scam A.5, A.6): the released layout, its split and LAEO-Net's temporal pair samples.

Layout under `root` (video names lowercase, as the release):
  annotations/annotations_frame/<vid>.txt         one line per frame; column 1 is the label 0/1 (9 = ambiguous)
  annotations/annotations_head/<vid>_heads.txt    per frame a line with one token, then `x1 y1 x2 y2` per head
  annotations/annotations_pair/pair_<vid>.txt     per frame a line with one token, then `i j` (1-indexed heads that
                                                  are LAEO; `-1 -1` = none)
  frames/<vid>/%06d.jpg                           the frames, 0-based
The k-th block of a heads or pairs file is frame k (the opening token is not read). A block with no lines is a frame
without heads; the authors' parser drops such blocks, which would shift every later frame.

Samples follow `mj_computeTempLAEOpairsFromVideo`. A track starts at every (frame, head) and follows, frame after
frame, the head with the largest IoU against the track's first box while that IoU is > 0.5 (the authors compare
with the first box, not the previous one, so a head that drifts by about half its size leaves the track). A sample
is a pair of heads of one frame whose tracks both last `window` frames: the window slides with stride 1 over the
time both heads are tracked. Its label is read at the middle frame, start + window // 2: positive when the two
tracked heads are an annotated LAEO pair there (the rule as stated in A.5; the released code looks the pair up in
the start frame's annotations, with the heads of frame start + window // 2 − 1). A middle frame labelled 9 makes the
sample ambiguous: it is excluded and counted.

Crops are taken from the pair's boxes smoothed over the window (flat moving average of 5 frames, A.1); the head map
is drawn from the annotated boxes of each frame, every other head of that frame in channel 2, as the authors'
`mj_cropFrameMapsByTracks`.
"""

from collections.abc import Mapping
import dataclasses
import pathlib
from typing import NamedTuple

import numpy as np
from PIL import Image

from storyjax.data.laeo.windows import check_channel_order, map_mean_window, pair_example, read_frame, smooth_boxes
from storyjax.errors import ConfigError, DataError

# Partition 1 of the authors' code (CVPR'19 and TPAMI); every other video is train.
VAL_VIDEOS = ("got01", "got03", "mr01", "mr03", "sv02", "sv04", "twd01", "twd02")
TEST_VIDEOS = (
  "got05",
  "got06",
  "got08",
  "mr04",
  "mr05",
  "mr06",
  "mr10",
  "sv03",
  "sv06",
  "sv10",
  "twd03",
  "twd04",
  "twd05",
  "twd06",
  "twd07",
)
SPLITS = ("train", "val", "test")
WINDOW = 10  # LAEO-Net++'s T
IOU_THRESHOLD = 0.5
FRAME_LABELS = (0, 1, 9)
AMBIGUOUS = 9


def _lines(path: pathlib.Path):
  """(line number, tokens) of the non-empty lines of an annotation file."""
  if not path.is_file():
    raise DataError(f"{path} does not exist; UCO-LAEO's annotations must be extracted under <root>/annotations")
  with open(path) as file:
    for line_number, line in enumerate(file, start=1):
      tokens = line.split()
      if tokens:
        yield line_number, tokens


def read_frame_labels(path) -> np.ndarray:
  """annotations_frame/<vid>.txt → (F,) int32 frame labels (0, 1 or 9 = ambiguous), from column 1 of each line."""
  path, labels = pathlib.Path(path), []
  for line_number, tokens in _lines(path):
    try:
      label = int(float(tokens[1]))
    except (IndexError, ValueError):
      label = None
    if label not in FRAME_LABELS:
      raise DataError(f"{path} line {line_number}: {' '.join(tokens)!r} has no label 0, 1 or 9 in column 1; fix it")
    labels.append(label)
  return np.array(labels, np.int32)


def _blocks(path: pathlib.Path, width: int, what: str):
  """The frames of a block file: for each, the (line number, first `width` ints) of its lines."""
  frames = []
  for line_number, tokens in _lines(path):
    if len(tokens) == 1:
      frames.append([])
      continue
    try:
      if len(tokens) < width:
        raise ValueError
      values = [int(token) for token in tokens[:width]]
    except ValueError:
      raise DataError(
        f"{path} line {line_number}: {' '.join(tokens)!r} is not {what} (integers) nor a one-token line opening a "
        "frame; fix the line"
      ) from None
    if not frames:
      raise DataError(f"{path} line {line_number}: {what} before the first frame's opening line; add one above it")
    frames[-1].append((line_number, values))
  return frames


def read_head_boxes(path) -> list[np.ndarray]:
  """annotations_head/<vid>_heads.txt → one (K_f, 4) int64 array of (x1, y1, x2, y2) head boxes per frame."""
  path, frames = pathlib.Path(path), []
  for lines in _blocks(path, 4, "x1 y1 x2 y2"):
    for line_number, (x1, y1, x2, y2) in lines:
      if x2 < x1 or y2 < y1:
        raise DataError(f"{path} line {line_number}: box {x1} {y1} {x2} {y2} has x2 < x1 or y2 < y1; fix the line")
    frames.append(np.array([values for _, values in lines], np.int64).reshape(-1, 4))
  return frames


def read_laeo_pairs(path) -> list[frozenset[tuple[int, int]]]:
  """annotations_pair/pair_<vid>.txt → per frame the LAEO pairs as 0-based head indices (i, j), i < j."""
  path, frames = pathlib.Path(path), []
  for lines in _blocks(path, 2, "i j"):
    pairs = set()
    for line_number, (first, second) in lines:
      if (first, second) == (-1, -1):
        continue
      if first < 1 or second < 1 or first == second:
        raise DataError(
          f"{path} line {line_number}: pair {first} {second} is not two distinct 1-indexed heads nor -1 -1; fix it"
        )
      pairs.add((min(first, second) - 1, max(first, second) - 1))
    frames.append(frozenset(pairs))
  return frames


def box_iou(boxes_a, boxes_b) -> np.ndarray:
  """(A, 4) and (B, 4) inclusive pixel boxes (x1, y1, x2, y2) → (A, B) IoU, areas counted with the +1
  (`bb_intersection_over_union`)."""
  boxes_a = np.asarray(boxes_a, np.float64).reshape(-1, 1, 4)
  boxes_b = np.asarray(boxes_b, np.float64).reshape(1, -1, 4)
  width = np.minimum(boxes_a[..., 2], boxes_b[..., 2]) - np.maximum(boxes_a[..., 0], boxes_b[..., 0]) + 1
  height = np.minimum(boxes_a[..., 3], boxes_b[..., 3]) - np.maximum(boxes_a[..., 1], boxes_b[..., 1]) + 1
  intersection = np.maximum(width, 0) * np.maximum(height, 0)
  area_a = (boxes_a[..., 2] - boxes_a[..., 0] + 1) * (boxes_a[..., 3] - boxes_a[..., 1] + 1)
  area_b = (boxes_b[..., 2] - boxes_b[..., 0] + 1) * (boxes_b[..., 3] - boxes_b[..., 1] + 1)
  return intersection / (area_a + area_b - intersection)


def link_tracks(heads: list[np.ndarray], start: int, length: int) -> list[np.ndarray | None]:
  """For each head of frame `start`, its track's (length,) int64 head index per frame, or None when the track breaks
  (or the video ends) sooner: each next frame's head of largest IoU with the track's first box (the first on ties)
  continues it while that IoU is > IOU_THRESHOLD (`mj_generateTracks`)."""
  num_heads = len(heads[start])
  later = heads[start + 1 : start + length]
  if start + length > len(heads) or any(len(boxes) == 0 for boxes in later):
    return [None] * num_heads
  # the later frames' heads padded to (length − 1, most, 4) with nan boxes, whose IoU becomes −1: one IoU call
  most = max((len(boxes) for boxes in later), default=1)
  padded = np.full((length - 1, most, 4), np.nan)
  for step, boxes in enumerate(later):
    padded[step, : len(boxes)] = boxes
  overlaps = np.nan_to_num(box_iou(heads[start], padded.reshape(-1, 4)), nan=-1.0).reshape(num_heads, length - 1, most)
  best = np.argmax(overlaps, axis=-1)
  alive = np.all(np.take_along_axis(overlaps, best[..., None], axis=-1)[..., 0] > IOU_THRESHOLD, axis=1)
  tracks = np.concatenate([np.arange(num_heads)[:, None], best], axis=1)
  return [track if kept else None for track, kept in zip(tracks, alive)]


@dataclasses.dataclass(frozen=True)
class UcoVideo:
  """One video's annotations: per frame its label, head boxes (K_f, 4) and LAEO pairs (0-based, i < j)."""

  name: str
  frame_labels: np.ndarray  # (F,) int32
  heads: list[np.ndarray]
  pairs: list[frozenset[tuple[int, int]]]
  frames_dir: pathlib.Path

  def frame_path(self, frame: int) -> pathlib.Path:
    return self.frames_dir / f"{frame:06d}.jpg"


class UcoSample(NamedTuple):
  """A window: `heads` (2, T) the pair's head index in each of frames start … start + T − 1, ordered by their index in
  the start frame; label 0/1."""

  video: str
  start: int
  heads: np.ndarray
  label: int


def video_samples(video: UcoVideo, window: int) -> tuple[list[UcoSample], int]:
  """The labelled windows of `video` (ordered by start frame, then head indices) and the number of ambiguous ones
  left out."""
  samples, num_ambiguous = [], 0
  for start in range(len(video.heads) - window + 1):
    tracked = [track for track in link_tracks(video.heads, start, window) if track is not None]
    if len(tracked) < 2:
      continue
    middle = start + window // 2
    if middle >= min(len(video.frame_labels), len(video.pairs)):
      raise DataError(
        f"video {video.name} has head boxes for {len(video.heads)} frames but {len(video.frame_labels)} frame "
        f"labels and {len(video.pairs)} frames of pairs; its annotation files must describe the same frames"
      )
    for index, first in enumerate(tracked):
      for second in tracked[index + 1 :]:
        if video.frame_labels[middle] == AMBIGUOUS:
          num_ambiguous += 1
          continue
        pair = tuple(sorted((int(first[window // 2]), int(second[window // 2]))))
        label = int(pair in video.pairs[middle])
        samples.append(UcoSample(video.name, start, np.stack([first, second]), label))
  return samples, num_ambiguous


class UcoLaeo:
  """The UCO-LAEO release (or write_uco_laeo_tree's output) under `root`: its videos (those with a frame-label
  file), their split (partition 1: VAL_VIDEOS, TEST_VIDEOS, train = the rest) and annotations."""

  def __init__(self, root):
    self.root = pathlib.Path(root)
    labels_dir = self.root / "annotations" / "annotations_frame"
    if not labels_dir.is_dir():
      raise DataError(
        f"{labels_dir} is not a folder; pass the UCO-LAEO root holding annotations/ and frames/ (download "
        "ucolaeodb.tgz from the AVAuco/ucolaeodb README and extract the annotations there)"
      )
    self.videos = tuple(sorted(path.stem for path in labels_dir.glob("*.txt")))
    if not self.videos:
      raise DataError(f"{labels_dir} holds no <video>.txt frame-label files; extract UCO-LAEO's annotations there")

  def split_videos(self, split: str) -> tuple[str, ...]:
    """The videos of `split` present under root (partition 1)."""
    if split not in SPLITS:
      raise ConfigError(f"unknown UCO-LAEO split {split!r}; choose one of {SPLITS}")
    if split == "train":
      return tuple(video for video in self.videos if video.lower() not in VAL_VIDEOS + TEST_VIDEOS)
    listed = VAL_VIDEOS if split == "val" else TEST_VIDEOS
    return tuple(video for video in self.videos if video.lower() in listed)

  def video(self, name: str) -> UcoVideo:
    """Parses `name`'s three annotation files; a pair naming a head its frame does not have is an error."""
    annotations = self.root / "annotations"
    heads_path = annotations / "annotations_head" / f"{name}_heads.txt"
    pairs_path = annotations / "annotations_pair" / f"pair_{name}.txt"
    video = UcoVideo(
      name=name,
      frame_labels=read_frame_labels(annotations / "annotations_frame" / f"{name}.txt"),
      heads=read_head_boxes(heads_path),
      pairs=read_laeo_pairs(pairs_path),
      frames_dir=self.root / "frames" / name.lower(),
    )
    for frame, (boxes, pairs) in enumerate(zip(video.heads, video.pairs)):
      for pair in pairs:
        if max(pair) >= len(boxes):
          raise DataError(
            f"{pairs_path} frame {frame}: pair {pair[0] + 1} {pair[1] + 1} names a head that frame {frame} of "
            f"{heads_path} does not have ({len(boxes)} heads); fix the pair or the heads file"
          )
    return video


class UcoLaeoSource:
  """Grain source of UCO-LAEO's windows of `split`: LAEO-Net++ examples (windows.py) of `window` frames.

  `samples` lists the windows (UcoSample), `num_ambiguous` the ones left out. map_mean: None, (window·64, 64, 3) or
  (64, 64, 3) (the released meanmaps10.npy / meanmap.npy); channel_order "bgr" (the released weights') or "rgb".
  """

  def __init__(self, root, split: str, window: int = WINDOW, map_mean=None, channel_order: str = "bgr"):
    if window < 1:
      raise ConfigError(f"window={window} must be positive")
    self.dataset = UcoLaeo(root)
    self.split, self.window, self.channel_order = split, window, check_channel_order(channel_order)
    self.map_mean = map_mean_window(map_mean, window)
    names = self.dataset.split_videos(split)
    if not names:
      raise DataError(f"{self.dataset.root} holds no video of the {split} split; videos found: {self.dataset.videos}")
    self.videos = {name: self.dataset.video(name) for name in names}
    self.samples, self.num_ambiguous = [], 0
    for video in self.videos.values():
      samples, num_ambiguous = video_samples(video, window)
      if samples:
        last_frame = video.frame_path(max(sample.start for sample in samples) + window - 1)
        if not last_frame.is_file():
          raise DataError(
            f"{last_frame} does not exist but the annotations of {video.name} need it; extract the video's frames to "
            f"{video.frames_dir}/%06d.jpg (0-based)"
          )
      self.samples += samples
      self.num_ambiguous += num_ambiguous

  def __len__(self) -> int:
    return len(self.samples)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} UCO-LAEO windows")
    sample = self.samples[index]
    video = self.videos[sample.video]
    frames_range = range(sample.start, sample.start + self.window)
    frames = [read_frame(video.frame_path(frame)) for frame in frames_range]
    map_boxes = np.stack([video.heads[frame][sample.heads[:, step]] for step, frame in enumerate(frames_range)])
    crop_boxes = np.stack([smooth_boxes(map_boxes[:, person]) for person in range(2)], axis=1)
    other_boxes = [
      np.delete(video.heads[frame], sample.heads[:, step], axis=0) for step, frame in enumerate(frames_range)
    ]
    return pair_example(frames, crop_boxes, map_boxes, other_boxes, sample.label, self.map_mean, self.channel_order)


def write_uco_laeo_tree(root, videos: Mapping[str, Mapping]) -> pathlib.Path:
  """Writes `videos` in UCO-LAEO's layout under `root` → root (e.g. to convert data, or tiny test sets).

  videos: {name: {"frames": (F, H, W, 3) uint8 RGB, "heads": F (K_f, 4) int boxes (x1, y1, x2, y2), "pairs": F lists
  of 0-based LAEO head pairs (i, j), optionally "labels": (F,) frame labels 0/1/9 (default 1 where the frame has a
  pair, else 0)}}. Frames are JPEG (quality 95); each block opens with its frame index.
  """
  root = pathlib.Path(root)
  annotations = root / "annotations"
  for folder in ("annotations_frame", "annotations_head", "annotations_pair"):
    (annotations / folder).mkdir(parents=True, exist_ok=True)
  for name, video in videos.items():
    frames, heads, pairs = np.asarray(video["frames"]), video["heads"], video["pairs"]
    shaped = frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8
    if not shaped or not len(heads) == len(pairs) == len(frames):
      raise DataError(
        f"video {name}: frames must be (F, H, W, 3) uint8 with F heads and pairs entries, got frames "
        f"{frames.shape} {frames.dtype}, {len(heads)} heads, {len(pairs)} pairs"
      )
    labels = video.get("labels", [int(len(frame_pairs) > 0) for frame_pairs in pairs])
    if len(labels) != len(frames):
      raise DataError(f"video {name}: {len(labels)} labels for {len(frames)} frames; give one label per frame")
    frame_lines = [f"{frame} {int(label)}\n" for frame, label in enumerate(labels)]
    head_lines, pair_lines = [], []
    for frame, (boxes, frame_pairs) in enumerate(zip(heads, pairs)):
      head_lines.append(f"{frame}\n")
      head_lines += [" ".join(str(int(value)) for value in box) + "\n" for box in np.reshape(boxes, (-1, 4))]
      pair_lines.append(f"{frame}\n")
      pair_lines += [f"{first + 1} {second + 1}\n" for first, second in frame_pairs] or ["-1 -1\n"]
    (annotations / "annotations_frame" / f"{name}.txt").write_text("".join(frame_lines))
    (annotations / "annotations_head" / f"{name}_heads.txt").write_text("".join(head_lines))
    (annotations / "annotations_pair" / f"pair_{name}.txt").write_text("".join(pair_lines))
    frames_dir = root / "frames" / name.lower()
    frames_dir.mkdir(parents=True, exist_ok=True)
    for frame, image in enumerate(frames):
      Image.fromarray(image).save(frames_dir / f"{frame:06d}.jpg", quality=95)
  return root
