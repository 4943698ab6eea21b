"""FunnyNet-W's data (thesis §2.2): per-clip frozen audio, vision and text features and a funny / not-funny label.

The published inputs are frozen encoder outputs of 8-s clips cut before a laughter onset (the laughter itself
silenced): BYOL-A audio (2048,), VideoMAE vision (2048,), LLaMA-2 text tokens of the Whisper transcript (64, 4096).
Two sources give the same example dict {"audio" (Da,), "vision" (Dv,), "text" (L, Dt) float32, "label" int32 (1 =
funny), "kind" int32}:

`FunnyClips`, procedural, with the label carried by a cross-modal event. A clip has a text cue k (a setup word S_k
followed later in the transcript by its punchline word P_k, k in 1..K, or none: k = 0), an audio emphasis of type j
(0..K: the delivery's timing and intonation, a direction in audio-feature space) and a visual reaction r (0/1). The
clip is funny iff k > 0, j = k and r = 1: the delivery must match the joke and someone must react. Half the clips are
funny; the rest are one of four negative kinds (KINDS), each removing one ingredient, so every single modality and
every pair misses some negatives:
  no_reaction     k = j > 0, r = 0      only vision tells
  wrong_delivery  k, j > 0, j ≠ k, r=1  only audio and text together tell
  no_joke         k = 0 (a decoy: a setup word alone, a punchline alone, the two in the wrong order or mismatched)
  flat_delivery   j = 0
With ideal per-modality readings the best accuracies are 0.625 for any single modality, 0.75 for audio + vision or
vision + text, 0.875 for audio + text and 1 for all three. Speaker, scene and filler words are nuisances; every
feature has noise. The "world" (feature directions, word embeddings) depends on `seed` only, the clips on (seed,
split).

`FeatureClips` reads pre-extracted features: `<root>/labels.csv` with columns clip,split,label (clip = a file name
stem, split train or test, label 0/1; other columns such as season,episode,start,end are kept out of the examples)
and `<root>/<clip>.npz` with arrays audio (Da,), vision (Dv,), text (L, Dt). `write_feature_clips` writes that layout.
"""

import csv
import pathlib

import numpy as np

from storyjax.data.pipeline import ArraySource
from storyjax.errors import ConfigError, DataError

MODALITIES = ("audio", "vision", "text")  # the published order of the fused token stack
SPLITS = ("train", "test")
KINDS = ("funny", "no_reaction", "wrong_delivery", "no_joke", "flat_delivery")
NEGATIVE_KIND_PROBABILITIES = (0.3, 0.1, 0.3, 0.3)
NUM_SPEAKERS, NUM_SCENES = 10, 8
LABELS_FILE = "labels.csv"


