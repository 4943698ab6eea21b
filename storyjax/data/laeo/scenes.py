"""The embedded procedural LAEO data (facts laeo-scam A.1, A.2, A.4, A.5, A.7): 3-D scenes of heads, labels by
geometry, rendered head crops and head maps, and episodes with planted friendships for the social analysis.

Geometry. Camera coordinates in metres: x right, y down, z depth (> 0); a pinhole camera with its principal point at
the image centre and `focal` pixels of focal length; pixel i spans [i, i + 1). A head is a sphere of HEAD_RADIUS
around its centre. Its orientation is (yaw, pitch) in radians: yaw 0 faces the camera (gaze −z), +π/2 faces +x
(image right), ±π shows the back of the head; pitch > 0 looks up (−y). So gaze = (sin yaw · cos pitch, −sin pitch,
−cos yaw · cos pitch).

Labels (`laeo_labels`). i looks at j when the angle between i's gaze and p_j − p_i is at most GAZE_TOLERANCE plus
the angular radius asin(r / |p_j − p_i|) of j's head; i and j are LAEO when each looks at the other and no third
head k blocks them: k blocks when its centre is within OCCLUSION_FACTOR · r of the segment p_i p_j at a point
strictly between them (projection parameter 0 < t < 1).

Crops (`render_track`). Rendered directly at 64 × 64, not cut from a full frame: a shaded sphere filling the
detector's box as `square_box`'s 5 % enlargement leaves it, seen along the viewing ray from the camera to the head
(so a head at the image's edge turned towards the camera looks frontal), with skin on the face side, hair on the
back and top (HAIR_STYLES), two eyes, a nose that sticks out at the silhouette in profile and a mouth, each hidden
when it faces away. Per track nuisance: a textured background, the light's direction and strength, brightness,
the detector box's scale and offset jitter (per track and per frame), pixel noise, and at rate DEGRADE_RATE a
resolution loss (A.4's synthetic pairs do the same). Colours are RGB.

Examples (`LaeoSceneSource`). Each example first picks, with probability 1/2 each, the positive (planted mutual
gaze) or the negative group of categories (CATEGORY_GROUPS), then a category uniformly within that group among the
requested ones; "occluded" belongs to both groups and flips its own coin (third head blocking the pair or not). The
category lays out the pair (persons 0 and 1) and any bystanders at the middle frame, then every head drifts and
turns a little (smooth random walks, `_wander`) before and after it; scenes whose heads leave the image or touch
are drawn again. The label is always `laeo_labels` at the middle frame window // 2, never the category's intent.

Episodes (`sample_episode`). C characters with a planted symmetric friendship in [0, 1] (FRIENDSHIP_LEVELS) meet in
shots of 2–4 people standing in a conversation circle; each person looks at another present person with weight
GAZE_BASE_WEIGHT + GAZE_FRIENDSHIP_WEIGHT · friendship, or elsewhere (nobody, the camera, the floor) with weight
ELSEWHERE_WEIGHT, for a HOLD_FRAMES-long spell, then chooses again; heads turn smoothly towards their targets, so
the fraction of frames a pair is LAEO grows with its friendship (`laeo_frame_fraction`).
"""

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import math

import numpy as np
import scipy.signal

from storyjax.data.laeo.head_map import CROP_SIZE, draw_head_map, left_first, resize_bilinear
from storyjax.errors import ConfigError, DataError

IMAGE_SIZE = (180, 320)  # (H, W) pixels
FOCAL_PER_WIDTH = 0.9  # focal length in pixels per image width: a ≈ 58° horizontal field of view
HEAD_RADIUS = 0.12  # metres
WINDOW = 10  # frames per example (A.1)

GAZE_TOLERANCE = math.radians(10.0)  # gaze-to-head angle allowed beyond the other head's angular radius
OCCLUSION_FACTOR = 1.0  # a third head blocks when its centre is within this many head radii of the segment
MIN_SEPARATION = 0.4  # metres between any two head centres, in every frame
DEPTH_RANGE = (2.0, 5.5)  # metres, where heads are placed
HEIGHT_RANGE = (-0.3, 0.35)  # metres, head centres' y (down) relative to the camera
BOX_MARGIN = 2  # pixels every head box keeps from the image border
PLANT_NOISE = math.radians(2.0)  # std of the error of a planted look at someone (clipped at 2.5 std)

CATEGORIES = (
  "random",  # 2–4 people anywhere, each looking at a random other person (1/2) or anywhere
  "mutual",  # the pair looks at each other from anywhere, 0–2 bystanders
  "one_looks",  # person 0 looks at person 1, who looks 35–180° away from 0
  "occluded",  # the pair faces each other 1.4–2.6 m apart; a third head blocks the segment or stands clear
  "profiles_facing",  # two profiles (|yaw| 80–100° to the viewing ray) facing each other (A.4 positive)
  "oblique_facing",  # a head at 35–55° facing one at 125–145° (A.4 positive)
  "profiles_away",  # two profiles facing away from each other (A.4 negative)
  "same_direction",  # both turned the same way ± 8° (A.4 negative)
  "frontal_profile",  # one frontal (|yaw| ≤ 10°), one profile facing towards or away (A.4 negative)
  "frontal_frontal",  # both frontal (A.4 negative)
  "vertical_offset",  # facing each other in yaw but one 28–40° above the other's level gaze (A.4 negative)
)
CATEGORY_GROUPS = {
  "positive": ("mutual", "occluded", "profiles_facing", "oblique_facing"),
  "negative": (
    "random",
    "one_looks",
    "occluded",
    "profiles_away",
    "same_direction",
    "frontal_profile",
    "frontal_frontal",
    "vertical_offset",
  ),
}
PAIR_PARALLAX = 0.4  # most metres apart per metre of depth for a side-by-side pair (0.4: 22° apart as seen)
BYSTANDER_RATE = 0.3  # chance of one bystander in the two-person categories (A.4's), so map channel 2 is no tell
_MAX_TRIES = 100

HAIR_STYLES = ("short", "long", "receding")
# Per style (hairline, back edge, nape): hair covers the head where n·up > hairline, and where n·face < back edge
# with n·up > nape (n: the surface normal; up, face: the head's axes).
_HAIR_SHAPES = np.array([(0.5, -0.15, -0.7), (0.4, 0.3, -1.1), (0.8, -0.1, -0.6)], np.float32)
_SKIN_LIGHT, _SKIN_DARK = np.array([0.95, 0.8, 0.7]), np.array([0.35, 0.22, 0.15])
_HAIR_COLOURS = np.array(
  [(0.08, 0.07, 0.06), (0.25, 0.15, 0.08), (0.45, 0.3, 0.15), (0.85, 0.7, 0.4), (0.6, 0.6, 0.6), (0.6, 0.25, 0.1)]
)

