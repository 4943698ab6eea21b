"""Procedural E.T.-style samples: a walking character, a camera moving by known E.T. motion classes, captions.

Conventions match the released E.T. data: camera-to-world poses with OpenCV camera axes (x right, y down,
z forward), world = the frame-0 camera (R_0 = I), up = −y, the character at the origin at frame 0, 25 fps,
at most 300 frames. Each camera segment is built so that E.T.'s tagger (`tagging.tag_camera`) recovers
its class: translation happens along fixed camera-frame axes at 0.3–1.2 units/s per moving axis (the
static threshold is 0.02), multi-axis speeds are within a factor 0.75 of each other (the dominance rule
drops an axis only below 0.6), and every segment lasts ≥ 40 steps (E.T. merges runs < 25 steps and
mode-filters over 57). Pans and tilts are pure rotations inside static segments, so their class is static.

Each segment's camera class is drawn uniformly from CAMERA_MOTION_CLASSES (19 classes; in `mixed`,
uniformly among those that differ from the previous segment), so every class has the same marginal
share and the chance level of guessing a segment's class is 1/19 ≈ 5.3%.
"""

import itertools
import re
import string
from typing import NamedTuple

import numpy as np
from scipy.spatial.transform import Rotation

from storyjax.data.et import camera, tagging

SUBSETS = ("pure", "mixed")
SPLITS = ("train", "test")
MAX_SEGMENTS = {"pure": 1, "mixed": 3}

MIN_SEGMENT_STEPS = 40  # > E.T.'s 25-step merge and half its 57-step mode window: segments survive tagging
_EASE_STEPS = 8  # camera speed ramps at internal segment boundaries
_TURN_STEPS = 12  # character velocity blends between walking segments
_CAMERA_SPEED = (0.3, 1.2)  # units/s per moving camera axis
_MIN_AXIS_SPEED_RATIO = 0.75
_JITTER_STD = 0.002  # units/s per camera axis, 10× below E.T.'s 0.02 static threshold
_CHARACTER_SPEED = (0.5, 1.3)  # units/s on the ground plane
_HEADING_JITTER_DEG = {1: 10.0, 2: 5.0}  # by number of moving axes; diagonals stay within E.T.'s 0.32 dominance
_BOB_HEIGHT, _BOB_HZ = 0.01, 1.8  # walking bob: ≤ 0.12 units/s vertically, below the 0.22 threshold
_IMAGE_SIZES = ((1280, 720), (1280, 688), (1280, 536))


class _AxisMotion(NamedTuple):
  signs: tuple[int, int, int]
  phrases: tuple[str, ...]
  gerund: str
  direction: str


# E.T. tag name → camera-frame direction and words.
_CAMERA_AXIS_MOTIONS = {
  "trucking_right": _AxisMotion(
    (1, 0, 0), ("trucks right", "moves to the right", "slides to the right", "tracks right"), "trucking right", "right"
  ),
  "trucking_left": _AxisMotion(
    (-1, 0, 0), ("trucks left", "moves to the left", "slides to the left", "tracks left"), "trucking left", "left"
  ),
  "boom_bottom": _AxisMotion(
    (0, 1, 0), ("booms down", "moves down", "descends", "cranes down"), "booming down", "down"
  ),
  "boom_top": _AxisMotion((0, -1, 0), ("booms up", "moves up", "rises", "cranes up"), "booming up", "up"),
  "push_in": _AxisMotion(
    (0, 0, 1),
    ("pushes in", "moves closer to the character", "dollies in towards the subject", "moves forward"),
    "pushing in",
    "forward",
  ),
  "pull_out": _AxisMotion(
    (0, 0, -1),
    ("pulls out", "moves away from the character", "dollies out", "moves backward"),
    "pulling out",
    "backward",
  ),
}
STATIC_CAMERA_PHRASES = ("stays still", "remains static", "holds its position", "does not move", "stays fixed")


