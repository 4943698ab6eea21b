"""FunnyNet-W's laughter detector and clip labels (storyjax/data/laughter.py).

The detector on synthetic sitcom tracks with planted events (reactions found, music dropped, centred dialogue
cancelled), auditok's segmentation rules on a hand-made signal, the log-mel against an independent DFT and mel-scale
reference, k-means on separated blobs, and the clip windows, masks and scores on cases worked out by hand.
"""

import math

import numpy as np
import pytest

from storyjax.data import laughter
from storyjax.errors import DataError

pytestmark = pytest.mark.usefixtures("fast_compile")

RATE = 16000
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def episodes():
  return [laughter.synthetic_episode(seed, sample_rate=RATE) for seed in SEEDS]


def _overlap(segment, spans) -> float:
  """Seconds `segment` shares with the span of `spans` it overlaps most; 0 if none."""
  return max([0.0, *(min(segment[1], end) - max(segment[0], start) for start, end in spans)])


def test_detector_finds_the_reactions_and_drops_the_music(episodes):
  found = laughter.detect_laughter([audio for audio, _ in episodes], RATE)
  for detected, (_, truth) in zip(found, episodes):
    reactions = laughter.merge_segments(np.concatenate([truth["laughter"], truth["applause"]]))
    assert laughter.detection_scores(detected, reactions)[0.5]["f1"] >= 0.9
    assert laughter.frame_scores(detected, reactions, 120.0)["f1"] >= 0.9
    # every planted laugh is found; what else is returned is applause (k = 3 keeps two clusters), never music
    assert laughter.detection_scores(detected, truth["laughter"])[0.5]["recall"] == 1.0
    for segment in detected:
      assert _overlap(segment, truth["music"]) == 0.0
      assert _overlap(segment, truth["laughter"]) > 0 or _overlap(segment, truth["applause"]) > 0
    assert np.all(np.diff(detected[:, 0]) > 0) and np.all(detected[1:, 0] > detected[:-1, 1])  # merged, sorted


def test_the_dropped_cluster_is_the_music(episodes):
  found = laughter.cluster_segments([audio for audio, _ in episodes], RATE)
  dropped = 0
  for candidates, clusters, (_, truth) in zip(found.candidates, found.clusters, episodes):
    for segment, cluster in zip(candidates, clusters):
      assert (cluster == found.music_cluster) == (_overlap(segment, truth["music"]) > 0)
    dropped += int(np.sum(clusters == found.music_cluster))
  assert dropped == sum(len(truth["music"]) for _, truth in episodes)


def test_centred_dialogue_cancels_in_l_minus_r():
  audio, truth = laughter.synthetic_episode(5, duration=30.0, num_laughs=0, num_applause=0, num_music=0)
  assert len(truth["dialogue"]) > 5
  signal, threshold = laughter.source_channel(audio)
  assert threshold == 57.0
  assert laughter.energy_segments(signal, RATE, threshold).shape == (0, 2)
  # the same dialogue as a mono track (nothing cancels it) is found
  mono, threshold = laughter.source_channel(audio[:, :1])
  assert threshold == 57.0 and len(laughter.energy_segments(mono, RATE, threshold)) > 0


def test_source_channel():
  rng = np.random.default_rng(0)
  stereo = rng.uniform(-0.5, 0.5, (100, 2)).astype(np.float32)
  signal, threshold = laughter.source_channel(stereo)
  np.testing.assert_allclose(signal, (stereo[:, 0].astype(float) - stereo[:, 1]) * 32768.0)
  assert threshold == 57.0
  surround = rng.integers(-1000, 1000, (100, 6)).astype(np.int16)
  signal, threshold = laughter.source_channel(surround)
  np.testing.assert_array_equal(signal, surround[:, 0].astype(float))
  assert threshold == 45.0
  np.testing.assert_allclose(laughter.source_channel(surround / 32768.0)[0], signal)  # int16 ≡ float / 32768


