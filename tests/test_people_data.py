"""Person-track episodes: the synthetic generator's determinism, consistency and planted structure (look-alikes,
profiles, outfits, missing faces, off-screen voices), cannot-link pairs against brute force, and the episode files'
round trip and errors."""

import dataclasses
import itertools
import time

import numpy as np
import pytest

from storyjax.data.people import (
  Episode,
  EpisodeSpec,
  co_occurring_pairs,
  load_episode,
  load_episodes,
  sample_episode,
  sample_episode_with_truth,
  sample_episodes,
  save_episode,
)
from storyjax.errors import ConfigError, DataError

ARRAY_FIELDS = [field.name for field in dataclasses.fields(Episode) if field.name != "name"]
SEEDS = range(6)


@pytest.fixture(scope="module")
def generated():
  """(episode, truth) for each of SEEDS."""
  return [sample_episode_with_truth(seed) for seed in SEEDS]


def cosine(first, second) -> float:
  return float(first @ second / (np.linalg.norm(first) * np.linalg.norm(second)))


def assert_episodes_equal(actual: Episode, expected: Episode):
  assert actual.name == expected.name
  for name in ARRAY_FIELDS:
    actual_array, expected_array = getattr(actual, name), getattr(expected, name)
    assert actual_array.dtype == expected_array.dtype, name
    np.testing.assert_array_equal(actual_array, expected_array, err_msg=name)


def test_sample_episode_is_deterministic():
  assert_episodes_equal(sample_episode(3), sample_episode(3))
  assert sample_episode(3).num_tracks != sample_episode(4).num_tracks or not np.array_equal(
    sample_episode(3).face, sample_episode(4).face
  )
  episodes = sample_episodes(3, seed=7)
  assert [episode.name for episode in episodes] == ["synthetic_000", "synthetic_001", "synthetic_002"]
  assert len({episode.face_detections.tobytes() for episode in episodes}) == 3
  assert_episodes_equal(episodes[1], sample_episodes(2, seed=7)[1])


def test_shapes_dtypes_and_masks(generated):
  spec = EpisodeSpec()
  for episode, truth in generated:
    num_tracks = episode.num_tracks
    assert 80 <= num_tracks <= 300
    np.testing.assert_array_equal(episode.track_ids, np.arange(num_tracks))
    for name, dim in [("face", spec.face_dim), ("voice", spec.voice_dim), ("body", spec.body_dim)]:
      values, mask = getattr(episode, name), getattr(episode, f"has_{name}")
      assert values.shape == (num_tracks, dim) and values.dtype == np.float32
      assert mask.shape == (num_tracks,) and mask.dtype == bool
      assert not values[~mask].any(), f"missing {name} rows must be zero"
      assert np.all(np.abs(np.linalg.norm(values[mask], axis=1) - 1.0) < 0.5), f"{name} rows are unit-norm-ish"
    for name in ["identities", "shots", "track_ids", "face_detection_tracks", "cannot_link"]:
      assert getattr(episode, name).dtype == np.int64, name
    assert episode.identities.min() >= 0 and episode.identities.max() < spec.num_identities
    assert np.all(np.diff(episode.shots) >= 0), "shots are numbered consecutively over the episode"
    # Detections: only of tracks with a face, at least min_face_detections each, grouped by track; the face row is
    # their mean.
    detection_tracks = episode.face_detection_tracks
    assert episode.face_detections.shape == (len(detection_tracks), spec.face_dim)
    assert np.all(np.diff(detection_tracks) >= 0)
    counts = np.bincount(detection_tracks, minlength=num_tracks)
    np.testing.assert_array_equal(counts > 0, episode.has_face)
    assert counts[episode.has_face].min() >= spec.min_face_detections
    assert counts.max() <= spec.max_face_detections
    sums = np.zeros((num_tracks, spec.face_dim))
    np.add.at(sums, detection_tracks, episode.face_detections)
    face_rows = episode.has_face
    np.testing.assert_allclose(episode.face[face_rows], sums[face_rows] / counts[face_rows, None], atol=1e-5)
    assert episode.has_body.all(), "missing_body_rate is 0 by default"
    assert truth.scenes.shape == truth.outfits.shape == (num_tracks,)