class _Pan(NamedTuple):
  rotation_axis: tuple[int, int, int]  # camera frame; turning about it by a positive angle makes the motion
  degrees: tuple[float, float]
  phrases: tuple[str, ...]


_PANS = {  # R_y(θ) turns the optical axis +z towards +x (right); R_x(θ) turns it towards −y (up)
  "pan_left": _Pan((0, -1, 0), (15.0, 40.0), ("pans left", "pans to the left", "turns to the left", "swivels left")),
  "pan_right": _Pan(
    (0, 1, 0), (15.0, 40.0), ("pans right", "pans to the right", "turns to the right", "swivels right")
  ),
  "tilt_up": _Pan((1, 0, 0), (8.0, 20.0), ("tilts up", "tilts upward", "looks up")),
  "tilt_down": _Pan((-1, 0, 0), (8.0, 20.0), ("tilts down", "tilts downward", "looks down")),
}

_CHARACTER_DIRECTIONS = {
  "move_forward": "forward",
  "move_backward": "backward",
  "move_right": "to the right",
  "move_left": "to the left",
}
_CHARACTER_SIGNS = (
  (0, 0, 0),
  (0, 0, 1),
  (0, 0, -1),
  (1, 0, 0),
  (-1, 0, 0),
  (1, 0, 1),
  (1, 0, -1),
  (-1, 0, 1),
  (-1, 0, -1),
)
_CHARACTER_STATIC_PHRASES = ("stands still", "stays in place", "waits without moving")

# Sentence frames; {0}, {1}, {2} are the segments' verb phrases in order.
_CAMERA_CLAUSES = {
  1: ("the camera {0}", "throughout the shot, the camera {0}", "in this shot, the camera {0}"),
  2: ("the camera {0}, then {1}", "first the camera {0}, and then it {1}", "the camera {0} before it {1}"),
  3: (
    "the camera {0}, then {1}, and finally {2}",
    "first the camera {0}, then it {1}, and at the end it {2}",
    "the camera {0}, after that it {1}, and finally it {2}",
  ),
}
_CHARACTER_CLAUSES = {
  1: ("the character {0}",),
  2: ("the character {0}, then {1}", "the character first {0} and then {1}"),
  3: ("the character {0}, then {1}, and finally {2}",),
}
_CAPTIONS_ONE_CHARACTER_SEGMENT = ("while {char}, {cam}", "{cam}, while {char}", "{char}. {cam}")
_CAPTIONS_MANY_CHARACTER_SEGMENTS = ("{char}. {cam}", "{cam}. meanwhile, {char}")
_VIDEOID_ALPHABET = string.ascii_letters + string.digits + "_-"
_WORD = re.compile(r"\w+|[^\w\s]")  # what the caption tokenizer's whitespace+punctuation pre-tokenizer keeps


def _axis_of(motion_name: str) -> int:
  return int(np.flatnonzero(_CAMERA_AXIS_MOTIONS[motion_name].signs)[0])


def _camera_motion_table() -> dict[int, tuple[str, ...]]:
  """Class id → its axis-motion names in x, y, z order: static, the 6 single axes and the 12 two-axis pairs."""
  table = {0: ()}
  for count in (1, 2):
    for names in itertools.combinations(sorted(_CAMERA_AXIS_MOTIONS, key=_axis_of), count):
      if len({_axis_of(name) for name in names}) == count:
        signs = np.sum([_CAMERA_AXIS_MOTIONS[name].signs for name in names], axis=0)
        table[tagging.class_from_signs(signs)] = names
  return dict(sorted(table.items()))


_CAMERA_MOTIONS = _camera_motion_table()
CAMERA_MOTION_CLASSES: tuple[int, ...] = tuple(_CAMERA_MOTIONS)  # static (0) first; chance level 1/19
CHARACTER_MOTION_CLASSES: tuple[int, ...] = tuple(tagging.class_from_signs(signs) for signs in _CHARACTER_SIGNS)