def test_energy_segments_follow_auditok_rules():
  """1 kHz, 50-sample analysis windows; loud = a ±3000 square wave (69.5 dB), silent = zeros."""
  rate = 1000
  loud_spans = [
    (0.0, 1.0),  # from the start: the widening is clipped at 0
    (3.0, 3.5),  # 0.5 s + 0.1 s of kept trailing silence < min_dur 0.8: dropped
    (5.0, 5.5),  # bridged to the next by a 0.1 s gap (max_silence)
    (5.6, 6.1),
    (8.0, 8.5),  # a 0.15 s gap is not bridged: two 0.6 s pieces, both dropped
    (8.65, 9.15),
    (11.0, 23.0),  # longer than max_dur 11 s: cut at 22 s, the rest continues as its own segment
    (25.0, 26.0),  # to the end: no trailing silence, widening clipped at 26
  ]
  signal = np.zeros(26 * rate)
  square = 3000.0 * (-1.0) ** np.arange(len(signal))
  for start, end in loud_spans:
    signal[round(start * rate) : round(end * rate)] = square[round(start * rate) : round(end * rate)]
  np.testing.assert_allclose(laughter.frame_energies(signal[:100], rate), 20 * math.log10(3000.0))
  raw = laughter.energy_segments(signal, rate, 57.0, widen=0.0)
  np.testing.assert_allclose(raw, [[0.0, 1.1], [5.0, 6.2], [11.0, 22.0], [22.0, 23.1], [25.0, 26.0]], atol=1e-9)
  widened = laughter.energy_segments(signal, rate, 57.0)
  np.testing.assert_allclose(widened, [[0.0, 1.7], [4.4, 6.8], [10.4, 22.6], [21.4, 23.7], [24.4, 26.0]], atol=1e-9)
  assert laughter.energy_segments(signal, rate, 70.0).shape == (0, 2)  # all below a higher threshold


def _reference_log_mel(signal: np.ndarray) -> np.ndarray:
  """BYOL-A's log-mel at 16 kHz written out: reflect padding by index, a DFT matrix, triangle filters one by one."""
  n_fft, hop, num_mels = 1024, 160, 64
  half = n_fft // 2
  indices = np.arange(-half, len(signal) + half)
  indices = np.abs(indices)
  indices = np.where(indices >= len(signal), 2 * (len(signal) - 1) - indices, indices)
  padded = signal[indices]
  window = np.sin(np.pi * np.arange(n_fft) / n_fft) ** 2  # periodic Hann
  dft = np.exp(-2j * np.pi * np.outer(np.arange(half + 1), np.arange(n_fft)) / n_fft)
  frames = 1 + len(signal) // hop
  power = np.stack([np.abs(dft @ (padded[f * hop : f * hop + n_fft] * window)) ** 2 for f in range(frames)])
  mel = lambda hz: 2595.0 * math.log10(1.0 + hz / 700.0)
  hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  edges = [hz(mel(60.0) + i * (mel(7800.0) - mel(60.0)) / (num_mels + 1)) for i in range(num_mels + 2)]
  bins = np.arange(half + 1) * 8000.0 / half
  filters = np.zeros((num_mels, half + 1))
  for m in range(num_mels):
    low, centre, high = edges[m : m + 3]
    for b, f in enumerate(bins):
      if low < f <= centre:
        filters[m, b] = (f - low) / (centre - low)
      elif centre < f < high:
        filters[m, b] = (high - f) / (high - centre)
  log_mel = np.log(power @ filters.T + np.finfo(np.float32).eps)
  return (log_mel + 5.4919195) / 5.0389895


