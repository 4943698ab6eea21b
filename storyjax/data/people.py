"""Episodes of person tracks for people clustering (C1C / MuHPC, thesis §2.1.1): synthetic episodes with known
identities, and the per-track feature files of real episodes.

A track is one person on screen within one shot. Its features (face, voice, body) are unit-norm-ish vectors
compared by cosine distance; a modality can be missing for a track (no visible face, not speaking). Tracks that
share a frame show different people: they are cannot-linked.

Synthetic episodes (`sample_episode`) make every cue matter: each identity has a frontal and a profile face far
apart (faces alone rarely merge them; voice and body can), look-alike pairs share near-identical frontal faces and
appear in the same shots (only the cannot-link constraint separates them), outfits change between scenes (body
links tracks within a scene, not across), and some voices belong to an off-screen speaker.

Episode directory layout (`load_episode` / `save_episode`):
  tracks.csv    header `track,frame,shot[,identity]`, one row per (track, frame) where the person is on screen; a
                track's shot and identity are constant (identity −1 = unknown).
  features.npz  `track` (T,) ids and any of `face` (T, Df), `voice` (T, Dv), `body` (T, Db), a missing row all NaN;
                optionally `face_detections` (N, Df) with `face_detection_track` (N,) track ids (without them, each
                track with a face has its mean face as its one detection).
"""

import dataclasses
import math
import os
import pathlib
import warnings

import numpy as np

from storyjax.errors import ConfigError, DataError

TRACKS_FILE = "tracks.csv"
FEATURES_FILE = "features.npz"
MODALITIES = ("face", "voice", "body")
_REQUIRED_COLUMNS = ("track", "frame", "shot")
_OPTIONAL_COLUMNS = ("identity",)
_DETECTION_KEYS = ("face_detections", "face_detection_track")