def camera_phrases(camera_class: int) -> tuple[str, ...]:
  """Verb phrases ("pushes in", ...) that caption a camera segment of `camera_class`; static includes pans."""
  if camera_class not in _CAMERA_MOTIONS:
    raise ValueError(f"camera class {camera_class} is not generated; choose one of {CAMERA_MOTION_CLASSES}.")
  motions = [_CAMERA_AXIS_MOTIONS[name] for name in _CAMERA_MOTIONS[camera_class]]
  if not motions:
    return STATIC_CAMERA_PHRASES + tuple(phrase for pan in _PANS.values() for phrase in pan.phrases)
  if len(motions) == 1:
    return motions[0].phrases
  first, second = motions
  return (
    f"{first.phrases[0]} and {second.phrases[0]}",
    f"{first.phrases[0]} while {second.gerund}",
    f"{second.phrases[0]} while {first.gerund}",
    f"moves {first.direction} and {second.direction} at once",
  )


def character_phrases(character_class: int) -> tuple[str, ...]:
  """Verb phrases ("walks to the right", ...) that caption a character segment of `character_class`."""
  if character_class not in CHARACTER_MOTION_CLASSES:
    raise ValueError(f"character class {character_class} is not generated; choose one of {CHARACTER_MOTION_CLASSES}.")
  if character_class == 0:
    return _CHARACTER_STATIC_PHRASES
  # E.T. names list x before z; captions say "forward and to the right".
  parts = reversed(tagging.CHARACTER_CLASS_NAMES[character_class].split("-"))
  direction = " and ".join(_CHARACTER_DIRECTIONS[part] for part in parts)
  return (f"walks {direction}", f"moves {direction}", f"heads {direction}")


def caption_vocabulary() -> list[str]:
  """Every word or punctuation mark that can occur in a caption, lowercased and sorted."""
  texts = [phrase for cls in CAMERA_MOTION_CLASSES for phrase in camera_phrases(cls)]
  texts += [phrase for cls in CHARACTER_MOTION_CLASSES for phrase in character_phrases(cls)]
  for frames in (
    *_CAMERA_CLAUSES.values(),
    *_CHARACTER_CLAUSES.values(),
    _CAPTIONS_ONE_CHARACTER_SEGMENT,
    _CAPTIONS_MANY_CHARACTER_SEGMENTS,
  ):
    texts += [re.sub(r"\{\w*\}", " ", frame) for frame in frames]
  return sorted({word for text in texts for word in _WORD.findall(text.lower())})


def _check_identity(subset: str, split: str, index: int) -> tuple[int, int]:
  if subset not in SUBSETS:
    raise ValueError(f"Unknown subset {subset!r}; choose one of {SUBSETS}.")
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
  if index < 0:
    raise ValueError(f"index={index} is negative; sample indices start at 0.")
  return SUBSETS.index(subset), SPLITS.index(split)


def _frame_range(subset: str, max_frames: int, min_frames: int | None) -> tuple[int, int]:
  """(min_frames, max_frames), checked; None → the shortest length that fits the subset's segments."""
  shortest = MIN_SEGMENT_STEPS * (1 if subset == "pure" else 2) + 1
  min_frames = shortest if min_frames is None else min_frames
  if not shortest <= min_frames <= max_frames <= camera.MAX_FRAMES:
    raise ValueError(
      f"Need {shortest} <= min_frames <= max_frames <= {camera.MAX_FRAMES} for subset {subset!r} "
      f"(segments last >= {MIN_SEGMENT_STEPS} steps); got min_frames={min_frames}, "
      f"max_frames={max_frames}."
    )
  return min_frames, max_frames


def _pick(rng, options):
  return options[int(rng.integers(len(options)))]


def _smoothstep(x):
  x = np.clip(x, 0.0, 1.0)
  return x * x * (3.0 - 2.0 * x)