# Face features as directions on the head sphere, in the head's frame (face, up, side).
_EYE_SPREAD, _EYE_RAISE, _EYE_SIZE = math.radians(28.0), math.radians(6.0), math.radians(7.0)
_NOSE_DROP, _NOSE_BASE, _NOSE_TIP, _NOSE_WIDTH = math.radians(14.0), 0.9, 1.3, 0.1  # lengths in head radii
_MOUTH_DROP, _MOUTH_WIDTH, _MOUTH_THICKNESS = math.radians(40.0), math.radians(20.0), 0.035
_HAIR_EDGE, _FEATURE_EDGE = 0.08, 0.004  # softness of the hair's and the eyes' and mouth's edges, in cosine units

SPHERE_RADIUS_PX = CROP_SIZE / 2 / 1.05  # the head fills the detector box, which square_box enlarges by 5 %
DEGRADE_RATE = 0.1  # tracks rendered at 32–48 px and resized back (A.4)
_PIXELS = np.arange(CROP_SIZE, dtype=np.float32) + 0.5  # pixel centres
_CLEAN_LIGHT = np.array([0.0, -0.5, -1.0]) / math.sqrt(1.25)  # from above the camera

FRIENDSHIP_LEVELS = {"strong": (0.2, 0.6, 1.0), "weak": (0.3, 0.1, 0.35)}  # share of pairs, value range; rest 0
GAZE_BASE_WEIGHT, GAZE_FRIENDSHIP_WEIGHT, ELSEWHERE_WEIGHT = 0.05, 4.0, 1.0
HOLD_FRAMES = (6, 20)  # frames a gaze target is held, inclusive range
TURN_RATE = 0.6  # fraction of the remaining angle to a new target turned per frame


@dataclasses.dataclass(frozen=True, eq=False)
class Appearance:
  """Per person: skin (N, 3) and hair (N, 3) RGB in [0, 1], hair_style (N,) int index into HAIR_STYLES."""

  skin: np.ndarray
  hair: np.ndarray
  hair_style: np.ndarray

  def take(self, people) -> "Appearance":
    """The appearance of the persons `people` (K,) → K persons."""
    people = np.asarray(people)
    return Appearance(self.skin[people], self.hair[people], self.hair_style[people])


@dataclasses.dataclass(frozen=True, eq=False)
class Scene:
  """F frames of N heads (conventions in the module docstring): positions (F, N, 3) metres, yaw and pitch (F, N)
  radians, appearance of N persons, image_size (H, W) pixels, focal pixels, head_radius metres."""

  positions: np.ndarray
  yaw: np.ndarray
  pitch: np.ndarray
  appearance: Appearance
  image_size: tuple[int, int]
  focal: float
  head_radius: float = HEAD_RADIUS

  def __post_init__(self):
    frames, people = self.positions.shape[:2]
    shapes = (self.positions.shape, self.yaw.shape, self.pitch.shape, self.appearance.skin.shape[:1])
    if shapes != ((frames, people, 3), (frames, people), (frames, people), (people,)):
      raise DataError(
        f"scene arrays disagree: positions {shapes[0]}, yaw {shapes[1]}, pitch {shapes[2]}, appearance of "
        f"{shapes[3]} persons; expected (F, N, 3), (F, N), (F, N) and N persons"
      )
    if np.any(self.positions[..., 2] <= self.head_radius):
      raise DataError("every head must lie in front of the camera (depth z > head_radius)")

  @property
  def num_frames(self) -> int:
    return self.positions.shape[0]

  @property
  def num_people(self) -> int:
    return self.positions.shape[1]


@dataclasses.dataclass(frozen=True, eq=False)
class Shot:
  """A scene and the episode character played by each of its N persons, characters (N,) int."""

  scene: Scene
  characters: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Episode:
  """friendship (C, C) symmetric in [0, 1], zero diagonal; appearance of the C characters; the shots."""

  friendship: np.ndarray
  appearance: Appearance
  shots: tuple[Shot, ...]


def camera_focal(image_size: tuple[int, int]) -> float:
  """The focal length in pixels of an (H, W) image."""
  return FOCAL_PER_WIDTH * image_size[1]


def head_axes(yaw, pitch) -> tuple[np.ndarray, np.ndarray]:
  """yaw, pitch (...) → the head's gaze (face) direction and up direction (..., 3), unit and orthogonal."""
  yaw, pitch = np.asarray(yaw, np.float64), np.asarray(pitch, np.float64)
  gaze = np.stack([np.sin(yaw) * np.cos(pitch), -np.sin(pitch), -np.cos(yaw) * np.cos(pitch)], -1)
  up = np.stack([-np.sin(yaw) * np.sin(pitch), -np.cos(pitch), np.cos(yaw) * np.sin(pitch)], -1)  # ∂gaze/∂pitch
  return gaze, up


def gaze_directions(scene: Scene) -> np.ndarray:
  """(F, N, 3) unit gaze vectors."""
  return head_axes(scene.yaw, scene.pitch)[0]


def head_boxes(scene: Scene) -> np.ndarray:
  """(F, N, 4) (x1, y1, x2, y2) inclusive pixel boxes of the projected head spheres, 2·focal·r/z pixels wide."""
  return _project(scene.positions, scene.image_size, scene.focal, scene.head_radius)


def _project(positions: np.ndarray, image_size: tuple[int, int], focal: float, radius: float) -> np.ndarray:
  """Head centres (..., 3) → boxes (..., 4) as `head_boxes`."""
  height, width = image_size
  depth = positions[..., 2]
  centre_x = focal * positions[..., 0] / depth + width / 2
  centre_y = focal * positions[..., 1] / depth + height / 2
  half = focal * radius / depth
  return np.stack([centre_x - half, centre_y - half, centre_x + half - 1, centre_y + half - 1], -1)