def test_co_occurring_pairs_hand_made():
  # frame 0: tracks 2, 0 (and 0 again); frame 1: 0, 1, 2; frame 5: 3 alone; frame 9: 4, 3.
  rows = [2, 0, 0, 0, 1, 2, 3, 4, 3]
  frames = [0, 0, 0, 1, 1, 1, 5, 9, 9]
  np.testing.assert_array_equal(co_occurring_pairs(rows, frames), [[0, 1], [0, 2], [1, 2], [3, 4]])
  assert co_occurring_pairs(rows, frames).dtype == np.int64
  assert co_occurring_pairs([0, 1, 2], [0, 1, 2]).shape == (0, 2)
  assert co_occurring_pairs([], []).shape == (0, 2)
  with pytest.raises(ValueError, match="one length"):
    co_occurring_pairs([0, 1], [0])


def test_co_occurring_pairs_match_a_dense_brute_force():
  rng = np.random.default_rng(0)
  rows, frames = rng.integers(0, 40, 600), rng.integers(0, 120, 600)
  together = np.zeros((40, 40), bool)
  for frame in np.unique(frames):
    present = np.unique(rows[frames == frame])
    together[np.ix_(present, present)] = True
  expected = np.argwhere(np.triu(together, 1))
  np.testing.assert_array_equal(co_occurring_pairs(rows, frames), expected)


def test_cannot_link_are_exactly_the_overlapping_spans():
  spec = EpisodeSpec(num_scenes=5, partial_track_rate=0.8, min_partial_fraction=0.2, max_partial_fraction=0.6)
  episode = sample_episode(11, spec)
  rows, frames = episode.appearance_tracks, episode.appearance_frames
  starts = np.array([frames[rows == row].min() for row in range(episode.num_tracks)])
  stops = np.array([frames[rows == row].max() + 1 for row in range(episode.num_tracks)])
  np.testing.assert_array_equal(np.bincount(rows), stops - starts)  # spans have no gaps
  expected = [
    (first, second)
    for first, second in itertools.combinations(range(episode.num_tracks), 2)
    if starts[first] < stops[second] and starts[second] < stops[first]
  ]
  assert len(expected) > 10
  np.testing.assert_array_equal(episode.cannot_link, np.array(expected).reshape(-1, 2))
  links = episode.cannot_link
  assert np.all(links[:, 0] < links[:, 1])
  assert np.all(episode.shots[links[:, 0]] == episode.shots[links[:, 1]]), "only tracks of one shot co-occur"
  assert np.all(episode.identities[links[:, 0]] != episode.identities[links[:, 1]]), "one person, one track a shot"
  # Tracks covering part of their shot sometimes miss each other.
  linked = {tuple(pair) for pair in links.tolist()}
  same_shot = [
    pair
    for pair in itertools.combinations(range(episode.num_tracks), 2)
    if episode.shots[pair[0]] == episode.shots[pair[1]]
  ]
  assert linked < set(same_shot)


def test_lookalikes_share_frontal_faces_and_shots(generated):
  shots_with_both = shots_with_either = links_between = 0
  for episode, truth in generated:
    frontal = episode.has_face & ~truth.profile
    pair_identities = np.sort(episode.identities[episode.cannot_link], axis=1)
    for first, second in truth.lookalike_pairs:
      first_tracks, second_tracks = frontal & (episode.identities == first), frontal & (episode.identities == second)
      if first_tracks.any() and second_tracks.any():
        assert cosine(episode.face[first_tracks].mean(0), episode.face[second_tracks].mean(0)) > 0.7
      first_shots = set(episode.shots[episode.identities == first].tolist())
      second_shots = set(episode.shots[episode.identities == second].tolist())
      shots_with_both += len(first_shots & second_shots)
      shots_with_either += len(first_shots | second_shots)
      links_between += int(np.sum(np.all(pair_identities == np.sort([first, second]), axis=1)))
  # Drawn independently by screen time, a look-alike's shot would show its partner about 15 % of the time.
  assert shots_with_both / shots_with_either > 0.45
  assert links_between >= 2 * len(generated), "look-alikes shown together are cannot-linked"


def test_profile_faces_are_far_from_frontal_faces(generated):
  compared = 0
  for episode, truth in generated:
    for identity in range(EpisodeSpec().num_identities):
      tracks = episode.has_face & (episode.identities == identity)
      frontal, profile = tracks & ~truth.profile, tracks & truth.profile
      if frontal.sum() >= 2 and profile.sum() >= 2:
        frontal_mean, profile_mean = episode.face[frontal].mean(0), episode.face[profile].mean(0)
        assert cosine(frontal_mean, profile_mean) < 0.6
        halves = np.flatnonzero(frontal)
        assert cosine(episode.face[halves[::2]].mean(0), episode.face[halves[1::2]].mean(0)) > 0.9
        compared += 1
  assert compared >= 10