def _empty_ints() -> np.ndarray:
  return np.zeros(0, np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class Episode:
  """One episode's person tracks (T tracks, rows ordered by track id). Missing modality rows are zeros with the
  mask False.

  name: the episode's name (its directory's name for a loaded episode).
  track_ids (T,) int64: the file's track ids (synthetic: 0..T−1).
  identities (T,) int64: ground-truth identity per track, −1 = unknown.
  shots (T,) int64: shot index of each track (a track lies in one shot).
  face (T, Df), voice (T, Dv), body (T, Db) float32: per-track mean features; has_face, has_voice, has_body (T,)
    bool say which rows are present.
  face_detections (N, Df) float32: per-detection face features, only of tracks with a face, grouped by track.
  face_detection_tracks (N,) int64: row index (0..T−1, not the file id) of each detection's track.
  cannot_link (P, 2) int64: pairs (i < j) of track rows sharing at least one frame, sorted, unique.
  appearance_tracks, appearance_frames (M,) int64: one (track row, frame) per frame a track is on screen, sorted by
    (row, frame), unique; what cannot_link is computed from and what `save_episode` writes to tracks.csv.
  """

  name: str
  track_ids: np.ndarray
  identities: np.ndarray
  shots: np.ndarray
  face: np.ndarray
  voice: np.ndarray
  body: np.ndarray
  has_face: np.ndarray
  has_voice: np.ndarray
  has_body: np.ndarray
  face_detections: np.ndarray
  face_detection_tracks: np.ndarray
  cannot_link: np.ndarray
  appearance_tracks: np.ndarray = dataclasses.field(default_factory=_empty_ints)
  appearance_frames: np.ndarray = dataclasses.field(default_factory=_empty_ints)

  @property
  def num_tracks(self) -> int:
    return len(self.track_ids)


def co_occurring_pairs(track_rows, frames) -> np.ndarray:
  """track_rows (M,), frames (M,) ints, one entry per appearance of a track in a frame (duplicates allowed) →
  (P, 2) int64 pairs (i < j) of track rows appearing in a common frame, unique, sorted lexicographically.

  Sorting by (frame, row) makes each frame's rows a run; the pairs at distance d within runs are found for
  d = 1, 2, … up to the largest run, so the cost is O(M log M + M·K) for K tracks per frame at most.
  """
  track_rows, frames = np.asarray(track_rows), np.asarray(frames)
  if track_rows.ndim != 1 or track_rows.shape != frames.shape:
    raise ValueError(f"track_rows and frames must be (M,) arrays of one length, got {track_rows.shape}, {frames.shape}")
  track_rows, frames = track_rows.astype(np.int64), frames.astype(np.int64)
  order = np.lexsort((track_rows, frames))
  track_rows, frames = track_rows[order], frames[order]
  distinct = np.ones(len(frames), bool)
  distinct[1:] = (frames[1:] != frames[:-1]) | (track_rows[1:] != track_rows[:-1])
  track_rows, frames = track_rows[distinct], frames[distinct]
  firsts, seconds = [], []
  distance = 1
  while distance < len(frames):
    same_frame = frames[distance:] == frames[:-distance]
    if not same_frame.any():  # no run is longer than `distance`
      break
    firsts.append(track_rows[:-distance][same_frame])
    seconds.append(track_rows[distance:][same_frame])
    distance += 1
  if not firsts:
    return np.zeros((0, 2), np.int64)
  num_rows = int(track_rows.max()) + 1
  codes = np.unique(np.concatenate(firsts) * num_rows + np.concatenate(seconds))
  return np.stack([codes // num_rows, codes % num_rows], axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic episodes


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """How synthetic episodes are generated. Noise levels are the expected norm of the noise vector (per-coordinate
  std noise / √D); similarities are cosines between unit vectors."""

  # Cast and editing structure.
  num_identities: int = 10
  zipf_exponent: float = 1.0  # screen-time weight of the identity of rank k (0-based) ∝ 1 / (k + 1)^exponent
  num_scenes: int = 12
  min_cast: int = 2  # identities per scene, drawn without replacement by screen-time weight
  max_cast: int = 4
  min_shots: int = 3  # shots per scene
  max_shots: int = 8
  min_shot_frames: int = 30  # a shot's length in frames; shots are consecutive frame ranges
  max_shot_frames: int = 150
  min_shown: int = 1  # cast members shown in a shot (one track each), drawn by screen-time weight
  max_shown: int = 3
  partial_track_rate: float = 0.2  # a track covers only part of its shot ...
  min_partial_fraction: float = 0.3  # ... a random range of this fraction of it
  max_partial_fraction: float = 0.8
  # Faces.
  face_dim: int = 32
  profile_rate: float = 0.35  # a track shows the identity's profile face instead of its frontal face
  profile_similarity: float = 0.35  # cosine between an identity's frontal and profile faces
  num_lookalike_pairs: int = 2  # pairs of identities with near-identical frontal faces
  lookalike_similarity: float = 0.85  # cosine between a look-alike pair's frontal faces
  lookalike_cast_rate: float = 0.8  # a look-alike drawn into a scene's cast brings its partner along
  lookalike_shot_rate: float = 0.7  # a look-alike shown in a shot is shown with its partner (when in the cast)
  face_noise: float = 0.25  # per detection
  blur_rate: float = 0.15  # a track is blurred: its detections get blur_noise_factor × face_noise
  blur_noise_factor: float = 2.5
  missing_face_rate: float = 0.3  # no visible face (back of the head, far away): no face row, no detections
  min_face_detections: int = 3  # per track with a face (at most its number of frames)
  max_face_detections: int = 12
  # Voices.
  voice_dim: int = 16
  speaking_rate: float = 0.5  # a track has a voice
  voice_noise: float = 0.3
  offscreen_voice_rate: float = 0.1  # a track's voice is another cast member's of the scene (off-screen speaker)
  # Bodies.
  body_dim: int = 16
  missing_body_rate: float = 0.0  # person tracks show a body, so by default every track has one
  outfit_keep_rate: float = 0.3  # an identity keeps its outfit from its previous scene; otherwise a new one
  similar_outfit_rate: float = 0.1  # in a scene, two cast members wear similar outfits ...
  similar_outfit_similarity: float = 0.8  # ... of this cosine
  body_noise: float = 0.2

  def __post_init__(self):
    rates = [field.name for field in dataclasses.fields(self) if field.name.endswith("_rate")]
    for name in rates:
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ConfigError(f"EpisodeSpec.{name}={getattr(self, name)} is a probability; give a value in [0, 1]")
    for low, high in [
      ("min_cast", "max_cast"),
      ("min_shots", "max_shots"),
      ("min_shot_frames", "max_shot_frames"),
      ("min_shown", "max_shown"),
      ("min_face_detections", "max_face_detections"),
      ("min_partial_fraction", "max_partial_fraction"),
    ]:
      if not 0 < getattr(self, low) <= getattr(self, high):
        raise ConfigError(f"EpisodeSpec needs 0 < {low} <= {high}, got {getattr(self, low)}, {getattr(self, high)}")
    if self.max_partial_fraction > 1.0:
      raise ConfigError(f"EpisodeSpec.max_partial_fraction={self.max_partial_fraction} must be at most 1")
    if not 2 <= self.min_cast <= self.num_identities:
      raise ConfigError(
        f"EpisodeSpec.min_cast={self.min_cast} must be in [2, num_identities={self.num_identities}]: an off-screen "
        "voice belongs to another cast member"
      )
    if 2 * self.num_lookalike_pairs > self.num_identities:
      raise ConfigError(
        f"EpisodeSpec.num_lookalike_pairs={self.num_lookalike_pairs} needs {2 * self.num_lookalike_pairs} identities, "
        f"there are {self.num_identities}"
      )
    for name in ("face_dim", "voice_dim", "body_dim"):
      if getattr(self, name) < 2:
        raise ConfigError(f"EpisodeSpec.{name}={getattr(self, name)}: a direction at a given cosine needs dim >= 2")
    for name in ("profile_similarity", "lookalike_similarity", "similar_outfit_similarity"):
      if not -1.0 <= getattr(self, name) <= 1.0:
        raise ConfigError(f"EpisodeSpec.{name}={getattr(self, name)} is a cosine; give a value in [-1, 1]")


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticTruth:
  """What generated a synthetic episode, beyond its identities (for tests and analyses).

  lookalike_pairs (L, 2) int64: identities with near-identical frontal faces.
  scenes (T,) int64: scene of each track.
  profile, blurred (T,) bool: the track shows the profile face; its face detections are blurred.
  voice_identities (T,) int64: whose voice the track carries (≠ identity for an off-screen speaker), −1 = none.
  outfits (T,) int64: outfit id of the track's body (same id = same outfit vector).
  """

  lookalike_pairs: np.ndarray
  scenes: np.ndarray
  profile: np.ndarray
  blurred: np.ndarray
  voice_identities: np.ndarray
  outfits: np.ndarray


def _unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
  """(count, dim) float64 random directions."""
  vectors = rng.standard_normal((count, dim))
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _similar_unit_vectors(rng: np.random.Generator, anchors: np.ndarray, similarity: float) -> np.ndarray:
  """anchors (K, D) unit → (K, D) unit vectors at cosine exactly `similarity` to them, in random directions."""
  orthogonal = rng.standard_normal(anchors.shape)
  orthogonal -= np.sum(orthogonal * anchors, axis=1, keepdims=True) * anchors
  orthogonal /= np.linalg.norm(orthogonal, axis=1, keepdims=True)
  return similarity * anchors + math.sqrt(1.0 - similarity**2) * orthogonal


def _replace_or_append(rng: np.random.Generator, people: list, keep, newcomer, limit: int) -> None:
  """Adds `newcomer` to `people`, in place of a random member other than `keep` when `people` has `limit` members
  (no change when `keep` is the only one)."""
  if len(people) < limit:
    people.append(newcomer)
    return
  others = [index for index, person in enumerate(people) if person != keep]
  if others:
    people[others[rng.integers(len(others))]] = newcomer


def _draw_cast(rng, spec: EpisodeSpec, screen_time: np.ndarray, partner: np.ndarray) -> list:
  size = rng.integers(spec.min_cast, min(spec.max_cast, spec.num_identities) + 1)
  cast = [int(person) for person in rng.choice(spec.num_identities, size, replace=False, p=screen_time)]
  for person in list(cast):
    mate = partner[person]
    if person in cast and mate >= 0 and mate not in cast and rng.random() < spec.lookalike_cast_rate:
      _replace_or_append(rng, cast, person, int(mate), spec.max_cast)
  return cast


def _draw_shown(rng, spec: EpisodeSpec, cast: list, screen_time: np.ndarray, partner: np.ndarray) -> list:
  most = min(spec.max_shown, len(cast))
  count = rng.integers(min(spec.min_shown, most), most + 1)
  weights = screen_time[cast] / screen_time[cast].sum()
  shown = [int(person) for person in rng.choice(cast, count, replace=False, p=weights)]
  for person in list(shown):
    mate = partner[person]
    if person in shown and mate in cast and mate not in shown and rng.random() < spec.lookalike_shot_rate:
      _replace_or_append(rng, shown, person, int(mate), spec.max_shown)
  return shown


def sample_episode_with_truth(
  seed: int, spec: EpisodeSpec = EpisodeSpec(), name: str | None = None
) -> tuple[Episode, SyntheticTruth]:
  """A synthetic episode (deterministic for `seed`) and what generated it. See the module docstring."""
  rng = np.random.default_rng(seed)
  num_identities = spec.num_identities
  screen_time = 1.0 / np.arange(1, num_identities + 1) ** spec.zipf_exponent
  screen_time /= screen_time.sum()

  frontal = _unit_vectors(rng, num_identities, spec.face_dim)
  lookalike_pairs = rng.permutation(num_identities)[: 2 * spec.num_lookalike_pairs].reshape(-1, 2).astype(np.int64)
  frontal[lookalike_pairs[:, 1]] = _similar_unit_vectors(rng, frontal[lookalike_pairs[:, 0]], spec.lookalike_similarity)
  profile_faces = _similar_unit_vectors(rng, frontal, spec.profile_similarity)
  voices = _unit_vectors(rng, num_identities, spec.voice_dim)
  partner = np.full(num_identities, -1)
  partner[lookalike_pairs[:, 0]], partner[lookalike_pairs[:, 1]] = lookalike_pairs[:, 1], lookalike_pairs[:, 0]

  outfit_vectors = []
  current_outfit = np.full(num_identities, -1)
  casts = []
  identities, shots, scenes, starts, stops, outfits = [], [], [], [], [], []
  frame = shot = 0
  for scene in range(spec.num_scenes):
    cast = _draw_cast(rng, spec, screen_time, partner)
    casts.append(cast)
    for person in cast:
      if current_outfit[person] < 0 or rng.random() >= spec.outfit_keep_rate:
        current_outfit[person] = len(outfit_vectors)
        outfit_vectors.append(_unit_vectors(rng, 1, spec.body_dim)[0])
    if rng.random() < spec.similar_outfit_rate:
      wearer, copier = rng.choice(cast, 2, replace=False)
      current_outfit[copier] = len(outfit_vectors)
      similar = _similar_unit_vectors(rng, outfit_vectors[current_outfit[wearer]][None], spec.similar_outfit_similarity)
      outfit_vectors.append(similar[0])
    for _ in range(rng.integers(spec.min_shots, spec.max_shots + 1)):
      length = int(rng.integers(spec.min_shot_frames, spec.max_shot_frames + 1))
      for person in _draw_shown(rng, spec, cast, screen_time, partner):
        start, stop = frame, frame + length
        if rng.random() < spec.partial_track_rate:
          span = max(1, round(length * rng.uniform(spec.min_partial_fraction, spec.max_partial_fraction)))
          start = frame + int(rng.integers(0, length - span + 1))
          stop = start + span
        identities.append(person)
        shots.append(shot)
        scenes.append(scene)
        starts.append(start)
        stops.append(stop)
        outfits.append(current_outfit[person])
      frame += length
      shot += 1

  identities, scenes, outfits = np.array(identities, np.int64), np.array(scenes, np.int64), np.array(outfits, np.int64)
  starts, stops = np.array(starts, np.int64), np.array(stops, np.int64)
  num_tracks = len(identities)
  profile = rng.random(num_tracks) < spec.profile_rate
  blurred = rng.random(num_tracks) < spec.blur_rate
  has_face = rng.random(num_tracks) >= spec.missing_face_rate
  has_voice = rng.random(num_tracks) < spec.speaking_rate
  has_body = rng.random(num_tracks) >= spec.missing_body_rate
  offscreen = has_voice & (rng.random(num_tracks) < spec.offscreen_voice_rate)

  voice_identities = np.where(has_voice, identities, -1)
  for row in np.flatnonzero(offscreen):
    others = [person for person in casts[scenes[row]] if person != identities[row]]
    voice_identities[row] = others[rng.integers(len(others))]

  face_rows = np.flatnonzero(has_face)
  counts = rng.integers(spec.min_face_detections, spec.max_face_detections + 1, len(face_rows))
  counts = np.minimum(counts, stops[face_rows] - starts[face_rows])
  detection_tracks = np.repeat(face_rows, counts)
  modes = np.where(profile[:, None], profile_faces[identities], frontal[identities])
  face_noise_std = spec.face_noise / math.sqrt(spec.face_dim) * np.where(blurred, spec.blur_noise_factor, 1.0)
  noise = rng.standard_normal((len(detection_tracks), spec.face_dim)) * face_noise_std[detection_tracks, None]
  detections = modes[detection_tracks] + noise
  face = np.zeros((num_tracks, spec.face_dim))
  if len(face_rows):
    group_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    face[face_rows] = np.add.reduceat(detections, group_starts, axis=0) / counts[:, None]

  voice_noise = rng.standard_normal((num_tracks, spec.voice_dim)) * spec.voice_noise / math.sqrt(spec.voice_dim)
  voice = np.where(has_voice[:, None], voices[np.maximum(voice_identities, 0)] + voice_noise, 0.0)
  body_noise = rng.standard_normal((num_tracks, spec.body_dim)) * spec.body_noise / math.sqrt(spec.body_dim)
  body = np.where(has_body[:, None], np.stack(outfit_vectors)[outfits] + body_noise, 0.0)

  lengths = stops - starts
  appearance_tracks = np.repeat(np.arange(num_tracks, dtype=np.int64), lengths)
  first_appearance = np.cumsum(lengths) - lengths
  frame_in_track = np.arange(len(appearance_tracks)) - first_appearance[appearance_tracks]
  appearance_frames = starts[appearance_tracks] + frame_in_track

  episode = Episode(
    name=f"synthetic_seed{seed}" if name is None else name,
    track_ids=np.arange(num_tracks, dtype=np.int64),
    identities=identities,
    shots=np.array(shots, np.int64),
    face=face.astype(np.float32),
    voice=voice.astype(np.float32),
    body=body.astype(np.float32),
    has_face=has_face,
    has_voice=has_voice,
    has_body=has_body,
    face_detections=detections.astype(np.float32),
    face_detection_tracks=detection_tracks.astype(np.int64),
    cannot_link=co_occurring_pairs(appearance_tracks, appearance_frames),
    appearance_tracks=appearance_tracks,
    appearance_frames=appearance_frames,
  )
  truth = SyntheticTruth(lookalike_pairs, scenes, profile, blurred, voice_identities, outfits)
  return episode, truth


def sample_episode(seed: int, spec: EpisodeSpec = EpisodeSpec(), name: str | None = None) -> Episode:
  """A synthetic episode, deterministic for `seed` (named `synthetic_seed<seed>` unless `name` is given)."""
  return sample_episode_with_truth(seed, spec, name)[0]


def episode_seed(seed: int, index: int) -> int:
  """The seed of episode `index` of the set `seed` (independent streams for different (seed, index))."""
  return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def sample_episodes(num_episodes: int, seed: int, spec: EpisodeSpec = EpisodeSpec()) -> list[Episode]:
  """`num_episodes` synthetic episodes named synthetic_000, synthetic_001, …, episode i from episode_seed(seed, i)."""
  return [sample_episode(episode_seed(seed, index), spec, f"synthetic_{index:03d}") for index in range(num_episodes)]


# ---------------------------------------------------------------------------------------------------------------
# Episode files


def save_episode(episode: Episode, directory: str | os.PathLike) -> None:
  """Writes `episode` as tracks.csv and features.npz in `directory` (created); load_episode reads it back equal.

  The identity column is written when some identity is known (≥ 0); a modality of width 0 is left out.
  """
  directory = pathlib.Path(directory)
  on_screen = np.zeros(episode.num_tracks, bool)
  on_screen[episode.appearance_tracks] = True
  if not on_screen.all():
    raise ValueError(
      f"episode {episode.name}: track {episode.track_ids[np.argmin(on_screen)]} has no appearance (frame); "
      "tracks.csv needs at least one row per track"
    )
  directory.mkdir(parents=True, exist_ok=True)
  rows = episode.appearance_tracks
  columns = {"track": episode.track_ids[rows], "frame": episode.appearance_frames, "shot": episode.shots[rows]}
  if (episode.identities >= 0).any():
    columns["identity"] = episode.identities[rows]
  np.savetxt(
    directory / TRACKS_FILE,
    np.stack(list(columns.values()), axis=1),
    fmt="%d",
    delimiter=",",
    header=",".join(columns),
    comments="",
  )
  arrays = {"track": episode.track_ids}
  for modality in MODALITIES:
    values = getattr(episode, modality)
    if values.shape[1]:
      arrays[modality] = np.where(getattr(episode, f"has_{modality}")[:, None], values, np.nan).astype(np.float32)
  if episode.face.shape[1]:
    arrays["face_detections"] = episode.face_detections.astype(np.float32)
    arrays["face_detection_track"] = episode.track_ids[episode.face_detection_tracks]
  np.savez(directory / FEATURES_FILE, **arrays)


def _read_tracks_csv(path: pathlib.Path) -> dict[str, np.ndarray]:
  """tracks.csv → {column name: (M,) int64}."""
  layout = f"its header is {','.join(_REQUIRED_COLUMNS)}[,{','.join(_OPTIONAL_COLUMNS)}]"
  if not path.is_file():
    raise DataError(f"{path} does not exist; an episode directory holds {TRACKS_FILE} and {FEATURES_FILE}")
  with path.open() as file:
    names = [name.strip() for name in file.readline().strip().split(",")]
  missing = [name for name in _REQUIRED_COLUMNS if name not in names]
  if missing:
    raise DataError(f"{path} has no column {missing[0]!r} ({layout}); its header is {','.join(names)!r}")
  unknown = [name for name in names if name not in _REQUIRED_COLUMNS + _OPTIONAL_COLUMNS]
  if unknown or len(set(names)) < len(names):
    raise DataError(f"{path}: header {','.join(names)!r} has unknown or repeated columns; {layout}")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", UserWarning)  # an empty table is reported below
      table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
  except ValueError as error:
    raise DataError(f"{path} has a row that is not {len(names)} integers: {error}") from error
  if not len(table):
    raise DataError(f"{path} has no rows; give one row per (track, frame) where the person is on screen")
  if table.shape[1] != len(names):
    raise DataError(f"{path} has {table.shape[1]} values per row but {len(names)} columns in its header")
  return {name: table[:, index] for index, name in enumerate(names)}


def _read_features(path: pathlib.Path) -> dict[str, np.ndarray]:
  if not path.is_file():
    raise DataError(f"{path} does not exist; an episode directory holds {TRACKS_FILE} and {FEATURES_FILE}")
  try:
    with np.load(path, allow_pickle=False) as archive:
      arrays = {key: archive[key] for key in archive.files}
  except (OSError, ValueError) as error:
    raise DataError(f"{path} is not a readable .npz archive: {error}") from error
  unknown = sorted(set(arrays) - {"track", *MODALITIES, *_DETECTION_KEYS})
  if unknown:
    raise DataError(
      f"{path} holds unknown arrays {unknown}; it may hold track, {', '.join(MODALITIES)}, {', '.join(_DETECTION_KEYS)}"
    )
  if "track" not in arrays:
    raise DataError(f"{path} has no 'track' array: the (T,) track ids its feature rows belong to")
  return arrays


def _integer_vector(array: np.ndarray, path: pathlib.Path, key: str) -> np.ndarray:
  if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or len(array) == 0):
    raise DataError(f"{path}: {key!r} must be a (N,) integer array, got {array.dtype} of shape {array.shape}")
  return array.astype(np.int64)


def load_episode(directory: str | os.PathLike) -> Episode:
  """Reads one episode directory (tracks.csv, features.npz; see the module docstring). Raises DataError naming the
  file and the problem for anything missing or inconsistent."""
  directory = pathlib.Path(directory)
  tracks_path, features_path = directory / TRACKS_FILE, directory / FEATURES_FILE
  columns = _read_tracks_csv(tracks_path)
  track_ids, first_rows = np.unique(columns["track"], return_index=True)
  num_tracks = len(track_ids)
  rows = np.searchsorted(track_ids, columns["track"])
  per_track = {}
  for column in ("shot", "identity"):
    if column not in columns:
      continue
    values = columns[column]
    first = values[first_rows]
    differs = values != first[rows]
    if differs.any():
      index = int(np.argmax(differs))
      raise DataError(
        f"{tracks_path}: track {track_ids[rows[index]]} has several values in column {column!r} "
        f"({first[rows[index]]} and {values[index]}); a track lies in one shot and shows one identity"
      )
    per_track[column] = first
  identities = per_track.get("identity", np.full(num_tracks, -1, np.int64))

  arrays = _read_features(features_path)
  feature_tracks = _integer_vector(arrays["track"], features_path, "track")
  if len(np.unique(feature_tracks)) < len(feature_tracks):
    values, counts = np.unique(feature_tracks, return_counts=True)
    raise DataError(f"{features_path}: track {values[np.argmax(counts > 1)]} has several feature rows")
  only_csv, only_npz = np.setdiff1d(track_ids, feature_tracks), np.setdiff1d(feature_tracks, track_ids)
  if len(only_csv) or len(only_npz):
    example, holder = (only_csv[0], tracks_path) if len(only_csv) else (only_npz[0], features_path)
    raise DataError(
      f"{tracks_path} and {features_path} hold different tracks ({len(only_csv)} only in the first, {len(only_npz)} "
      f"only in the second), e.g. track {example} is only in {holder}"
    )
  order = np.argsort(feature_tracks)  # feature rows in track id order, as track_ids

  features, masks = {}, {}
  for modality in MODALITIES:
    if modality not in arrays:
      features[modality], masks[modality] = np.zeros((num_tracks, 0), np.float32), np.zeros(num_tracks, bool)
      continue
    values = arrays[modality]
    if values.ndim != 2 or len(values) != num_tracks or not np.issubdtype(values.dtype, np.number):
      raise DataError(
        f"{features_path}: {modality!r} must be a ({num_tracks}, D) float array (one row per track), "
        f"got {values.dtype} of shape {values.shape}"
      )
    values = values[order].astype(np.float32)
    missing = np.isnan(values).all(axis=1)
    broken = ~missing & ~np.isfinite(values).all(axis=1)
    if broken.any():
      raise DataError(
        f"{features_path}: the {modality!r} row of track {track_ids[np.argmax(broken)]} has non-finite values; "
        "a missing row is all NaN, a present one all finite"
      )
    features[modality] = np.where(missing[:, None], 0.0, values).astype(np.float32)
    masks[modality] = ~missing

  face, has_face = features["face"], masks["face"]
  present = [key for key in _DETECTION_KEYS if key in arrays]
  if len(present) == 1:
    raise DataError(f"{features_path} has {present[0]!r} without {(set(_DETECTION_KEYS) - set(present)).pop()!r}")
  if present:
    detections = arrays["face_detections"]
    detection_ids = _integer_vector(arrays["face_detection_track"], features_path, "face_detection_track")
    if detections.ndim != 2 or detections.shape != (len(detection_ids), face.shape[1]):
      raise DataError(
        f"{features_path}: 'face_detections' must be ({len(detection_ids)}, {face.shape[1]}) (one row per "
        f"face_detection_track entry, the width of 'face'), got {detections.shape}"
      )
    if not np.isfinite(detections).all():
      raise DataError(f"{features_path}: 'face_detections' has non-finite values")
    known = np.isin(detection_ids, track_ids)
    if not known.all():
      raise DataError(
        f"{features_path}: 'face_detection_track' has track {detection_ids[np.argmin(known)]}, not in 'track'"
      )
    detection_tracks = np.searchsorted(track_ids, detection_ids)
    faceless = ~has_face[detection_tracks]
    if faceless.any():
      raise DataError(
        f"{features_path}: track {detection_ids[np.argmax(faceless)]} has face detections but its 'face' row is missing"
      )
    undetected = has_face & (np.bincount(detection_tracks, minlength=num_tracks) == 0)
    if undetected.any():
      raise DataError(f"{features_path}: track {track_ids[np.argmax(undetected)]} has a face but no face detections")
    grouped = np.argsort(detection_tracks, kind="stable")
    detections, detection_tracks = detections[grouped].astype(np.float32), detection_tracks[grouped].astype(np.int64)
  else:
    detection_tracks = np.flatnonzero(has_face).astype(np.int64)
    detections = face[detection_tracks]

  appearances = np.unique(np.stack([rows, columns["frame"]], axis=1), axis=0)
  return Episode(
    name=directory.name,
    track_ids=track_ids.astype(np.int64),
    identities=identities,
    shots=per_track["shot"],
    face=face,
    voice=features["voice"],
    body=features["body"],
    has_face=has_face,
    has_voice=masks["voice"],
    has_body=masks["body"],
    face_detections=detections,
    face_detection_tracks=detection_tracks,
    cannot_link=co_occurring_pairs(appearances[:, 0], appearances[:, 1]),
    appearance_tracks=appearances[:, 0].astype(np.int64),
    appearance_frames=appearances[:, 1].astype(np.int64),
  )


def load_episodes(root: str | os.PathLike) -> list[Episode]:
  """Every subdirectory of `root` holding a tracks.csv, sorted by name, as Episodes."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"{root} is not a directory; give the folder holding one subdirectory per episode")
  directories = sorted(path for path in root.iterdir() if (path / TRACKS_FILE).is_file())
  if not directories:
    raise DataError(f"{root} has no episode subdirectory (one holding {TRACKS_FILE} and {FEATURES_FILE})")
  return [load_episode(directory) for directory in directories]
