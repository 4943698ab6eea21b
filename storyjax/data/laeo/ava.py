"""AVA-LAEO (facts laeo-scam A.6): the LAEO pair CSV joined with AVA v2.2's person boxes, and a frame layout of ours.

Files:
  laeo_csv     headerless `row_idx, youtube_id, keyframe_timestamp_sec, person_id1, person_id2, label` (ava_laeo_
               {train,val}.csv; label 1 = LAEO, 0 = not, 9 = ambiguous: removed and counted)
  ava_csv      AVA v2.2's `video_id, timestamp, x1, y1, x2, y2, action_id, person_id`, coordinates normalised to [0, 1];
               a person has one row per action, all with one box (the first is used, as `parse_ava_laeo.py`)
  frames_root  <youtube_id>/<timestamp:04d>/<k:02d>.jpg, k = 0 … window − 1: the window of frames centred on the
               keyframe (the keyframe is frame window // 2)
The pair is joined on (video, timestamp, person id), as the authors' zfill(4) join. AVA's keyframe annotations hold
no head tracks (LAEO-Net++ trained on its own track pickle, a different release), so here the person boxes stand for
the head boxes: the "head" crops are square crops of whole persons, and the keyframe's boxes are used for every frame
of the window. Every other person annotated at the keyframe goes into the head map's channel 2.
"""

from collections.abc import Mapping, Sequence
import csv
import pathlib
from typing import NamedTuple

import numpy as np
from PIL import Image

from storyjax.data.laeo.windows import check_channel_order, map_mean_window, pair_example, read_frame
from storyjax.errors import ConfigError, DataError

WINDOW = 10
LABELS = (0, 1, 9)
AMBIGUOUS = 9
_LAEO_COLUMNS = "row_idx, youtube_id, keyframe_timestamp_sec, person_id1, person_id2, label"
_AVA_COLUMNS = "video_id, timestamp, x1, y1, x2, y2, action_id, person_id"


class AvaLaeoSample(NamedTuple):
  """One labelled pair: `persons` (2,) AVA person ids of the keyframe at `timestamp` s of `video`."""

  video: str
  timestamp: int
  persons: tuple[int, int]
  label: int


def _rows(path: pathlib.Path, columns: str):
  """(line number, fields) of the non-empty rows of a headerless CSV with `columns`."""
  if not path.is_file():
    raise DataError(f"{path} does not exist; pass the CSV with columns {columns}")
  with open(path, newline="") as file:
    for line_number, fields in enumerate(csv.reader(file), start=1):
      if fields:
        yield line_number, [field.strip() for field in fields]


def read_ava_laeo_csv(path) -> tuple[list[tuple[int, AvaLaeoSample]], int]:
  """ava_laeo_{train,val}.csv → ([(line number, sample)] of the 0/1 rows, number of ambiguous rows removed)."""
  path, rows, num_ambiguous = pathlib.Path(path), [], 0
  for line_number, fields in _rows(path, _LAEO_COLUMNS):
    try:
      if len(fields) != 6:
        raise ValueError(f"{len(fields)} fields, not 6")
      _, video, timestamp, first, second, label = fields
      sample = AvaLaeoSample(video, int(timestamp), (int(first), int(second)), int(label))
      if not video or first == second or sample.label not in LABELS:
        raise ValueError("an empty video id, one person twice or a label other than 0, 1, 9")
    except ValueError as error:
      raise DataError(f"{path} line {line_number}: {fields} ({error}); each row is {_LAEO_COLUMNS}: fix it") from None
    if sample.label == AMBIGUOUS:
      num_ambiguous += 1
    else:
      rows.append((line_number, sample))
  return rows, num_ambiguous


def read_ava_boxes(path, keyframes=None) -> dict[tuple[str, int], dict[int, np.ndarray]]:
  """AVA v2.2's CSV → {(video, timestamp): {person_id: (4,) float64 normalised (x1, y1, x2, y2)}}, of `keyframes`
  (a set of (video, timestamp)) only when given; a person's first row gives its box."""
  path, boxes = pathlib.Path(path), {}
  for line_number, fields in _rows(path, _AVA_COLUMNS):
    try:
      if len(fields) != 8:
        raise ValueError(f"{len(fields)} fields, not 8")
      key = (fields[0], int(fields[1]))
      if keyframes is not None and key not in keyframes:
        continue
      box = np.array([float(value) for value in fields[2:6]])
      person = int(fields[7])
      if not (np.all((box >= 0) & (box <= 1)) and box[2] >= box[0] and box[3] >= box[1]):
        raise ValueError("coordinates must be normalised to [0, 1] with x2 >= x1 and y2 >= y1")
    except ValueError as error:
      raise DataError(f"{path} line {line_number}: {fields} ({error}); each row is {_AVA_COLUMNS}: fix it") from None
    boxes.setdefault(key, {}).setdefault(person, box)
  return boxes