def _segment_lengths(rng, num_steps: int, num_segments: int) -> np.ndarray:
  """(num_segments,) step counts, each >= MIN_SEGMENT_STEPS, summing to num_steps."""
  spare = num_steps - MIN_SEGMENT_STEPS * num_segments
  cuts = np.sort(rng.integers(0, spare + 1, size=num_segments - 1))
  return MIN_SEGMENT_STEPS + np.diff(np.concatenate([[0], cuts, [spare]]))


def _draw_classes(rng, choices, num_segments: int) -> list[int]:
  """Uniform class per segment, never repeating the previous segment's class."""
  classes = [_pick(rng, choices)]
  for _ in range(num_segments - 1):
    classes.append(_pick(rng, [c for c in choices if c != classes[-1]]))
  return classes


def _ease_envelope(lengths) -> np.ndarray:
  """(num_steps,) speed factor in (0, 1]: smooth ramps over _EASE_STEPS at internal segment boundaries."""
  envelopes = []
  for k, length in enumerate(lengths):
    step = np.arange(length) + 0.5
    envelope = np.ones(length)
    if k > 0:
      envelope = np.minimum(envelope, _smoothstep(step / _EASE_STEPS))
    if k < len(lengths) - 1:
      envelope = np.minimum(envelope, _smoothstep(step[::-1] / _EASE_STEPS))
    envelopes.append(envelope)
  return np.concatenate(envelopes)


def _camera_trajectory(rng, classes, lengths) -> tuple[np.ndarray, list[str | None]]:
  """Camera-to-world poses (N, 3, 4), N = sum(lengths) + 1, and each segment's pan name (or None)."""
  num_steps = int(np.sum(lengths))
  velocity = np.zeros((num_steps, 3))  # camera frame of the step's first frame, units/s
  rotation = np.empty((num_steps + 1, 3, 3))  # camera-to-world rotation of every frame
  rotation[0] = np.eye(3)
  pans = []
  for camera_class, start, length in zip(classes, np.cumsum(lengths) - lengths, lengths):
    steps = slice(start, start + length)
    pan_name = None
    if camera_class == 0 and rng.random() < 0.5:  # half of the static segments pan or tilt
      pan_name = _pick(rng, tuple(_PANS))
    if pan_name is not None:  # about the camera's own axis, so the segment's rotations compose by angle
      pan = _PANS[pan_name]
      angles = np.deg2rad(rng.uniform(*pan.degrees)) * _smoothstep(np.arange(1, length + 1) / length)
      turned = Rotation.from_rotvec(angles[:, None] * np.array(pan.rotation_axis, float)).as_matrix()
      rotation[start + 1 : start + length + 1] = rotation[start] @ turned
    else:
      rotation[start + 1 : start + length + 1] = rotation[start]
      if camera_class != 0:
        signs = np.sum([_CAMERA_AXIS_MOTIONS[name].signs for name in _CAMERA_MOTIONS[camera_class]], axis=0)
        speeds = rng.uniform(*_CAMERA_SPEED, size=3)
        speeds = np.maximum(speeds, _MIN_AXIS_SPEED_RATIO * np.max(speeds[signs != 0]))
        velocity[steps] = signs * speeds
    pans.append(pan_name)
  velocity = velocity * _ease_envelope(lengths)[:, None] + rng.normal(0.0, _JITTER_STD, velocity.shape)

  start_position = (rng.uniform(-0.5, 0.5), rng.uniform(-0.6, -0.1), -rng.uniform(1.0, 3.0))
  world_steps = np.einsum("tij,tj->ti", rotation[:-1], velocity) / camera.FPS
  position = start_position + np.concatenate([np.zeros((1, 3)), np.cumsum(world_steps, axis=0)])
  return np.concatenate([rotation, position[:, :, None]], axis=2), pans