def laeo_labels(
  scene: Scene, gaze_tolerance: float = GAZE_TOLERANCE, occlusion_factor: float = OCCLUSION_FACTOR
) -> np.ndarray:
  """(F, N, N) bool, symmetric, False on the diagonal: pairs Looking At Each Other (rule in the module docstring)."""
  positions, radius = scene.positions, scene.head_radius
  offsets = positions[:, None, :, :] - positions[:, :, None, :]  # [f, i, j] = p_j − p_i
  distance = np.linalg.norm(offsets, axis=-1)
  safe_distance = np.maximum(distance, 1e-9)
  cosine = np.einsum("fid,fijd->fij", gaze_directions(scene), offsets) / safe_distance
  angle = np.arccos(np.clip(cosine, -1.0, 1.0))
  looks_at = angle <= gaze_tolerance + np.arcsin(np.clip(radius / safe_distance, 0.0, 1.0))
  mutual = looks_at & looks_at.transpose(0, 2, 1)
  along = np.einsum("fijd,fikd->fijk", offsets, offsets) / safe_distance[..., None] ** 2  # where k is on i→j
  closest = positions[:, :, None, None, :] + along[..., None] * offsets[:, :, :, None, :]
  miss = np.linalg.norm(positions[:, None, None, :, :] - closest, axis=-1)  # [f, i, j, k]
  people = np.arange(scene.num_people)
  third = (people[:, None, None] != people[None, None, :]) & (people[None, :, None] != people[None, None, :])
  blocked = np.any(third & (along > 0) & (along < 1) & (miss < occlusion_factor * radius), axis=-1)
  return mutual & ~blocked & ~np.eye(scene.num_people, dtype=bool)


def sample_appearance(rng: np.random.Generator, count: int) -> Appearance:
  """`count` random persons: a skin tone between light and dark, one of six hair colours, a hair style."""
  tone = rng.uniform(0, 1, (count, 1))
  skin = (1 - tone) * _SKIN_LIGHT + tone * _SKIN_DARK + rng.normal(0, 0.02, (count, 3))
  hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS), size=count)] + rng.normal(0, 0.03, (count, 3))
  style = rng.integers(len(HAIR_STYLES), size=count)
  return Appearance(np.clip(skin, 0, 1).astype(np.float32), np.clip(hair, 0, 1).astype(np.float32), style)


# Rendering.


@dataclasses.dataclass(frozen=True)
class _Nuisance:
  """How K crops of one track are rendered: background (3, 64, 64) channels first; per crop light (K, 3)
  (view frame), ambient, diffuse, gain (K,), sphere centre (K, 2) and radius (K,) in crop pixels; pixel noise std;
  degrade_size (0 = off)."""

  background: np.ndarray
  light: np.ndarray
  ambient: np.ndarray
  diffuse: np.ndarray
  gain: np.ndarray
  centre: np.ndarray
  radius: np.ndarray
  noise_std: float = 0.0
  degrade_size: int = 0


def _clean_nuisance(count: int) -> _Nuisance:
  """Grey background, light from above the camera, the head centred and filling the box, no noise."""
  return _Nuisance(
    background=np.full((3, CROP_SIZE, CROP_SIZE), 0.5, np.float32),
    light=np.tile(_CLEAN_LIGHT, (count, 1)),
    ambient=np.full(count, 0.35),
    diffuse=np.full(count, 0.65),
    gain=np.ones(count),
    centre=np.full((count, 2), CROP_SIZE / 2),
    radius=np.full(count, SPHERE_RADIUS_PX),
  )