def test_log_mel_matches_a_reference_and_finds_a_tone():
  rng = np.random.default_rng(0)
  signal = rng.normal(0.0, 0.1, 4000)
  ours = laughter.log_mel(signal, RATE)
  assert ours.shape == (26, 64) and ours.dtype == np.float32
  np.testing.assert_allclose(ours, _reference_log_mel(signal), rtol=1e-4, atol=1e-4)
  # a 1 kHz tone peaks in the filter centred nearest 1 kHz on the mel scale, at 16 kHz and resampled from 44.1 kHz
  mel = lambda hz: 2595.0 * np.log10(1.0 + hz / 700.0)
  centres = np.linspace(mel(60.0), mel(7800.0), 66)[1:-1]
  expected = int(np.abs(centres - mel(1000.0)).argmin())
  for rate in (RATE, 44100):
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(rate) / rate)
    spectrogram = laughter.log_mel(tone, rate)
    assert spectrogram.shape == (101, 64)
    assert np.all(spectrogram[5:-5].argmax(axis=1) == expected)


def test_segment_embeddings_are_mean_and_max_of_the_log_mel():
  rng = np.random.default_rng(1)
  signal = rng.normal(0.0, 0.1, 3 * RATE)
  segments = np.array([[0.0, 1.0], [1.25, 2.9]])
  features = laughter.segment_embeddings(signal, RATE, segments)
  assert features.shape == (2, 128)
  mel = laughter.log_mel(signal[20000:46400], RATE)
  np.testing.assert_allclose(features[1], np.concatenate([mel.mean(0), mel.max(0)]), rtol=1e-6)
  assert laughter.segment_embeddings(signal, RATE, np.zeros((0, 2))).shape == (0, 128)


def test_kmeans_recovers_separated_blobs():
  rng = np.random.default_rng(0)
  sizes, centres = (50, 30, 10), rng.normal(0.0, 10.0, (3, 5))
  truth = np.repeat(np.arange(3), sizes)
  points = centres[truth] + rng.normal(0.0, 0.5, (len(truth), 5))
  order = rng.permutation(len(truth))
  labels = laughter.kmeans(points[order], 3, seed=3)
  truth = truth[order]
  blob_labels = [set(labels[truth == blob].tolist()) for blob in range(3)]
  assert all(len(found) == 1 for found in blob_labels)  # each blob is one cluster
  assert len(set.union(*blob_labels)) == 3  # and the three clusters differ
  np.testing.assert_array_equal(labels, laughter.kmeans(points[order], 3, seed=3))


def test_clip_windows():
  spans = np.array([[20.0, 22.0], [3.0, 5.0], [40.0, 41.0], [40.5, 40.8]])  # unsorted, one laugh inside another
  starts, labels = laughter.clip_windows(spans, duration=60.0)
  np.testing.assert_allclose(starts, [0.0, 5.0, 12.0, 22.0, 30.0, 32.0, 41.0, 49.0])
  np.testing.assert_array_equal(labels, [1, 0, 1, 0, 0, 1, 0, 0])
  merged = laughter.merge_segments(spans)
  for start in starts[labels == 1]:  # [onset − 8, onset], or [0, 8] for an onset before 8 s
    assert np.any(np.isclose(start + 8.0, merged[:, 0])) or (start == 0.0 and merged[0, 0] < 8.0)
  for start in starts[labels == 0]:  # no laughter inside, none starting within 1 s after
    assert all(end <= start or onset >= start + 9.0 for onset, end in merged)
  starts, labels = laughter.clip_windows(np.zeros((0, 2)), duration=20.0)
  np.testing.assert_allclose(starts, [0.0, 8.0])
  np.testing.assert_array_equal(labels, [0, 0])


def test_mask_laughter_zeroes_exactly_the_spans():
  audio = np.ones((300, 2), np.int16)
  masked = laughter.mask_laughter(audio, 100, [[0.5, 1.0], [2.25, 2.5]])
  expected = np.ones((300, 2), np.int16)
  expected[50:100] = 0
  expected[225:250] = 0
  np.testing.assert_array_equal(masked, expected)
  assert masked.dtype == np.int16 and np.all(audio == 1)