def test_bodies_change_with_outfits(generated):
  changed, kept = [], []
  for episode, truth in generated:
    for first, second in itertools.combinations(range(episode.num_tracks), 2):
      if episode.identities[first] != episode.identities[second] or truth.scenes[first] == truth.scenes[second]:
        continue
      similarity = cosine(episode.body[first], episode.body[second])
      (kept if truth.outfits[first] == truth.outfits[second] else changed).append(similarity)
  assert len(changed) > 100 and len(kept) > 20
  assert np.mean(changed) < 0.3 and np.mean(kept) > 0.85
  same_outfit = [truth.outfits[episode.identities == 0] for episode, truth in generated]
  assert all(len(np.unique(outfits)) > 1 for outfits in same_outfit), "the main character changes clothes"


def test_missing_face_rate(generated):
  has_face = np.concatenate([episode.has_face for episode, _ in generated])
  assert len(has_face) > 500
  assert abs((~has_face).mean() - EpisodeSpec().missing_face_rate) < 0.06


def test_offscreen_voices(generated):
  voiced = np.concatenate([episode.has_voice for episode, _ in generated])
  assert abs(voiced.mean() - EpisodeSpec().speaking_rate) < 0.07
  offscreen, matches = [], []
  for episode, truth in generated:
    speaking = episode.has_voice
    offscreen.append(truth.voice_identities[speaking] != episode.identities[speaking])
    assert np.all(truth.voice_identities[~speaking] == -1)
    # The voice feature is the speaker's: nearest to the mean voice of that identity's on-screen speech.
    onscreen = speaking & (truth.voice_identities == episode.identities)
    speakers = np.unique(episode.identities[onscreen])
    means = np.stack([episode.voice[onscreen & (episode.identities == speaker)].mean(0) for speaker in speakers])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    heard = speaking & np.isin(truth.voice_identities, speakers)
    nearest = speakers[np.argmax(episode.voice[heard] @ means.T, axis=1)]
    matches.append(nearest == truth.voice_identities[heard])
  offscreen = np.concatenate(offscreen)
  assert abs(offscreen.mean() - EpisodeSpec().offscreen_voice_rate) < 0.05
  assert offscreen.sum() >= 10
  assert np.concatenate(matches).mean() > 0.95


def test_spec_is_checked():
  with pytest.raises(ConfigError, match="blur_rate"):
    EpisodeSpec(blur_rate=1.5)
  with pytest.raises(ConfigError, match="min_cast"):
    EpisodeSpec(min_cast=1)
  with pytest.raises(ConfigError, match="num_lookalike_pairs"):
    EpisodeSpec(num_identities=3, num_lookalike_pairs=2)


def test_save_load_round_trip(tmp_path):
  episode = sample_episode(5, EpisodeSpec(num_scenes=5, missing_body_rate=0.2), name="round_trip")
  save_episode(episode, tmp_path / episode.name)
  assert (tmp_path / episode.name / "tracks.csv").read_text().startswith("track,frame,shot,identity\n")
  assert_episodes_equal(load_episode(tmp_path / episode.name), episode)

  unlabelled = dataclasses.replace(
    episode,
    name="unlabelled",
    identities=np.full(episode.num_tracks, -1, np.int64),
    voice=np.zeros((episode.num_tracks, 0), np.float32),
    has_voice=np.zeros(episode.num_tracks, bool),
  )
  save_episode(unlabelled, tmp_path / "unlabelled")
  assert (tmp_path / "unlabelled" / "tracks.csv").read_text().startswith("track,frame,shot\n")
  with np.load(tmp_path / "unlabelled" / "features.npz") as archive:
    assert "voice" not in archive.files
  assert_episodes_equal(load_episode(tmp_path / "unlabelled"), unlabelled)

  loaded = load_episodes(tmp_path)
  assert [item.name for item in loaded] == ["round_trip", "unlabelled"]


def write_episode(directory, tracks_csv: str, **arrays):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "tracks.csv").write_text(tracks_csv)
  np.savez(directory / "features.npz", **arrays)