def _unit(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
  vectors = rng.normal(size=(count, dim))
  return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


class FunnyClips(ArraySource):
  """`size` procedural clips of `split` (see the module docstring); item keys: audio, vision, text, label, kind.

  Sizes: audio (audio_dim,), vision (vision_dim,), text (text_length, text_dim); K = num_cues joke types; the
  vocabulary holds S_1..S_K, P_1..P_K and fillers. `noise` is the per-feature Gaussian noise relative to unit
  event directions.
  """

  def __init__(
    self,
    split: str,
    size: int,
    *,
    audio_dim: int,
    vision_dim: int,
    text_length: int,
    text_dim: int,
    num_cues: int = 4,
    vocabulary_size: int = 200,
    noise: float = 0.25,
    seed: int = 0,
  ):
    if split not in SPLITS:
      raise ConfigError(f"split {split!r}; choose one of {SPLITS}")
    if size < 1 or min(audio_dim, vision_dim, text_dim) < 1 or num_cues < 1 or noise < 0:
      raise ConfigError(
        f"procedural clips need size, audio_dim, vision_dim, text_dim, num_cues >= 1 and noise >= 0 (got {size}, "
        f"{audio_dim}, {vision_dim}, {text_dim}, {num_cues}, {noise})"
      )
    if text_length < 4:
      raise ConfigError(f"text_length={text_length}: a transcript needs at least 4 tokens (setup, punchline, fillers)")
    if vocabulary_size < 2 * num_cues + 2:
      raise ConfigError(f"vocabulary_size={vocabulary_size} leaves no filler words beside 2 × {num_cues} cue words")
    world = np.random.default_rng([seed, 0])
    self.audio_events = _unit(world, num_cues, audio_dim)
    self.speakers = 1.5 * _unit(world, NUM_SPEAKERS, audio_dim)
    self.reaction = _unit(world, 1, vision_dim)[0]
    self.scenes = 1.5 * _unit(world, NUM_SCENES, vision_dim)
    self.words = world.normal(size=(vocabulary_size, text_dim)).astype(np.float32)
    self.num_cues, self.noise = num_cues, noise
    rng = np.random.default_rng([seed, 1 + SPLITS.index(split)])
    kind, cue, delivery, reaction, tokens = self._sample_events(rng, size, text_length, vocabulary_size)
    audio = np.where(delivery[:, None] > 0, self.audio_events[np.maximum(delivery - 1, 0)], 0.0)
    audio = audio + self.speakers[rng.integers(NUM_SPEAKERS, size=size)]
    vision = reaction[:, None] * self.reaction + self.scenes[rng.integers(NUM_SCENES, size=size)]
    super().__init__(
      {
        "audio": (audio + noise * rng.normal(size=audio.shape)).astype(np.float32),
        "vision": (vision + noise * rng.normal(size=vision.shape)).astype(np.float32),
        "text": (self.words[tokens] + noise * rng.normal(size=(*tokens.shape, text_dim))).astype(np.float32),
        "label": (kind == 0).astype(np.int32),
        "kind": kind.astype(np.int32),
      }
    )
    self.cue, self.delivery, self.reaction_shown, self.tokens = cue, delivery, reaction, tokens

  def _sample_events(self, rng: np.random.Generator, size: int, length: int, vocabulary_size: int):
    """→ kind, cue k, delivery j, reaction r (N,) and the transcripts' word ids (N, length)."""
    num_cues = self.num_cues
    funny = rng.random(size) < 0.5
    kind = np.where(funny, 0, 1 + rng.choice(len(NEGATIVE_KIND_PROBABILITIES), size, p=NEGATIVE_KIND_PROBABILITIES))
    cue = rng.integers(1, num_cues + 1, size=size)
    other = 1 + (cue - 1 + rng.integers(1, num_cues, size=size)) % num_cues if num_cues > 1 else cue
    delivery = np.select([kind == 2, kind == 4], [other, 0], cue)
    if num_cues == 1:  # a wrong delivery needs a second joke type; fall back to a flat one
      delivery = np.where(kind == 2, 0, delivery)
    reaction = (kind != 1).astype(np.float32)
    tokens = rng.integers(2 * num_cues, vocabulary_size, size=(size, length))
    first = rng.integers(0, length // 2, size=size)
    second = rng.integers(length // 2, length, size=size)
    setup, punchline = cue - 1, num_cues + cue - 1
    decoy = rng.integers(4, size=size)  # no_joke: setup alone, punchline alone, reversed, mismatched
    rows = np.arange(size)
    joke = kind != 3
    tokens[rows[joke], first[joke]] = setup[joke]
    tokens[rows[joke], second[joke]] = punchline[joke]
    for index in np.flatnonzero(~joke):
      if decoy[index] == 0:
        tokens[index, first[index]] = setup[index]
      elif decoy[index] == 1:
        tokens[index, second[index]] = punchline[index]
      elif decoy[index] == 2:
        tokens[index, first[index]], tokens[index, second[index]] = punchline[index], setup[index]
      else:
        tokens[index, first[index]] = setup[index]
        tokens[index, second[index]] = num_cues + other[index] - 1 if num_cues > 1 else setup[index]
    cue = np.where(joke, cue, 0)
    return kind, cue, delivery, reaction, tokens


def write_feature_clips(root, source, split: str, first_clip: int = 0) -> pathlib.Path:
  """Writes every example of `source` as `<root>/<NNNNN>.npz` (5-digit clip numbers from `first_clip`, as the
  published clips are named) and appends its rows to `<root>/labels.csv`."""
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  labels_path = root / LABELS_FILE
  new_file = not labels_path.exists()
  with labels_path.open("a", newline="") as handle:
    writer = csv.writer(handle)
    if new_file:
      writer.writerow(["clip", "split", "label"])
    for index in range(len(source)):
      example, clip = source[index], f"{first_clip + index:05d}"
      np.savez(root / f"{clip}.npz", **{name: example[name] for name in MODALITIES})
      writer.writerow([clip, split, int(example["label"])])
  return root


def _read_labels(path: pathlib.Path, split: str) -> list[tuple[str, int]]:
  if not path.is_file():
    raise DataError(f"no {LABELS_FILE} in {path.parent} (columns clip,split,label; see storyjax/data/funny.py)")
  with path.open(newline="") as handle:
    reader = csv.DictReader(handle)
    missing = {"clip", "split", "label"} - set(reader.fieldnames or ())
    if missing:
      raise DataError(f"{path} lacks the columns {sorted(missing)} (needs clip,split,label)")
    rows = []
    for line, row in enumerate(reader, start=2):
      if row["split"] not in SPLITS or row["label"] not in ("0", "1"):
        raise DataError(f"{path} line {line}: split must be train or test and label 0 or 1, got {row}")
      if row["split"] == split:
        rows.append((row["clip"], int(row["label"])))
  if not rows:
    raise DataError(f"{path} has no {split} clips")
  return rows


def _read_clip(path: pathlib.Path, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
  if not path.is_file():
    raise DataError(f"missing feature file {path} (named in {LABELS_FILE})")
  try:
    with np.load(path) as arrays:
      features = {name: np.asarray(arrays[name], np.float32) for name in MODALITIES if name in arrays}
  except (OSError, ValueError) as error:
    raise DataError(f"cannot read {path}: {error}") from error
  for name, shape in expected.items():
    if name not in features:
      raise DataError(f"{path} has no array {name!r} (needs audio, vision, text)")
    if features[name].shape != shape:
      raise DataError(f"{path}: {name} has shape {features[name].shape}, the config expects {shape}")
    if not np.isfinite(features[name]).all():
      raise DataError(f"{path}: {name} holds NaN or infinite values")
  return features


class FeatureClips(ArraySource):
  """The `split` clips of a pre-extracted feature directory (layout in the module docstring), all in memory;
  shapes must equal the config's: audio (audio_dim,), vision (vision_dim,), text (text_length, text_dim)."""

  def __init__(self, root, split: str, *, audio_dim: int, vision_dim: int, text_length: int, text_dim: int):
    root = pathlib.Path(root)
    if not root.is_dir():
      raise DataError(f"data.root={str(root)!r} is not a directory")
    expected = {"audio": (audio_dim,), "vision": (vision_dim,), "text": (text_length, text_dim)}
    rows = _read_labels(root / LABELS_FILE, split)
    clips = [_read_clip(root / f"{clip}.npz", expected) for clip, _ in rows]
    arrays = {name: np.stack([clip[name] for clip in clips]) for name in MODALITIES}
    labels = np.array([label for _, label in rows], np.int32)
    super().__init__({**arrays, "label": labels, "kind": np.full(len(rows), -1, np.int32)})