def test_detection_scores():
  truth = np.array([[0.0, 10.0], [20.0, 30.0]])
  predicted = np.array([[0.0, 10.0], [24.0, 30.0], [50.0, 60.0]])  # IoUs 1, 0.6, none
  scores = laughter.detection_scores(predicted, truth)
  assert set(scores) == {0.3, 0.4, 0.5, 0.6, 0.7}
  for threshold in (0.3, 0.4, 0.5, 0.6):
    assert scores[threshold] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
  assert scores[0.7] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4})
  twice = laughter.detection_scores([[0.0, 10.0], [1.0, 10.0]], [[0.0, 10.0]], thresholds=(0.5,))  # one-to-one
  assert twice[0.5] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3})
  assert laughter.detection_scores(np.zeros((0, 2)), truth)[0.5] == {"precision": 1.0, "recall": 0.0, "f1": 0.0}
  assert laughter.detection_scores([], [])[0.5] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_frame_scores_ignore_frames_near_true_edges():
  """Frames of 0.1 s on [0, 10); truth [2, 6), prediction [3, 8); frames within 0.5 s of 2 or 6 are ignored:
  80 kept, 30 true, 40 predicted, 25 both."""
  scores = laughter.frame_scores([[3.0, 8.0]], [[2.0, 6.0]], duration=10.0, resolution=0.1)
  assert scores == pytest.approx({"accuracy": 60 / 80, "precision": 25 / 40, "recall": 25 / 30, "f1": 50 / 70})


def test_synthetic_episode():
  audio, truth = laughter.synthetic_episode(3, duration=40.0, num_laughs=3, num_applause=2, num_music=1)
  again, _ = laughter.synthetic_episode(3, duration=40.0, num_laughs=3, num_applause=2, num_music=1)
  assert audio.shape == (40 * RATE, 2) and audio.dtype == np.float32
  np.testing.assert_array_equal(audio, again)
  assert np.abs(audio).max() < 1.0
  assert {kind: len(spans) for kind, spans in truth.items()} == {
    "laughter": 3,
    "applause": 2,
    "music": 1,
    "dialogue": len(truth["dialogue"]),
  }
  events = np.sort(np.concatenate([truth["laughter"], truth["applause"], truth["music"]]), axis=0)
  assert np.all(events[1:, 0] - events[:-1, 1] >= 2.0)


@pytest.mark.parametrize(
  ("call", "message"),
  [
    (lambda: laughter.source_channel(np.zeros((100, 3))), r"\(100, 3\)"),
    (lambda: laughter.source_channel(np.zeros(100)), r"\(100,\)"),
    (lambda: laughter.source_channel(np.zeros((100, 2), np.int32)), "int32"),
    (lambda: laughter.energy_segments(np.zeros(100), 1000, 57.0, min_dur=2.0, max_dur=1.0), "min ≤ max"),
    (lambda: laughter.energy_segments(np.zeros((100, 2)), 1000, 57.0), "one finite channel"),
    (lambda: laughter.log_mel(np.zeros(300), RATE), "too short"),
    (lambda: laughter.kmeans(np.zeros((2, 3)), 3), "N=2"),
    (lambda: laughter.detect_laughter([np.zeros((RATE, 2), np.float32)] * 2, RATE), "fewer than num_clusters=3"),
    (
      lambda: laughter.detect_laughter(
        [laughter.synthetic_episode(0, duration=30.0, num_laughs=2, num_applause=1, num_music=1)[0]],
        RATE,
        embed=lambda signal, rate, segments: np.zeros((1, 4)),
      ),
      r"embed gave shape \(1, 4\)",
    ),
    (lambda: laughter.clip_windows([[1.0, 2.0]], duration=5.0), "shorter than one 8.0 s window"),
    (lambda: laughter.clip_windows([[1.0, 12.0]], duration=10.0), "after the episode"),
    (lambda: laughter.detection_scores([[2.0, 1.0]], [[0.0, 1.0]]), "start ≤ end"),
    (lambda: laughter.mask_laughter(np.zeros((10, 2)), 100, [1.0, 2.0]), r"\(2,\)"),
    (lambda: laughter.synthetic_episode(0, duration=10.0), "too short"),
  ],
)
def test_bad_inputs_raise_data_errors(call, message):
  with pytest.raises(DataError, match=message):
    call()