def _character_trajectory(rng, classes, lengths) -> np.ndarray:
  """World positions (N, 3), N = sum(lengths) + 1: from the origin on the x–z ground plane; y bobs while walking."""
  segment_velocity = []
  for character_class in classes:
    signs = np.array(_CHARACTER_SIGNS[CHARACTER_MOTION_CLASSES.index(character_class)], float)
    if not signs.any():
      segment_velocity.append(np.zeros(3))
      continue
    jitter = _HEADING_JITTER_DEG[int(np.abs(signs).sum())]
    heading = np.arctan2(signs[0], signs[2]) + np.deg2rad(rng.uniform(-jitter, jitter))
    segment_velocity.append(rng.uniform(*_CHARACTER_SPEED) * np.array([np.sin(heading), 0.0, np.cos(heading)]))
  velocity = np.repeat(segment_velocity, lengths, axis=0)
  for k, boundary in enumerate(np.cumsum(lengths)[:-1]):  # smooth starts, stops and turns
    steps = np.arange(boundary - _TURN_STEPS // 2, boundary + _TURN_STEPS // 2)
    weight = _smoothstep((steps - steps[0] + 0.5) / _TURN_STEPS)[:, None]
    velocity[steps] = (1.0 - weight) * segment_velocity[k] + weight * segment_velocity[k + 1]
  position = np.concatenate([np.zeros((1, 3)), np.cumsum(velocity, axis=0) / camera.FPS])
  walking = np.concatenate([[0.0], np.linalg.norm(velocity, axis=1)]) / _CHARACTER_SPEED[1]
  frames = np.arange(len(position))
  position[:, 1] = _BOB_HEIGHT * walking * np.sin(2.0 * np.pi * _BOB_HZ * frames / camera.FPS)
  return position


def _sentences(text: str) -> str:
  """Capitalises each '. '-separated sentence and ends the text with a period."""
  return ". ".join(sentence[0].upper() + sentence[1:] for sentence in text.split(". ")) + "."


def _captions(rng, cam_classes, pans, char_classes) -> tuple[str, str]:
  """(caption, caption_cam): camera + character, and camera only."""
  cam_words = [
    _pick(rng, _PANS[pan].phrases if pan else STATIC_CAMERA_PHRASES if cls == 0 else camera_phrases(cls))
    for cls, pan in zip(cam_classes, pans)
  ]
  cam = _pick(rng, _CAMERA_CLAUSES[len(cam_classes)]).format(*cam_words)
  char_words = [_pick(rng, character_phrases(cls)) for cls in char_classes]
  char = _pick(rng, _CHARACTER_CLAUSES[len(char_classes)]).format(*char_words)
  frames = _CAPTIONS_ONE_CHARACTER_SEGMENT if len(char_classes) == 1 else _CAPTIONS_MANY_CHARACTER_SEGMENTS
  return _sentences(_pick(rng, frames).format(cam=cam, char=char)), _sentences(cam)


def _sample_id(rng) -> str:
  """E.T.-style '{year}_{videoid}_{shot:05d}_{chunk:05d}' with a random 11-character YouTube-like videoid."""
  videoid = "".join(_pick(rng, _VIDEOID_ALPHABET) for _ in range(11))
  return f"{2011 + int(rng.integers(9))}_{videoid}_{int(rng.integers(1, 100)):05d}_{int(rng.integers(5)):05d}"


def generate_sample(
  seed: int, subset: str, split: str, index: int, max_frames: int = camera.MAX_FRAMES, min_frames: int | None = None
) -> dict:
  """One sample, a pure function of its arguments; N frames uniform in [min_frames, max_frames].

  Returns id str; camera_pose (N, 3, 4) float64 camera-to-world; char_pos (N, 3) float64 world;
  cam_segments, char_segments (N−1,) int64 true class per velocity step; cam_classes tuple of the
  caption's camera classes in order; caption str (character + camera); caption_cam str (camera only);
  intrinsics (4,) float32 [fx, fy, cx, cy] in pixels.
  min_frames None → the shortest length the subset allows (41 pure, 81 mixed).
  """
  subset_id, split_id = _check_identity(subset, split, index)
  min_frames, max_frames = _frame_range(subset, max_frames, min_frames)
  rng = np.random.default_rng([seed, subset_id, split_id, index])
  sample_id = _sample_id(rng)
  num_steps = int(rng.integers(min_frames, max_frames + 1)) - 1
  most_segments = min(MAX_SEGMENTS["mixed"], num_steps // MIN_SEGMENT_STEPS)
  num_cam_segments = 1 if subset == "pure" else int(rng.integers(2, most_segments + 1))
  cam_classes = _draw_classes(rng, CAMERA_MOTION_CLASSES, num_cam_segments)
  cam_lengths = _segment_lengths(rng, num_steps, num_cam_segments)
  camera_pose, pans = _camera_trajectory(rng, cam_classes, cam_lengths)
  char_classes = _draw_classes(rng, CHARACTER_MOTION_CLASSES, int(rng.integers(1, most_segments + 1)))
  char_lengths = _segment_lengths(rng, num_steps, len(char_classes))
  char_pos = _character_trajectory(rng, char_classes, char_lengths)
  caption, caption_cam = _captions(rng, cam_classes, pans, char_classes)
  width, height = _pick(rng, _IMAGE_SIZES)
  focal = width * rng.uniform(0.9, 1.6)
  return {
    "id": sample_id,
    "camera_pose": camera_pose,
    "char_pos": char_pos,
    "cam_segments": np.repeat(cam_classes, cam_lengths).astype(np.int64),
    "char_segments": np.repeat(char_classes, char_lengths).astype(np.int64),
    "cam_classes": tuple(cam_classes),
    "caption": caption,
    "caption_cam": caption_cam,
    "intrinsics": np.array([focal, focal, width / 2, height / 2], np.float32),
  }


class EmbeddedET:
  """Grain RandomAccessDataSource: item i is generate_sample(seed, subset, split, i) as padded model features."""

  def __init__(
    self,
    subset: str,
    split: str,
    size: int,
    seed: int = 0,
    max_frames: int = camera.MAX_FRAMES,
    min_frames: int | None = None,
    max_segments: int = MAX_SEGMENTS["mixed"],
  ):
    _check_identity(subset, split, 0)
    _frame_range(subset, max_frames, min_frames)
    if size < 0:
      raise ValueError(f"EmbeddedET size={size} is negative.")
    if max_segments < MAX_SEGMENTS[subset]:
      raise ValueError(
        f"max_segments={max_segments} cannot hold subset {subset!r}'s up to {MAX_SEGMENTS[subset]} camera segments."
      )
    self.subset, self.split, self.size, self.seed = subset, split, size, seed
    self.max_frames, self.min_frames, self.max_segments = max_frames, min_frames, max_segments

  def __len__(self) -> int:
    return self.size

  def __repr__(self) -> str:
    return (
      f"EmbeddedET(subset={self.subset!r}, split={self.split!r}, size={self.size}, seed={self.seed}, "
      f"max_frames={self.max_frames}, min_frames={self.min_frames}, max_segments={self.max_segments})"
    )

  def __getitem__(self, index: int) -> dict:
    """T = max_frames. Returns camera_traj (T, 9) float32 (encode_camera, zero-padded), char_traj (T, 3) float32
    (encode_character, zero-padded), mask (T,) bool, num_frames () int32, cam_classes (max_segments,) int32
    padded with PAD_CLASS, caption, caption_cam, id (str)."""
    if not 0 <= index < self.size:
      raise ValueError(f"index {index} is out of range for {self!r}; valid indices are 0..{self.size - 1}.")
    sample = generate_sample(self.seed, self.subset, self.split, int(index), self.max_frames, self.min_frames)
    cam_classes = np.full((self.max_segments,), tagging.PAD_CLASS, np.int32)
    cam_classes[: len(sample["cam_classes"])] = sample["cam_classes"]
    return {
      **camera.padded_features(sample["camera_pose"], sample["char_pos"], self.max_frames),
      "cam_classes": cam_classes,
      "caption": sample["caption"],
      "caption_cam": sample["caption_cam"],
      "id": sample["id"],
    }