def _sample_nuisance(rng: np.random.Generator, count: int) -> _Nuisance:
  """A track's random nuisance (module docstring), slowly varying over its `count` frames."""
  grid_x, grid_y = _PIXELS[None, :] / CROP_SIZE - 0.5, _PIXELS[:, None] / CROP_SIZE - 0.5
  angle, frequency = rng.uniform(0, np.pi), rng.uniform(3, 25)
  stripes = np.sin(frequency * (grid_x * np.cos(angle) + grid_y * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
  colour = (rng.uniform(0.05, 0.95, 3), rng.normal(0, 0.3, 3), rng.normal(0, 0.3, 3), rng.uniform(0.3, 1, 3))
  channel = (slice(None), None, None)
  background = (
    colour[0][channel]
    + grid_x * colour[1][channel]
    + grid_y * colour[2][channel]
    + stripes * rng.uniform(0, 0.15) * colour[3][channel]
  )
  light = np.array([rng.uniform(-0.7, 0.7), rng.uniform(-0.9, 0.2), -rng.uniform(0.3, 1.0)])
  light = light + rng.normal(0, 0.03, (count, 3))
  scale = rng.uniform(0.92, 1.08) * rng.normal(1, 0.02, count)
  centre = CROP_SIZE / 2 + rng.normal(0, 1.5, 2) + rng.normal(0, 0.7, (count, 2))
  return _Nuisance(
    background=np.clip(background, 0, 1).astype(np.float32),
    light=light / np.linalg.norm(light, axis=-1, keepdims=True),
    ambient=np.full(count, rng.uniform(0.2, 0.5)),
    diffuse=np.full(count, rng.uniform(0.45, 0.85)),
    gain=rng.uniform(0.75, 1.2) * rng.normal(1, 0.03, count),
    centre=centre,
    radius=SPHERE_RADIUS_PX * scale,
    noise_std=float(rng.uniform(0, 0.03)),
    degrade_size=int(rng.choice([32, 40, 48])) if rng.random() < DEGRADE_RATE else 0,
  )


@functools.cache
def _noise_bank() -> np.ndarray:
  """(64, 3, 64, 64) float32 standard normal pixel noise, fixed: each crop takes one at random (drawing fresh noise
  would take most of the rendering time)."""
  return np.random.default_rng(0).standard_normal((64, 3, CROP_SIZE, CROP_SIZE), dtype=np.float32)


def _ramp(value, edge: float = _HAIR_EDGE):
  """Soft step from 0 to 1 over ±edge/2 around 0 (overwrites `value`)."""
  return np.clip(value * (1 / edge) + 0.5, 0.0, 1.0, out=value)


def _render_crops(face, up, skin, hair, hair_style: int, nuisance: _Nuisance, rng=None) -> np.ndarray:
  """face, up (K, 3) head axes in the view frame (x right, y down, z along the viewing ray) → (K, 64, 64, 3)
  float32 in [0, 1]; `rng` draws the pixel noise."""
  face, up = face.astype(np.float32), up.astype(np.float32)
  radius = nuisance.radius.astype(np.float32)[:, None, None]
  centre = nuisance.centre.astype(np.float32)
  across = (_PIXELS[None, None, :] - centre[:, 0, None, None]) / radius  # (K, 1, 64) normal x
  down = (_PIXELS[None, :, None] - centre[:, 1, None, None]) / radius  # (K, 64, 1) normal y
  squared = across**2 + down**2
  toward = -np.sqrt(np.maximum(1 - squared, 0))  # normal z (the visible hemisphere faces the camera)

  def along(direction):
    """n · direction over the crop, direction (K, 3) → (K, 64, 64)."""
    direction = direction.astype(np.float32)[:, :, None, None]
    return across * direction[:, 0] + down * direction[:, 1] + toward * direction[:, 2]

  side = np.cross(face, up)
  facing, upness = along(face), along(up)
  hairline, back_edge, nape = _HAIR_SHAPES[hair_style]
  hair_weight = np.maximum(_ramp(upness - hairline), _ramp(back_edge - facing) * _ramp(upness - nape))
  skin, hair = (np.asarray(colour, np.float32)[:, None, None, None] for colour in (skin, hair))
  albedo = skin + hair_weight * (hair - skin)  # (3, K, 64, 64): channels first, as broadcasting is fast there
  eye_centre = math.cos(_EYE_RAISE) * face + math.sin(_EYE_RAISE) * up
  eyes = np.maximum(
    *(
      _ramp(
        along(math.cos(_EYE_SPREAD) * eye_centre + sign * math.sin(_EYE_SPREAD) * side) - math.cos(_EYE_SIZE),
        _FEATURE_EDGE,
      )
      for sign in (1, -1)
    )
  )
  mouth = math.cos(_MOUTH_DROP) * face - math.sin(_MOUTH_DROP) * up
  mouth_up = math.sin(_MOUTH_DROP) * face + math.cos(_MOUTH_DROP) * up
  lips = _ramp(along(mouth) - math.cos(_MOUTH_WIDTH), _FEATURE_EDGE) * _ramp(
    _MOUTH_THICKNESS - np.abs(along(mouth_up)), 0.02
  )
  ambient, diffuse = (values.astype(np.float32)[:, None, None] for values in (nuisance.ambient, nuisance.diffuse))
  shade = ambient + diffuse * np.maximum(along(nuisance.light), 0)
  head_alpha = np.clip((1 - np.sqrt(squared)) * radius + 0.5, 0, 1)
  # Each pixel: background · (1 − α) + albedo · shade · α, the eyes and mouth darkening the albedo.
  head_weight = head_alpha * shade * (1 - 0.85 * eyes) * (1 - 0.45 * lips)
  crops = nuisance.background[:, None] * (1 - head_alpha) + albedo * head_weight

  nose = math.cos(_NOSE_DROP) * face - math.sin(_NOSE_DROP) * up  # (K, 3)
  base, tip = _NOSE_BASE * nose, _NOSE_TIP * nose
  stem = (tip - base)[:, :, None, None]
  stem_length2 = np.maximum(stem[:, 0] ** 2 + stem[:, 1] ** 2, 1e-9)
  from_base_x, from_base_y = across - base[:, 0, None, None], down - base[:, 1, None, None]
  fraction = (from_base_x * stem[:, 0] + from_base_y * stem[:, 1]) / stem_length2
  # A nose seen end-on projects to a dot: take its tip, the part nearest the camera.
  fraction = np.where(stem_length2 < _NOSE_WIDTH**2, np.float32(1), np.clip(fraction, 0, 1))
  gap = np.hypot(from_base_x - fraction * stem[:, 0], from_base_y - fraction * stem[:, 1])
  visible = (squared >= 1) | (base[:, 2, None, None] + fraction * stem[:, 2] < toward)
  nose_alpha = np.clip((_NOSE_WIDTH - gap) * radius + 0.5, 0, 1) * visible
  nose_shade = nuisance.ambient + nuisance.diffuse * np.maximum(np.sum(nose * nuisance.light, -1), 0)
  nose_colour = 0.8 * skin * nose_shade.astype(np.float32)[:, None, None]
  crops += nose_alpha * (nose_colour - crops)

  crops *= nuisance.gain.astype(np.float32)[:, None, None]
  if nuisance.noise_std > 0:
    bank = _noise_bank()
    crops += np.float32(nuisance.noise_std) * bank[rng.integers(len(bank), size=len(face))].swapaxes(0, 1)
  crops = np.stack(list(np.clip(crops, 0, 1, out=crops)), -1)
  if nuisance.degrade_size:
    small = (nuisance.degrade_size, nuisance.degrade_size)
    crops = np.stack([resize_bilinear(resize_bilinear(crop, small), (CROP_SIZE, CROP_SIZE)) for crop in crops])
  return crops


def render_head(face_direction, up_direction, skin, hair, hair_style: int) -> np.ndarray:
  """One clean crop (64, 64, 3) float32 in [0, 1]: grey background, light from above the camera, no jitter.

  face_direction, up_direction (3,): the head's axes in the view frame (x right, y down, z along the viewing ray
  from the camera to the head; (0, 0, −1) faces the camera); skin, hair (3,) RGB; hair_style: index into HAIR_STYLES.
  """
  face = np.asarray(face_direction, np.float64).reshape(1, 3)
  up = np.asarray(up_direction, np.float64).reshape(1, 3)
  skin, hair = np.asarray(skin, np.float32), np.asarray(hair, np.float32)
  return _render_crops(face, up, skin, hair, int(hair_style), _clean_nuisance(1))[0]


def view_rotation(positions) -> np.ndarray:
  """positions (..., 3) → (..., 3, 3) rotations R with R·p/|p| = (0, 0, 1): a pan about y then a tilt about x, so the
  view frame keeps the camera's horizontal (no roll)."""
  positions = np.asarray(positions, np.float64)
  pan = np.arctan2(positions[..., 0], positions[..., 2])
  tilt = np.arctan2(positions[..., 1], np.hypot(positions[..., 0], positions[..., 2]))
  zeros, ones = np.zeros_like(pan), np.ones_like(pan)
  unpan = np.stack(
    [
      np.stack([np.cos(pan), zeros, -np.sin(pan)], -1),
      np.stack([zeros, ones, zeros], -1),
      np.stack([np.sin(pan), zeros, np.cos(pan)], -1),
    ],
    -2,
  )
  untilt = np.stack(
    [
      np.stack([ones, zeros, zeros], -1),
      np.stack([zeros, np.cos(tilt), -np.sin(tilt)], -1),
      np.stack([zeros, np.sin(tilt), np.cos(tilt)], -1),
    ],
    -2,
  )
  return untilt @ unpan


def render_track(scene: Scene, person: int, frames, rng: np.random.Generator | None = None) -> np.ndarray:
  """The head crops of `person` at `frames` (K,) → (K, 64, 64, 3) float32 in [0, 1]; with `rng`, one random
  nuisance for the track (module docstring), else the clean rendering of `render_head`."""
  frames = np.asarray(frames, np.int64).reshape(-1)
  if not 0 <= person < scene.num_people or np.any((frames < 0) | (frames >= scene.num_frames)):
    raise DataError(
      f"person {person} or frames {frames.tolist()} out of range for a scene of {scene.num_people} persons and "
      f"{scene.num_frames} frames"
    )
  face, up = head_axes(scene.yaw[frames, person], scene.pitch[frames, person])
  rotation = view_rotation(scene.positions[frames, person])
  face, up = np.einsum("kij,kj->ki", rotation, face), np.einsum("kij,kj->ki", rotation, up)
  nuisance = _clean_nuisance(len(frames)) if rng is None else _sample_nuisance(rng, len(frames))
  appearance = scene.appearance
  return _render_crops(
    face, up, appearance.skin[person], appearance.hair[person], int(appearance.hair_style[person]), nuisance, rng
  )


# Pairs: crops and head maps.


def pair_order(scene: Scene, first: int, second: int, frame: int) -> tuple[int, int]:
  """(left, right): `first` and `second` ordered by `left_first` of their squared boxes at `frame` (A.1)."""
  boxes = head_boxes(scene)[frame]
  return (first, second) if left_first(boxes[first], boxes[second], scene.image_size) else (second, first)


def head_maps(scene: Scene, left: int, right: int, frames) -> np.ndarray:
  """The pair's head maps at `frames` (K,) → (K, 64, 64, 3) float32 in [0, 1]: channel 0 = `left`, 1 = `right`,
  2 = every other head of the frame (A.2)."""
  boxes = head_boxes(scene)
  others = [person for person in range(scene.num_people) if person not in (left, right)]
  return np.stack(
    [draw_head_map(boxes[frame, [left, right]], boxes[frame, others], scene.image_size) / 255.0 for frame in frames]
  ).astype(np.float32)


def pair_window(
  scene: Scene, tracks: Mapping[int, np.ndarray], first: int, second: int, start: int, window: int
) -> dict:
  """The LAEO-Net++ inputs of persons `first`, `second` over frames [start, start + window).

  tracks: person → that person's crops over all F frames (F, 64, 64, 3) (`render_track`, `render_shot_tracks`).
  Left and right are decided at the middle frame start + window // 2 and kept for the whole window (A.1) → {"head_left",
  "head_right", "head_map": (window, 64, 64, 3) float32 in [0, 1], "left", "right": int32 persons}.
  """
  if start < 0 or start + window > scene.num_frames:
    raise DataError(f"window [{start}, {start + window}) does not fit the scene's {scene.num_frames} frames")
  left, right = pair_order(scene, first, second, start + window // 2)
  frames = np.arange(start, start + window)
  return {
    "head_left": tracks[left][frames],
    "head_right": tracks[right][frames],
    "head_map": head_maps(scene, left, right, frames),
    "left": np.int32(left),
    "right": np.int32(right),
  }


# Layouts of the categories, at the middle frame; the pair is persons 0 and 1.


class _Layout:
  """Head positions and orientations at one frame, built person by person."""

  def __init__(self, image_size: tuple[int, int]):
    self.image_size, self.focal = image_size, camera_focal(image_size)
    self.positions, self.yaw, self.pitch = [], [], []

  def add(self, position, yaw: float, pitch: float) -> int:
    self.positions.append(np.asarray(position, np.float64))
    self.yaw.append(float(yaw))
    self.pitch.append(float(pitch))
    return len(self.positions) - 1

  def look(self, person: int, target: int, rng: np.random.Generator) -> None:
    """Turns `person` towards `target`'s head, up to PLANT_NOISE."""
    yaw, pitch = _look(self.positions[person], self.positions[target])
    self.yaw[person], self.pitch[person] = yaw + _plant_error(rng), pitch + _plant_error(rng)

  def random_position(self, rng: np.random.Generator, depth_range=DEPTH_RANGE) -> np.ndarray:
    """A head centre (3,) at a depth in `depth_range` and a height in HEIGHT_RANGE, its box inside the image."""
    depth = rng.uniform(*depth_range)
    half_width = (self.image_size[1] / 2 - BOX_MARGIN) * depth / self.focal - HEAD_RADIUS
    half_height = (self.image_size[0] / 2 - BOX_MARGIN) * depth / self.focal - HEAD_RADIUS
    low, high = max(HEIGHT_RANGE[0], -half_height), min(HEIGHT_RANGE[1], half_height)
    return np.array([rng.uniform(-0.9, 0.9) * half_width, rng.uniform(low, high), depth])

  def add_bystanders(self, rng: np.random.Generator, count: int) -> None:
    """`count` people anywhere, each looking at a random present person (1/2) or anywhere."""
    for _ in range(count):
      person = self.add(self.random_position(rng), rng.uniform(-np.pi, np.pi), rng.normal(0, math.radians(10)))
      if rng.random() < 0.5:
        self.look(person, int(rng.integers(person)), rng)


def _plant_error(rng: np.random.Generator) -> float:
  return float(np.clip(rng.normal(0, PLANT_NOISE), -2.5 * PLANT_NOISE, 2.5 * PLANT_NOISE))


def _look(source, target) -> tuple[float, float]:
  """(yaw, pitch) of the gaze from `source` to `target` (3,)."""
  offset = np.asarray(target) - np.asarray(source)
  return float(np.arctan2(offset[0], -offset[2])), float(np.arctan2(-offset[1], np.hypot(offset[0], offset[2])))


def _facing_camera_yaw(position) -> float:
  """The yaw at which a head at `position` faces the camera: yaws relative to it are what its crop shows."""
  return float(np.arctan2(-position[0], position[2]))


def _step(position, yaw: float, distance: float, rise: float = 0.0) -> np.ndarray:
  """The point `distance` metres from `position` along the horizontal direction of `yaw`, `rise` metres higher."""
  return np.asarray(position) + np.array([distance * math.sin(yaw), -rise, -distance * math.cos(yaw)])


def _sideways_pair(
  layout: _Layout, rng: np.random.Generator, spread: float, distances=(0.7, 2.2), parallax: float = PAIR_PARALLAX
) -> None:
  """Persons 0 and 1 side by side as seen from the camera, facing it for now: their line within `spread` of
  perpendicular to the viewing ray of their midpoint, at most `parallax` · depth apart (PAIR_PARALLAX: each sees
  the other within ~12° of side-on)."""
  middle = layout.random_position(rng)
  direction = _facing_camera_yaw(middle) + rng.choice([-1, 1]) * (np.pi / 2 + rng.uniform(-spread, spread))
  distance = rng.uniform(distances[0], max(distances[0], min(distances[1], parallax * middle[2])))
  rise = rng.normal(0, 0.05)
  for half in (-0.5, 0.5):
    position = _step(middle, direction, half * distance, half * rise)
    layout.add(position, _facing_camera_yaw(position), rng.normal(0, math.radians(4)))


def _profile_yaw(layout: _Layout, person: int, yaw: float) -> float:
  """`yaw` moved to the nearest yaw that shows `person` in profile, 80–100° from facing the camera."""
  towards_camera = _facing_camera_yaw(layout.positions[person])
  relative = math.remainder(yaw - towards_camera, 2 * np.pi)
  magnitude = np.clip(abs(relative), math.radians(80), math.radians(100))
  return towards_camera + math.copysign(magnitude, relative)


def _plant_random(layout, rng):
  count = int(rng.integers(2, 5))
  for _ in range(count):
    layout.add(layout.random_position(rng), rng.uniform(-np.pi, np.pi), rng.normal(0, math.radians(10)))
  for person in range(count):
    if rng.random() < 0.5:
      layout.look(person, int(rng.choice([other for other in range(count) if other != person])), rng)


def _plant_mutual(layout, rng):
  first = layout.random_position(rng)
  second = _step(first, rng.uniform(-np.pi, np.pi), rng.uniform(0.8, 2.5), rng.normal(0, 0.08))
  layout.add(first, 0.0, 0.0)
  layout.add(second, 0.0, 0.0)
  layout.look(0, 1, rng)
  layout.look(1, 0, rng)
  layout.add_bystanders(rng, int(rng.integers(0, 3)))


def _plant_one_looks(layout, rng):
  _plant_mutual(layout, rng)
  layout.yaw[1] += rng.choice([-1, 1]) * rng.uniform(math.radians(35), np.pi)


def _plant_occluded(layout, rng):
  _sideways_pair(layout, rng, spread=math.radians(50), distances=(1.4, 2.6), parallax=np.inf)
  layout.look(0, 1, rng)
  layout.look(1, 0, rng)
  first, second = layout.positions[0], layout.positions[1]
  line = second - first
  level = np.array([-line[2], 0.0, line[0]]) / np.hypot(line[0], line[2])  # horizontal, across the line
  vertical = np.cross(line, level) / np.linalg.norm(line)
  if rng.random() < 0.5:  # blocks: on the segment, within 0.4 radii of it
    around = rng.uniform(0, 2 * np.pi)
    miss = rng.uniform(0, 0.4 * HEAD_RADIUS) * (math.cos(around) * level + math.sin(around) * vertical)
    third = first + rng.uniform(0.35, 0.65) * line + miss
  else:
    placement = rng.integers(3)
    sign = rng.choice([-1, 1])
    if placement == 0:  # above or below the line
      third = first + rng.uniform(0.3, 0.7) * line + sign * rng.uniform(2.5, 4) * HEAD_RADIUS * vertical
    elif placement == 1:  # clearly nearer to or farther from the camera
      third = first + rng.uniform(0.3, 0.7) * line + sign * rng.uniform(0.8, 1.4) * level
    else:  # beyond one of them, on the line
      third = first + (rng.uniform(1.3, 1.7) if sign > 0 else rng.uniform(-0.7, -0.3)) * line
  person = layout.add(third, rng.uniform(-np.pi, np.pi), rng.normal(0, math.radians(8)))
  if rng.random() < 0.7:
    layout.look(person, int(rng.integers(2)), rng)


def _plant_profiles_facing(layout, rng):
  _sideways_pair(layout, rng, spread=math.radians(6))
  for person, other in ((0, 1), (1, 0)):
    layout.look(person, other, rng)
    layout.yaw[person] = _profile_yaw(layout, person, layout.yaw[person])
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


def _plant_oblique_facing(layout, rng):
  first = layout.random_position(rng, depth_range=(3.5, DEPTH_RANGE[1]))
  direction = _facing_camera_yaw(first) + rng.choice([-1, 1]) * rng.uniform(math.radians(35), math.radians(55))
  layout.add(first, 0.0, 0.0)
  layout.add(_step(first, direction, rng.uniform(0.8, 1.8), rng.normal(0, 0.05)), 0.0, 0.0)
  layout.look(0, 1, rng)
  layout.look(1, 0, rng)
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


def _plant_profiles_away(layout, rng):
  _sideways_pair(layout, rng, spread=math.radians(6))
  for person, other in ((0, 1), (1, 0)):
    away = _look(layout.positions[person], layout.positions[other])[0] + np.pi + rng.normal(0, math.radians(5))
    layout.yaw[person] = _profile_yaw(layout, person, away)
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


def _plant_same_direction(layout, rng):
  _sideways_pair(layout, rng, spread=math.radians(40))
  common = rng.uniform(-np.pi, np.pi)
  layout.yaw[0], layout.yaw[1] = common + rng.normal(0, math.radians(8), 2)
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


def _plant_frontal_profile(layout, rng):
  _sideways_pair(layout, rng, spread=math.radians(20))
  frontal = int(rng.integers(2))
  profile = 1 - frontal
  layout.yaw[frontal] += rng.uniform(-math.radians(10), math.radians(10))
  towards = _look(layout.positions[profile], layout.positions[frontal])[0]
  layout.yaw[profile] = _profile_yaw(layout, profile, towards + rng.choice([0, np.pi]) + rng.normal(0, 0.05))
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


def _plant_frontal_frontal(layout, rng):
  _sideways_pair(layout, rng, spread=math.radians(20))
  for person in (0, 1):
    layout.yaw[person] += rng.uniform(-math.radians(10), math.radians(10))
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


def _plant_vertical_offset(layout, rng):
  first = layout.random_position(rng)
  direction = _facing_camera_yaw(first) + rng.choice([-1, 1]) * (np.pi / 2 + rng.uniform(-0.25, 0.25))
  distance = rng.uniform(0.6, 1.2)
  rise = rng.choice([-1, 1]) * distance * math.tan(rng.uniform(math.radians(28), math.radians(40)))
  layout.add(first, 0.0, 0.0)
  layout.add(_step(first, direction, distance, rise), 0.0, 0.0)
  for person, other in ((0, 1), (1, 0)):
    layout.yaw[person] = _look(layout.positions[person], layout.positions[other])[0] + _plant_error(rng)
    layout.pitch[person] = rng.normal(0, math.radians(4))
  layout.add_bystanders(rng, int(rng.random() < BYSTANDER_RATE))


_PLANTERS = {
  "random": _plant_random,
  "mutual": _plant_mutual,
  "one_looks": _plant_one_looks,
  "occluded": _plant_occluded,
  "profiles_facing": _plant_profiles_facing,
  "oblique_facing": _plant_oblique_facing,
  "profiles_away": _plant_profiles_away,
  "same_direction": _plant_same_direction,
  "frontal_profile": _plant_frontal_profile,
  "frontal_frontal": _plant_frontal_frontal,
  "vertical_offset": _plant_vertical_offset,
}


def _wander(rng: np.random.Generator, anchor: np.ndarray, frames: int, anchor_frame: int, step_std: float):
  """Smooth random walks through `anchor` (N, ...) at `anchor_frame` → (frames, N, ...): velocities follow an AR(1)
  process (persistence 0.8) with innovations of std `step_std` per frame."""
  shocks = rng.normal(0, step_std, (frames, *anchor.shape))
  velocity = scipy.signal.lfilter([1.0], [1.0, -0.8], shocks, axis=0)
  path = np.cumsum(velocity, axis=0)
  return anchor + path - path[anchor_frame]


def _valid(positions: np.ndarray, image_size: tuple[int, int], focal: float) -> bool:
  """Head centres (F, N, 3): every head box inside the image by BOX_MARGIN (so in front of the camera) and every two
  heads MIN_SEPARATION apart, in every frame."""
  if np.any(positions[..., 2] <= HEAD_RADIUS):
    return False
  boxes = _project(positions, image_size, focal, HEAD_RADIUS)
  height, width = image_size
  inside = (
    np.all(boxes[..., :2] >= BOX_MARGIN)
    and np.all(boxes[..., 2] <= width - 1 - BOX_MARGIN)
    and np.all(boxes[..., 3] <= height - 1 - BOX_MARGIN)
  )
  gaps = np.linalg.norm(positions[:, :, None] - positions[:, None, :], axis=-1)
  return bool(inside and np.all(gaps[:, ~np.eye(positions.shape[1], dtype=bool)] >= MIN_SEPARATION))


def sample_scene(
  rng: np.random.Generator, category: str, frames: int = WINDOW, image_size: tuple[int, int] = IMAGE_SIZE
) -> Scene:
  """A scene of `category` (CATEGORIES) over `frames` frames, laid out at the middle frame frames // 2 with the pair
  as persons 0 and 1; heads drift ~3 cm and turn ~4° per 5 frames around it."""
  if category not in _PLANTERS:
    raise ConfigError(f"unknown LAEO scene category {category!r}; choose from {CATEGORIES}")
  middle = frames // 2
  for _ in range(_MAX_TRIES):
    layout = _Layout(image_size)
    _PLANTERS[category](layout, rng)
    anchor_positions, anchor_yaw, anchor_pitch = (
      np.array(values) for values in (layout.positions, layout.yaw, layout.pitch)
    )
    positions = _wander(rng, anchor_positions, frames, middle, 0.004)
    if _valid(positions, image_size, layout.focal):
      return Scene(
        positions=positions,
        yaw=_wander(rng, anchor_yaw, frames, middle, math.radians(0.6)),
        pitch=_wander(rng, anchor_pitch, frames, middle, math.radians(0.3)),
        appearance=sample_appearance(rng, len(anchor_yaw)),
        image_size=tuple(image_size),
        focal=layout.focal,
      )
  raise DataError(
    f"could not lay out a {category!r} scene inside a {image_size[1]}×{image_size[0]} image in {_MAX_TRIES} tries; "
    f"use a larger image_size"
  )


class LaeoSceneSource:
  """Grain random-access source of `num_examples` procedural LAEO-Net++ examples (module docstring); example i is a
  pure function of (seed, i).

  Item: {"head_left", "head_right": (window, 64, 64, 3) float32 in [0, 1] crops of the pair's left and right person
  (left decided at the middle frame, A.1), "head_map": (window, 64, 64, 3) float32 in [0, 1] (channel 0 the left
  person), "label": int32 1 when the pair is LAEO at the middle frame window // 2, "category": int32 index into
  CATEGORIES}.
  """

  def __init__(
    self,
    num_examples: int,
    seed: int,
    window: int = WINDOW,
    categories: Sequence[str] = CATEGORIES,
    image_size: tuple[int, int] = IMAGE_SIZE,
  ):
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown or not categories:
      raise ConfigError(f"categories {list(categories)}: unknown {unknown}; choose a non-empty subset of {CATEGORIES}")
    if num_examples < 1 or window < 1:
      raise ConfigError(f"num_examples={num_examples} and window={window} must be >= 1")
    self.num_examples, self.seed, self.window, self.image_size = num_examples, seed, window, tuple(image_size)
    groups = [[name for name in names if name in categories] for names in CATEGORY_GROUPS.values()]
    self._groups = [group for group in groups if group]

  def __len__(self) -> int:
    return self.num_examples

  def _generators(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    if not 0 <= index < self.num_examples:
      raise IndexError(f"example index {index} out of range for a LaeoSceneSource of {self.num_examples} examples")
    layout_seed, render_seed = np.random.SeedSequence((self.seed, index)).spawn(2)
    return np.random.default_rng(layout_seed), np.random.default_rng(render_seed)

  def example_scene(self, index: int) -> tuple[Scene, tuple[int, int], int]:
    """Example `index`'s scene, its pair (left, right) at the middle frame and its category index."""
    rng = self._generators(index)[0]
    group = self._groups[int(rng.integers(len(self._groups)))]
    category = group[int(rng.integers(len(group)))]
    scene = sample_scene(rng, category, self.window, self.image_size)
    return scene, pair_order(scene, 0, 1, self.window // 2), CATEGORIES.index(category)

  def labels(self) -> np.ndarray:
    """(N,) int32: every example's label, from the geometry alone (about 1 ms per example, nothing rendered)."""
    labels = []
    for index in range(self.num_examples):
      scene, (left, right), _ = self.example_scene(index)
      labels.append(laeo_labels(scene)[self.window // 2, left, right])
    return np.asarray(labels, np.int32)

  def __getitem__(self, index: int) -> dict:
    scene, pair, category = self.example_scene(index)
    render_rng = self._generators(index)[1]
    tracks = {person: render_track(scene, person, range(self.window), render_rng) for person in pair}
    example = pair_window(scene, tracks, *pair, 0, self.window)
    return {
      "head_left": example["head_left"],
      "head_right": example["head_right"],
      "head_map": example["head_map"],
      "label": np.int32(laeo_labels(scene)[self.window // 2, pair[0], pair[1]]),
      "category": np.int32(category),
    }


# Episodes (A.7).


def _planted_friendship(rng: np.random.Generator, count: int) -> np.ndarray:
  """(count, count) symmetric friendship: FRIENDSHIP_LEVELS' shares of the pairs strong or weak, the rest 0."""
  rows, cols = np.triu_indices(count, 1)
  order = rng.permutation(len(rows))
  friendship = np.zeros((count, count))
  start = 0
  for share, low, high in FRIENDSHIP_LEVELS.values():
    chosen = order[start : start + max(1, round(share * len(rows)))]
    friendship[rows[chosen], cols[chosen]] = rng.uniform(low, high, len(chosen))
    start += len(chosen)
  return friendship + friendship.T


def _circle_layout(rng: np.random.Generator, count: int, image_size: tuple[int, int]) -> np.ndarray:
  """(count, 3) head positions around a conversation circle whose near side faces the camera's way, so that no head
  stands between two others."""
  centre = np.array([rng.uniform(-0.4, 0.4), 0.0, rng.uniform(3.3, 4.5)])
  radius = rng.uniform(0.55, 0.75) + 0.1 * count
  spread = math.radians(75) if count == 2 else math.radians(125)
  angles = np.linspace(-spread, spread, count) + rng.normal(0, math.radians(8), count) + rng.normal(0, 0.2)
  offsets = radius * np.stack([np.sin(angles), np.zeros(count), np.cos(angles)], -1)
  offsets[:, 1] = rng.normal(0.05, 0.08, count)
  return centre + offsets[rng.permutation(count)]


def _gaze_plan(rng, positions, person: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Desired (yaw, pitch) (F,) of `person`: spells of HOLD_FRAMES frames, each at another person drawn by
  `weights` (N,) (0 for itself) or, with ELSEWHERE_WEIGHT, at nobody, the camera or the floor."""
  frames = len(positions)
  yaw, pitch = np.zeros(frames), np.zeros(frames)
  start = 0
  choices = np.append(weights, ELSEWHERE_WEIGHT)
  while start < frames:
    stop = min(frames, start + int(rng.integers(HOLD_FRAMES[0], HOLD_FRAMES[1] + 1)))
    target = int(rng.choice(len(choices), p=choices / choices.sum()))
    if target < len(weights):
      for frame in range(start, stop):
        yaw[frame], pitch[frame] = _look(positions[frame, person], positions[frame, target])
    else:
      elsewhere = rng.integers(3)
      if elsewhere == 0:  # nobody
        yaw[start:stop], pitch[start:stop] = rng.uniform(-np.pi, np.pi), rng.normal(0, math.radians(8))
      elif elsewhere == 1:  # the camera
        yaw[start:stop], pitch[start:stop] = _look(positions[start, person], np.zeros(3))
      else:  # the floor
        yaw[start:stop], pitch[start:stop] = (
          rng.uniform(-np.pi, np.pi),
          -rng.uniform(math.radians(30), math.radians(50)),
        )
    start = stop
  return yaw, pitch


def _turn(rng, desired: np.ndarray) -> np.ndarray:
  """Angles (F,) turned smoothly towards `desired` (F,): TURN_RATE of the remaining (wrapped) angle per frame, plus
  jitter of 1°."""
  actual = np.empty_like(desired)
  actual[0] = desired[0]
  for frame in range(1, len(desired)):
    remaining = math.remainder(desired[frame] - actual[frame - 1], 2 * np.pi)
    actual[frame] = actual[frame - 1] + TURN_RATE * remaining
  return actual + rng.normal(0, math.radians(1.0), len(desired))


def sample_episode(
  seed: int,
  num_characters: int = 6,
  num_shots: int = 12,
  frames_per_shot: int = 40,
  image_size: tuple[int, int] = IMAGE_SIZE,
) -> Episode:
  """An episode of `num_shots` shots of `frames_per_shot` frames, 2–4 of `num_characters` characters each, all
  present for the whole shot; friendship planted and gazes drawn as in the module docstring."""
  if num_characters < 2 or num_shots < 1 or frames_per_shot < 1:
    raise ConfigError(
      f"an episode needs num_characters >= 2, num_shots >= 1, frames_per_shot >= 1; got {num_characters}, "
      f"{num_shots}, {frames_per_shot}"
    )
  rng = np.random.default_rng(seed)
  friendship = _planted_friendship(rng, num_characters)
  appearance = sample_appearance(rng, num_characters)
  focal = camera_focal(image_size)
  shots = []
  for _ in range(num_shots):
    characters = np.sort(rng.choice(num_characters, int(rng.integers(2, min(4, num_characters) + 1)), replace=False))
    for _ in range(_MAX_TRIES):
      anchor = _circle_layout(rng, len(characters), image_size)
      positions = _wander(rng, anchor, frames_per_shot, 0, 0.002)
      if _valid(positions, image_size, focal):
        break
    else:
      raise DataError(f"could not place a shot inside a {image_size[1]}×{image_size[0]} image; use a larger image_size")
    yaw, pitch = np.zeros(positions.shape[:2]), np.zeros(positions.shape[:2])
    for person, character in enumerate(characters):
      weights = GAZE_BASE_WEIGHT + GAZE_FRIENDSHIP_WEIGHT * friendship[character, characters]
      weights[person] = 0.0
      desired_yaw, desired_pitch = _gaze_plan(rng, positions, person, weights)
      yaw[:, person], pitch[:, person] = _turn(rng, desired_yaw), _turn(rng, desired_pitch)
    scene = Scene(positions, yaw, pitch, appearance.take(characters), tuple(image_size), focal)
    shots.append(Shot(scene, characters))
  return Episode(friendship, appearance, tuple(shots))


def render_shot_tracks(shot: Shot, seed) -> dict[int, np.ndarray]:
  """Every person's head track over the whole shot: track (person index in the shot; its character is
  shot.characters[track]) → (F, 64, 64, 3) float32 in [0, 1], with random nuisance drawn from `seed` (an int or a
  tuple of ints, e.g. (episode seed, shot index))."""
  rng = np.random.default_rng(seed)
  frames = range(shot.scene.num_frames)
  return {person: render_track(shot.scene, person, frames, rng) for person in range(shot.scene.num_people)}


def laeo_frame_fraction(episode: Episode) -> np.ndarray:
  """(C, C) ground-truth friend-ness (A.7): per character pair, the mean over the shots where both appear of the
  fraction of that shot's frames in which they are LAEO; NaN for pairs never in a shot together and on the
  diagonal."""
  count = len(episode.friendship)
  total, shots = np.zeros((count, count)), np.zeros((count, count))
  for shot in episode.shots:
    index = np.ix_(shot.characters, shot.characters)
    total[index] += laeo_labels(shot.scene).mean(0)
    shots[index] += 1
  np.fill_diagonal(shots, 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(shots > 0, total / shots, np.nan)