def to_pixels(boxes, image_size: tuple[int, int]) -> np.ndarray:
  """(K, 4) normalised boxes → (K, 4) inclusive pixel boxes in an (H, W) image: (x1·W, y1·H, x2·W − 1, y2·H − 1),
  clipped to the image and to x2 >= x1, y2 >= y1."""
  height, width = image_size
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * [width, height, width, height] - [0, 0, 1, 1]
  boxes = np.clip(boxes, 0, [width - 1, height - 1, width - 1, height - 1])
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
  return boxes


class AvaLaeoSource:
  """Grain source of AVA-LAEO's labelled pairs: LAEO-Net++ examples (windows.py) of `window` frames.

  `samples` lists the pairs (AvaLaeoSample), `num_ambiguous` the label-9 rows removed. map_mean: None,
  (window·64, 64, 3) or (64, 64, 3) (the released meanmaps10.npy / meanmap.npy); channel_order "bgr" (the released
  weights') or "rgb".
  """

  def __init__(self, laeo_csv, ava_csv, frames_root, window: int = WINDOW, map_mean=None, channel_order: str = "bgr"):
    if window < 1:
      raise ConfigError(f"window={window} must be positive")
    self.frames_root = pathlib.Path(frames_root)
    if not self.frames_root.is_dir():
      raise DataError(
        f"{self.frames_root} is not a folder; it must hold <youtube_id>/<timestamp:04d>/<k:02d>.jpg, k = 0 … "
        f"{window - 1}, the frames centred on each keyframe"
      )
    self.window, self.channel_order = window, check_channel_order(channel_order)
    self.map_mean = map_mean_window(map_mean, window)
    rows, self.num_ambiguous = read_ava_laeo_csv(laeo_csv)
    if not rows:
      raise DataError(f"{laeo_csv} holds no pair labelled 0 or 1")
    self.boxes = read_ava_boxes(ava_csv, {(sample.video, sample.timestamp) for _, sample in rows})
    for line_number, sample in rows:
      persons = self.boxes.get((sample.video, sample.timestamp), {})
      for person in sample.persons:
        if person not in persons:
          raise DataError(
            f"{laeo_csv} line {line_number}: person {person} of {sample.video} at {sample.timestamp:04d} s is not in "
            f"{ava_csv}; pass the AVA v2.2 CSV of the same split (ava_{{train,val}}_v2.2.csv) or drop the row"
          )
    self.samples = [sample for _, sample in rows]

  def __len__(self) -> int:
    return len(self.samples)

  def frame_path(self, video: str, timestamp: int, step: int) -> pathlib.Path:
    return self.frames_root / video / f"{timestamp:04d}" / f"{step:02d}.jpg"

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} AVA-LAEO pairs")
    sample = self.samples[index]
    persons = self.boxes[sample.video, sample.timestamp]
    others = [person for person in sorted(persons) if person not in sample.persons]
    frames = [read_frame(self.frame_path(sample.video, sample.timestamp, step)) for step in range(self.window)]
    pair_boxes = np.stack(
      [to_pixels([persons[person] for person in sample.persons], frame.shape[:2]) for frame in frames]
    )
    other_boxes = [to_pixels([persons[person] for person in others], frame.shape[:2]) for frame in frames]
    return pair_example(frames, pair_boxes, pair_boxes, other_boxes, sample.label, self.map_mean, self.channel_order)


def write_ava_laeo_files(root, keyframes: Sequence[Mapping]) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
  """Writes `keyframes` as AVA-LAEO files under `root` → (laeo_csv, ava_csv, frames_root) for AvaLaeoSource.

  keyframes: [{"video": youtube id, "timestamp": int s, "frames": (T, H, W, 3) uint8 RGB centred on the keyframe,
  "boxes": {person_id: normalised (x1, y1, x2, y2)}, "pairs": [(person_id1, person_id2, label 0/1/9)], optionally
  "actions": {person_id: AVA action ids} (default one action, 1, each action a row of its own)}]. Writes
  root/ava_laeo.csv, root/ava_v2.2.csv and the frames as JPEG (quality 95) under root/frames.
  """
  root = pathlib.Path(root)
  frames_root = root / "frames"
  laeo_lines, ava_lines = [], []
  for keyframe in keyframes:
    video, timestamp = keyframe["video"], int(keyframe["timestamp"])
    for person, box in keyframe["boxes"].items():
      for action in keyframe.get("actions", {}).get(person, (1,)):
        coordinates = ",".join(f"{float(value):.3f}" for value in box)
        ava_lines.append(f"{video},{timestamp:04d},{coordinates},{action},{person}\n")
    for first, second, label in keyframe["pairs"]:
      laeo_lines.append(f"{len(laeo_lines)},{video},{timestamp},{first},{second},{label}\n")
    folder = frames_root / video / f"{timestamp:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    for step, image in enumerate(np.asarray(keyframe["frames"], np.uint8)):
      Image.fromarray(image).save(folder / f"{step:02d}.jpg", quality=95)
  laeo_csv, ava_csv = root / "ava_laeo.csv", root / "ava_v2.2.csv"
  laeo_csv.write_text("".join(laeo_lines))
  ava_csv.write_text("".join(ava_lines))
  return laeo_csv, ava_csv, frames_root