def test_load_hand_made_episode(tmp_path):
  # Track ids 12, 3, 7 (rows 2, 0, 1 once sorted); 3 and 12 share frame 11; 7 has no face, 12 no voice.
  tracks_csv = "track,frame,shot\n12,10,1\n12,11,1\n3,11,1\n3,12,1\n7,40,2\n"
  face = np.array([[np.nan, np.nan], [0.0, 1.0], [1.0, 0.0]], np.float32)  # rows of tracks 7, 3, 12
  voice = np.array([[0.5], [0.25], [np.nan]], np.float32)
  write_episode(tmp_path / "hand", tracks_csv, track=np.array([7, 3, 12]), face=face, voice=voice)
  episode = load_episode(tmp_path / "hand")
  np.testing.assert_array_equal(episode.track_ids, [3, 7, 12])
  np.testing.assert_array_equal(episode.shots, [1, 2, 1])
  np.testing.assert_array_equal(episode.identities, [-1, -1, -1])
  np.testing.assert_array_equal(episode.has_face, [True, False, True])
  np.testing.assert_array_equal(episode.face, [[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
  np.testing.assert_array_equal(episode.has_voice, [True, True, False])
  np.testing.assert_array_equal(episode.voice, [[0.25], [0.5], [0.0]])
  assert episode.body.shape == (3, 0) and not episode.has_body.any()
  np.testing.assert_array_equal(episode.face_detections, [[0.0, 1.0], [1.0, 0.0]])
  np.testing.assert_array_equal(episode.face_detection_tracks, [0, 2])
  np.testing.assert_array_equal(episode.cannot_link, [[0, 2]])

  detections = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]], np.float32)
  write_episode(
    tmp_path / "detections",
    tracks_csv,
    track=np.array([7, 3, 12]),
    face=face,
    face_detections=detections,
    face_detection_track=np.array([12, 3, 12, 3]),
  )
  episode = load_episode(tmp_path / "detections")
  np.testing.assert_array_equal(episode.face_detection_tracks, [0, 0, 2, 2])
  np.testing.assert_array_equal(episode.face_detections, detections[[1, 3, 0, 2]])


@pytest.mark.parametrize(
  ("case", "message"),
  [
    ("no_tracks_file", r"tracks\.csv does not exist"),
    ("no_features_file", r"features\.npz does not exist"),
    ("no_shot_column", r"tracks\.csv has no column 'shot'"),
    ("two_shots", r"tracks\.csv: track 3 has several values in column 'shot'"),
    ("two_identities", r"tracks\.csv: track 3 has several values in column 'identity'"),
    ("different_tracks", r"tracks\.csv and .*features\.npz hold different tracks.*track 12 is only in .*tracks\.csv"),
    ("nan_in_present_row", r"features\.npz: the 'face' row of track 3 has non-finite values"),
    ("wrong_shape", r"features\.npz: 'body' must be a \(2, D\)"),
    ("not_integers", r"tracks\.csv has a row that is not 3 integers"),
    ("detection_of_faceless_track", r"features\.npz: track 12 has face detections but its 'face' row is missing"),
  ],
)
def test_load_errors_name_the_file(tmp_path, case, message):
  tracks_csv = "track,frame,shot,identity\n3,0,0,1\n3,1,0,1\n12,1,0,2\n"
  arrays = {"track": np.array([3, 12]), "face": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)}
  if case == "no_shot_column":
    tracks_csv = "track,frame,identity\n3,0,1\n"
  if case == "two_shots":
    tracks_csv += "3,2,1,1\n"
  if case == "two_identities":
    tracks_csv += "3,2,0,4\n"
  if case == "not_integers":
    tracks_csv = "track,frame,shot\n3,0.5,0\n"
  if case == "different_tracks":
    arrays["track"] = np.array([3, 4])
  if case == "nan_in_present_row":
    arrays["face"][0, 1] = np.nan
  if case == "wrong_shape":
    arrays["body"] = np.zeros((3, 4), np.float32)
  if case == "detection_of_faceless_track":
    arrays["face"][1] = np.nan
    arrays["face_detections"] = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    arrays["face_detection_track"] = np.array([3, 12])
  directory = tmp_path / "episode"
  write_episode(directory, tracks_csv, **arrays)
  if case == "no_tracks_file":
    (directory / "tracks.csv").unlink()
  if case == "no_features_file":
    (directory / "features.npz").unlink()
  with pytest.raises(DataError, match=message) as error:
    load_episode(directory)
  assert str(directory) in str(error.value)


def test_load_episodes_needs_an_episode(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no episode subdirectory"):
    load_episodes(tmp_path)


def test_generation_is_fast():
  start = time.perf_counter()
  for seed in range(5):
    sample_episode(seed)
  assert (time.perf_counter() - start) / 5 < 0.2
