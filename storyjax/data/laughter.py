"""FunnyNet-W's labels from the laugh track (thesis §2.2): an unsupervised laughter detector, clip windows, scores.

The detector follows the authors' `laughter_detection/core/laughter_detector.py`:
1. `source_channel`: a stereo track's L − R (dialogue is mixed to the centre, so the difference keeps the laugh
   track) with energy threshold 57 dB; a 5.1 track's channel 0 with 45 dB. A mono track (our choice: the facts are
   silent) is used as it is with the stereo threshold 57 dB; nothing cancels the dialogue there, so the clusters must
   separate it.
2. `energy_segments`: auditok's `split(min_dur=0.8, max_dur=11, max_silence=0.1)` re-implemented on numpy, each
   segment widened by ±0.6 s.
3. `segment_embeddings`: each segment of the raw channel 0 is embedded. The paper uses BYOL-A (d=2048) on the BYOL
   log-mel; its weights cannot be fetched here, so the default embedding is the mean and the max over time of that
   log-mel (S, 128). `detect_laughter` takes any `embed` returning (S, D).
4. k-means (k=3) over all segments of all episodes; the least-populated cluster is dropped as music; the kept
   segments are merged per episode where they overlap.

Conventions. Waveforms are float in [-1, 1] or int16; `energy_segments` works on the int16 amplitude scale
(float × 32768, as auditok reads 16-bit files and scales float32 ones), so its dB thresholds keep auditok's meaning.
Segments are (N, 2) float64 [start, end) in seconds.

Clip labels (`clip_windows`): the funny window of a laughter onset `a` is [a − 8, a], or [0, 8] when a < 8. The
authors read the not-funny windows from a file; ours (our choice) are 8 s windows containing no laughter and with no
laughter starting within `gap` = 1 s after them, packed back to back from the end of each laughter (or the episode
start) through each laughter-free stretch. They may overlap a funny window, which covers only the 8 s before an
onset. Before cutting clips, `mask_laughter` silences the laughter (the authors' `mask_audio.py`).

Scores (`detection_scores`, `frame_scores`) follow the authors' `evaluation.py`: detection P/R/F1 at temporal IoU
thresholds 0.3…0.7, and frame-level accuracy/P/R/F1 on time, ignoring frames within 0.5 s of a true segment's edge.

`synthetic_episode` makes a stereo sitcom track with a known answer: centred dialogue (cancels in L − R), laughter,
applause and music stings (all three stereo, so they survive L − R), music the rarest. Note what the k = 3 rule
implies: only the least-populated cluster is dropped, so a third real group (here applause) is returned with the
laughter — the detector finds audience reactions, not laughter alone.
"""

from collections.abc import Callable, Sequence
import math
from typing import NamedTuple

import numpy as np
from scipy import signal as scipy_signal

# BYOL-A's log-mel is the one the stress data uses (HTK filters, centred STFT, log(mel + ε), AudioSet statistics).
from storyjax.data.audio import log_mel_spectrogram, normalise_log_mel
from storyjax.errors import DataError

INT16_SCALE = 32768.0  # full scale of 16-bit audio: float samples in [-1, 1] × this = auditok's amplitude scale
STEREO_THRESHOLD = 57.0  # dB, L − R of a stereo track (and, our choice, a mono track)
SURROUND_THRESHOLD = 45.0  # dB, channel 0 of a 5.1 track
MIN_DURATION = 0.8  # s
MAX_DURATION = 11.0  # s
MAX_SILENCE = 0.1  # s
ANALYSIS_WINDOW = 0.05  # s, auditok's default
WIDEN = 0.6  # s, each side
# BYOL-A's log-mel configuration.
MEL_RATE = 16000  # Hz
MEL_N_FFT = 1024  # = the window's length
MEL_HOP = 160
NUM_MELS = 64
MEL_FMIN = 60.0  # Hz
MEL_FMAX = 7800.0  # Hz
CLIP_SECONDS = 8.0
IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
EDGE_GAP = 0.5  # s
_ENERGY_FLOOR = 1e-10  # RMS floor before the log (auditok's)
_DURATION_EPSILON = 1e-10  # auditok rounds max_dur and max_silence down after adding this

Embed = Callable[[np.ndarray, int, np.ndarray], np.ndarray]  # (signal (T,) in [-1, 1], rate, (S, 2)) → (S, D)


class SegmentClusters(NamedTuple):
  """What the detector's clustering saw: per episode the candidate segments (S_e, 2) and their cluster (S_e,)."""

  candidates: list[np.ndarray]
  clusters: list[np.ndarray]
  music_cluster: int  # the least-populated cluster, dropped


def _full_scale(audio: np.ndarray, name: str = "audio") -> np.ndarray:
  """int16 or float audio (any shape) → float64 in [-1, 1] units."""
  audio = np.asarray(audio)
  if audio.dtype == np.int16:
    return audio.astype(np.float64) / INT16_SCALE
  if not np.issubdtype(audio.dtype, np.floating):
    raise DataError(f"{name} has dtype {audio.dtype}; give int16 samples or float samples in [-1, 1]")
  if not np.all(np.isfinite(audio)):
    raise DataError(f"{name} has non-finite samples; clean the waveform first")
  return audio.astype(np.float64)


def _track(audio: np.ndarray, name: str = "audio") -> np.ndarray:
  """(T, C) int16/float → (T, C) float64 in [-1, 1]; C must be 1, 2 or 6."""
  audio = _full_scale(audio, name)
  if audio.ndim != 2 or audio.shape[1] not in (1, 2, 6) or audio.shape[0] == 0:
    raise DataError(
      f"{name} of shape {audio.shape}: expected (T, C) samples with C = 1 (mono), 2 (stereo) or 6 (5.1) channels"
    )
  return audio


def _check_rate(sample_rate) -> int:
  if int(sample_rate) != sample_rate or sample_rate <= 0:
    raise DataError(f"sample_rate={sample_rate} must be a positive whole number of Hz")
  return int(sample_rate)


def _segments(segments, name: str = "segments") -> np.ndarray:
  """(N, 2) [start, end) seconds → float64 (N, 2), checked."""
  segments = np.asarray(segments, np.float64)
  if segments.size == 0:
    return np.zeros((0, 2))
  if segments.ndim != 2 or segments.shape[1] != 2:
    raise DataError(f"{name} of shape {segments.shape}: expected (N, 2) [start, end] seconds")
  if not np.all(np.isfinite(segments)) or np.any(segments[:, 1] < segments[:, 0]) or np.any(segments[:, 0] < 0):
    raise DataError(f"{name} must be finite [start, end] pairs with 0 ≤ start ≤ end, got {segments.tolist()}")
  return segments


def merge_segments(segments) -> np.ndarray:
  """(N, 2) → (M, 2) sorted, with segments that overlap or touch joined."""
  segments = _segments(segments)
  if len(segments) == 0:
    return segments
  segments = segments[np.argsort(segments[:, 0], kind="stable")]
  merged = [segments[0].copy()]
  for start, end in segments[1:]:
    if start <= merged[-1][1]:
      merged[-1][1] = max(merged[-1][1], end)
    else:
      merged.append(np.array([start, end]))
  return np.stack(merged)


def source_channel(audio: np.ndarray) -> tuple[np.ndarray, float]:
  """(T, C) int16 or float in [-1, 1] → (signal (T,) float64 on the int16 scale, energy threshold in dB).

  Stereo: L − R at 57 dB; 5.1: channel 0 at 45 dB; mono: itself at 57 dB.
  """
  audio = _track(audio) * INT16_SCALE
  if audio.shape[1] == 2:
    return audio[:, 0] - audio[:, 1], STEREO_THRESHOLD
  if audio.shape[1] == 6:
    return audio[:, 0], SURROUND_THRESHOLD
  return audio[:, 0], STEREO_THRESHOLD


def frame_energies(signal: np.ndarray, sample_rate: int, analysis_window: float = ANALYSIS_WINDOW) -> np.ndarray:
  """(T,) on the int16 scale → (F,) dB, 20·log10(RMS) of consecutive analysis windows (the last one may be short)."""
  signal = np.asarray(signal, np.float64)
  window = round(analysis_window * sample_rate)
  if window < 1:
    raise DataError(f"analysis_window={analysis_window} s is shorter than one sample at {sample_rate} Hz")
  num_frames = -(-len(signal) // window)
  padded = np.zeros(num_frames * window)
  padded[: len(signal)] = signal**2
  lengths = np.full(num_frames, window)
  lengths[-1:] = len(signal) - (num_frames - 1) * window
  rms = np.sqrt(padded.reshape(num_frames, window).sum(axis=1) / lengths)
  return 20.0 * np.log10(np.maximum(rms, _ENERGY_FLOOR))


def _tokenize(active: np.ndarray, min_length: int, max_length: int, max_silence: int) -> list[tuple[int, int]]:
  """Frames' activity (F,) bool → [first, stop) frame spans, as auditok's StreamTokenizer in `split`'s default mode.

  A span opens at an active frame, tolerates runs of up to `max_silence` inactive frames (kept at its end: trailing
  silence is not dropped), is cut at `max_length` frames (the next span then continues at once and is kept even when
  shorter than `min_length`), and otherwise needs `min_length` frames in all.
  """
  spans = []
  state = "idle"  # "idle" | "active" | "tolerating"
  start = length = silence = 0
  contiguous = False  # the previous span was cut at max_length right before this one

  def deliver(truncated: bool, frame: int) -> None:
    nonlocal start, length, contiguous
    if length >= min_length or (length > 0 and contiguous):
      spans.append((start, start + length))
      contiguous = truncated
      if truncated:
        start = frame + 1
    else:
      contiguous = False
    length = 0

  for frame, is_active in enumerate(active):
    if state == "idle":
      if is_active:
        start, length, silence, state = frame, 1, 0, "active"
        if length >= max_length:
          deliver(True, frame)
    elif state == "active":
      if is_active:
        length += 1
        if length >= max_length:
          deliver(True, frame)
      elif max_silence <= 0:
        deliver(False, frame)
        state = "idle"
      else:
        silence, state = 1, "tolerating"
        length += 1
        if length >= max_length:
          deliver(True, frame)
    elif is_active:
      length, silence, state = length + 1, 0, "active"
      if length >= max_length:
        deliver(True, frame)
    elif silence >= max_silence:
      if silence < length:
        deliver(False, frame)
      else:  # only tolerated silence since a cut: nothing to keep
        length = 0
      state, silence = "idle", 0
    else:
      length, silence = length + 1, silence + 1
      if length >= max_length:
        deliver(True, frame)
  if state != "idle" and length > silence:
    deliver(False, len(active))
  return spans


def energy_segments(
  signal: np.ndarray,
  sample_rate: int,
  energy_threshold: float,
  min_dur: float = MIN_DURATION,
  max_dur: float = MAX_DURATION,
  max_silence: float = MAX_SILENCE,
  analysis_window: float = ANALYSIS_WINDOW,
  widen: float = WIDEN,
) -> np.ndarray:
  """(T,) on the int16 scale → (S, 2) seconds: auditok-style non-silent segments, widened by ±`widen`, clipped.

  A frame of `analysis_window` s is active when its energy (`frame_energies`) is ≥ `energy_threshold` dB. Durations
  become frame counts as auditok's `split` makes them: min_dur rounded up, max_dur and max_silence rounded down.
  """
  sample_rate = _check_rate(sample_rate)
  signal = np.asarray(signal, np.float64)
  if signal.ndim != 1 or not np.all(np.isfinite(signal)):
    raise DataError(f"signal of shape {signal.shape} must be one finite channel (T,); pick it with source_channel")
  if min(min_dur, max_dur, analysis_window) <= 0 or max_silence < 0 or widen < 0:
    raise DataError(
      f"min_dur={min_dur}, max_dur={max_dur}, analysis_window={analysis_window} must be > 0 and "
      f"max_silence={max_silence}, widen={widen} ≥ 0"
    )
  min_length = math.ceil(min_dur / analysis_window)
  max_length = math.floor(max_dur / analysis_window + _DURATION_EPSILON)
  max_silent_frames = math.floor(max_silence / analysis_window + _DURATION_EPSILON)
  if not max_silent_frames < max_length or not min_length <= max_length:
    raise DataError(
      f"min_dur={min_dur} s, max_silence={max_silence} s and max_dur={max_dur} s give {min_length}, "
      f"{max_silent_frames} and {max_length} windows of {analysis_window} s: need min ≤ max and silence < max"
    )
  duration = len(signal) / sample_rate
  if len(signal) == 0:
    return np.zeros((0, 2))
  active = frame_energies(signal, sample_rate, analysis_window) >= energy_threshold
  spans = np.array(_tokenize(active, min_length, max_length, max_silent_frames), np.float64).reshape(-1, 2)
  seconds = np.minimum(spans * (round(analysis_window * sample_rate) / sample_rate), duration)
  return np.clip(seconds + np.array([-widen, widen]), 0.0, duration)


def log_mel(signal: np.ndarray, sample_rate: int) -> np.ndarray:
  """(T,) float in [-1, 1] → (frames, 64) float32 normalised BYOL-A log-mel: 16 kHz (resampled if needed), n_fft =
  window 1024, hop 160, 60–7800 Hz, (log(mel + ε) + 5.4919195) / 5.0389895; frames = 1 + T₁₆ₖ // 160."""
  sample_rate = _check_rate(sample_rate)
  signal = _full_scale(signal, "signal")
  if signal.ndim != 1:
    raise DataError(f"signal of shape {signal.shape} must be one channel (T,)")
  if sample_rate != MEL_RATE:
    divisor = math.gcd(MEL_RATE, sample_rate)
    signal = scipy_signal.resample_poly(signal, MEL_RATE // divisor, sample_rate // divisor)
  if len(signal) <= MEL_N_FFT // 2:
    raise DataError(
      f"signal of {len(signal)} samples at {MEL_RATE} Hz is too short for a centred STFT: needs more than "
      f"{MEL_N_FFT // 2}"
    )
  spectrogram = log_mel_spectrogram(signal, MEL_RATE, MEL_N_FFT, MEL_HOP, NUM_MELS, MEL_FMIN, MEL_FMAX)
  return normalise_log_mel(spectrogram).T


def segment_embeddings(signal: np.ndarray, sample_rate: int, segments) -> np.ndarray:
  """(T,) float in [-1, 1], (S, 2) seconds → (S, 128) float32: concat(mean, max) over time of each segment's
  `log_mel` (the stand-in for BYOL-A, whose weights we do not have)."""
  segments = _segments(segments)
  features = []
  for start, end in segments:
    mel = log_mel(signal[round(start * sample_rate) : round(end * sample_rate)], sample_rate)
    features.append(np.concatenate([mel.mean(axis=0), mel.max(axis=0)]))
  return np.stack(features).astype(np.float32) if features else np.zeros((0, 2 * NUM_MELS), np.float32)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
  """(N, D), (K, D) → (N, K)."""
  distances = (points**2).sum(1)[:, None] - 2.0 * points @ centres.T + (centres**2).sum(1)[None, :]
  return np.maximum(distances, 0.0)


def _kmeans_plus_plus(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  centres = [points[rng.integers(len(points))]]
  for _ in range(1, k):
    nearest = _squared_distances(points, np.stack(centres)).min(axis=1)
    total = nearest.sum()
    index = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
    centres.append(points[index])
  return np.stack(centres)


def kmeans(points: np.ndarray, k: int, seed: int = 0, num_init: int = 10, iterations: int = 100) -> np.ndarray:
  """(N, D) → labels (N,) int64 in [0, k): k-means++ seeding and Lloyd iterations, the lowest-inertia run of
  `num_init`; deterministic given `seed`. An emptied cluster is moved to the point farthest from its centre."""
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or not np.all(np.isfinite(points)):
    raise DataError(f"points of shape {points.shape} must be finite (N, D)")
  if not 1 <= k <= len(points):
    raise DataError(f"k={k} clusters need 1 ≤ k ≤ N, and there are N={len(points)} points")
  if num_init < 1 or iterations < 1:
    raise DataError(f"num_init={num_init} and iterations={iterations} must be ≥ 1")
  rng = np.random.default_rng(seed)
  best_labels, best_inertia = None, np.inf
  for _ in range(num_init):
    centres = _kmeans_plus_plus(points, k, rng)
    labels = None
    for _ in range(iterations):
      distances = _squared_distances(points, centres)
      new_labels = distances.argmin(axis=1)
      if labels is not None and np.array_equal(new_labels, labels):
        break
      labels = new_labels
      for cluster in range(k):
        members = labels == cluster
        if members.any():
          centres[cluster] = points[members].mean(axis=0)
        else:
          centres[cluster] = points[distances[np.arange(len(points)), labels].argmax()]
    inertia = _squared_distances(points, centres)[np.arange(len(points)), labels].sum()
    if inertia < best_inertia:
      best_labels, best_inertia = labels, inertia
  return best_labels


def cluster_segments(
  episodes: Sequence[np.ndarray],
  sample_rate: int,
  embed: Embed = segment_embeddings,
  num_clusters: int = 3,
  seed: int = 0,
) -> SegmentClusters:
  """Steps 1–3 of the detector on every episode (T_e, C) and k-means over all their segments' embeddings."""
  sample_rate = _check_rate(sample_rate)
  candidates, embeddings = [], []
  for index, episode in enumerate(episodes):
    track = _track(episode, f"episode {index}")
    signal, threshold = source_channel(track)
    segments = energy_segments(signal, sample_rate, threshold)
    features = np.asarray(embed(track[:, 0], sample_rate, segments))
    if features.ndim != 2 or len(features) != len(segments):
      raise DataError(f"embed gave shape {features.shape} for episode {index}'s {len(segments)} segments: need (S, D)")
    candidates.append(segments)
    embeddings.append(features)
  total = sum(len(segments) for segments in candidates)
  if total < num_clusters:
    raise DataError(
      f"{total} candidate segments in {len(candidates)} episodes, fewer than num_clusters={num_clusters}: give "
      "more (or louder) episodes"
    )
  labels = kmeans(np.concatenate(embeddings), num_clusters, seed)
  music_cluster = int(np.bincount(labels, minlength=num_clusters).argmin())
  clusters = np.split(labels, np.cumsum([len(segments) for segments in candidates])[:-1])
  return SegmentClusters(candidates, clusters, music_cluster)


def detect_laughter(
  episodes: Sequence[np.ndarray],
  sample_rate: int,
  embed: Embed = segment_embeddings,
  num_clusters: int = 3,
  seed: int = 0,
) -> list[np.ndarray]:
  """Episodes (T_e, C) int16 or float in [-1, 1] → per episode its laughter (L_e, 2) seconds, merged and sorted.

  `cluster_segments` clusters all candidates together; the least-populated cluster (music) is dropped.
  """
  found = cluster_segments(episodes, sample_rate, embed, num_clusters, seed)
  return [
    merge_segments(segments[clusters != found.music_cluster])
    for segments, clusters in zip(found.candidates, found.clusters)
  ]


def mask_laughter(audio: np.ndarray, sample_rate: int, segments) -> np.ndarray:
  """(T,) or (T, C) → a copy with samples [round(start·rate), round(end·rate)) of each segment set to 0."""
  sample_rate = _check_rate(sample_rate)
  masked = np.array(audio, copy=True)
  if masked.ndim not in (1, 2):
    raise DataError(f"audio of shape {masked.shape} must be (T,) or (T, C)")
  for start, end in _segments(segments):
    masked[round(start * sample_rate) : round(end * sample_rate)] = 0
  return masked


def clip_windows(
  laughter, duration: float, window: float = CLIP_SECONDS, gap: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
  """Laughter (L, 2) seconds in an episode of `duration` s → window starts (M,) float64 and labels (M,) int64,
  sorted by start.

  Label 1: [a − window, a] for each onset a of the merged laughter ([0, window] when a < window). Label 0: windows of
  `window` s free of laughter, with no laughter starting within `gap` s after them, back to back from the start of
  each laughter-free stretch.
  """
  laughter = merge_segments(laughter)
  if window <= 0 or gap < 0:
    raise DataError(f"window={window} s must be > 0 and gap={gap} s ≥ 0")
  if duration < window:
    raise DataError(f"an episode of {duration} s is shorter than one {window} s window")
  if len(laughter) and laughter[-1, 1] > duration:
    raise DataError(f"laughter ends at {laughter[-1, 1]} s, after the episode's {duration} s")
  funny = np.unique(np.maximum(laughter[:, 0] - window, 0.0))
  stretch_starts = np.concatenate([[0.0], laughter[:, 1]])
  stretch_ends = np.concatenate([laughter[:, 0] - gap, [duration]])
  calm = []
  for start, end in zip(stretch_starts, stretch_ends):
    count = max(0, math.floor((end - start) / window + 1e-9))
    calm.append(start + window * np.arange(count))
  calm = np.concatenate(calm)
  starts = np.concatenate([funny, calm])
  labels = np.concatenate([np.ones(len(funny), np.int64), np.zeros(len(calm), np.int64)])
  order = np.lexsort((labels, starts))
  return starts[order], labels[order]


def _iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """(P, 2), (G, 2) → (P, G) temporal IoU."""
  intersection = np.maximum(
    0.0, np.minimum(predicted[:, None, 1], truth[None, :, 1]) - np.maximum(predicted[:, None, 0], truth[None, :, 0])
  )
  union = (predicted[:, 1] - predicted[:, 0])[:, None] + (truth[:, 1] - truth[:, 0])[None, :] - intersection
  return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def _precision_recall_f1(true_positives: float, predicted: float, actual: float) -> dict:
  """Precision is 1 with nothing predicted, recall 1 with nothing to find; F1 0 when both are 0."""
  precision = true_positives / predicted if predicted else 1.0
  recall = true_positives / actual if actual else 1.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f1": f1}


def detection_scores(predicted, truth, thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
  """(P, 2), (G, 2) seconds → {threshold: {"precision", "recall", "f1"}}.

  At each threshold, pairs are matched one-to-one greedily by decreasing IoU among those with IoU ≥ threshold; a
  match is a true positive.
  """
  predicted, truth = _segments(predicted, "predicted"), _segments(truth, "truth")
  iou = _iou(predicted, truth)
  order = np.argsort(-iou, axis=None, kind="stable")
  scores = {}
  for threshold in thresholds:
    used_predicted, used_truth, matches = set(), set(), 0
    for flat in order:
      row, column = divmod(int(flat), len(truth))
      if iou[row, column] < threshold:
        break
      if row not in used_predicted and column not in used_truth:
        used_predicted.add(row)
        used_truth.add(column)
        matches += 1
    scores[threshold] = _precision_recall_f1(matches, len(predicted), len(truth))
  return scores


def _frame_mask(segments: np.ndarray, times: np.ndarray) -> np.ndarray:
  inside = np.zeros(len(times), bool)
  for start, end in segments:
    inside |= (times >= start) & (times < end)
  return inside


def frame_scores(predicted, truth, duration: float, resolution: float = 0.01, edge_gap: float = EDGE_GAP) -> dict:
  """(P, 2), (G, 2) seconds → {"accuracy", "precision", "recall", "f1"} over frames of `resolution` s (at their
  centres) in [0, duration), laughter the positive class. Frames within `edge_gap` s of a true segment's start or end
  are ignored: annotated edges are not precise to better than that."""
  predicted, truth = _segments(predicted, "predicted"), _segments(truth, "truth")
  if duration <= 0 or resolution <= 0 or edge_gap < 0:
    raise DataError(f"duration={duration} and resolution={resolution} must be > 0, edge_gap={edge_gap} ≥ 0")
  times = (np.arange(math.ceil(duration / resolution - 1e-9)) + 0.5) * resolution
  edges = truth.reshape(-1)
  keep = np.ones(len(times), bool)
  if len(edges):
    keep = np.abs(times[:, None] - edges[None, :]).min(axis=1) >= edge_gap
  said, real = _frame_mask(predicted, times)[keep], _frame_mask(truth, times)[keep]
  true_positives = float(np.sum(said & real))
  scores = _precision_recall_f1(true_positives, float(said.sum()), float(real.sum()))
  scores["accuracy"] = float(np.mean(said == real)) if len(said) else 1.0
  return scores


# The synthetic track: levels are RMS in [-1, 1] units per channel. L − R of the events sits 8–20 dB above the
# 57 dB threshold (0.022 RMS), the background noise's ~18 dB below.
_NOISE_RMS = 0.002
_DIALOGUE_RMS = 0.06
_EVENT_RMS = {"laughter": (0.04, 0.08), "applause": (0.04, 0.07), "music": (0.05, 0.08)}
_EVENT_SECONDS = {"laughter": (1.5, 4.0), "applause": (1.5, 3.5), "music": (1.5, 3.0)}
_EVENT_GAP = 2.0  # s, at least, between events (and from the ends), so widened segments of two events never meet


def _rms_normalise(waveform: np.ndarray, rms: float) -> np.ndarray:
  return waveform * (rms / max(float(np.sqrt(np.mean(waveform**2))), 1e-12))


def _dialogue(rng: np.random.Generator, duration: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """Utterances of voiced syllables (harmonics of a speaker's pitch under two vowel formants, 3–6 syllables/s),
  about 60% of the time → ((T,), utterances (U, 2) seconds)."""
  track = np.zeros(round(duration * sample_rate))
  utterances = []
  time = rng.uniform(0.0, 1.0)
  while time < duration - 1.0:
    length = min(rng.uniform(1.0, 4.0), duration - time)
    pitch = rng.uniform(100.0, 220.0)
    syllable_start = time
    while syllable_start < time + length - 0.1:
      seconds = min(rng.uniform(0.12, 0.3), time + length - syllable_start)
      t = np.arange(round(seconds * sample_rate)) / sample_rate
      formants = (rng.uniform(300.0, 800.0), rng.uniform(900.0, 2500.0))
      f0 = pitch * (1.0 + rng.uniform(-0.1, 0.1) * t / seconds)  # a gliding pitch
      phase = 2.0 * np.pi * np.cumsum(f0) / sample_rate
      syllable = np.zeros_like(t)
      for harmonic in range(1, int(4000.0 / pitch) + 1):
        weight = sum(np.exp(-(((harmonic * pitch - formant) / 150.0) ** 2)) for formant in formants) + 0.05 / harmonic
        syllable += weight * np.sin(harmonic * phase)
      first = round(syllable_start * sample_rate)
      track[first : first + len(t)] += syllable * np.sin(np.pi * t / seconds)
      syllable_start += seconds + rng.uniform(0.03, 0.1)
    utterances.append((time, time + length))
    time += length + rng.uniform(0.3, 2.0)
  return _rms_normalise(track, _DIALOGUE_RMS / np.sqrt(0.6)), np.array(utterances).reshape(-1, 2)


def _laughter(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
  """(length, 2): an audience's laugh — band-passed noise, independent per channel, in "ha-ha" pulses at 4–6 Hz
  with jittered rate, a quick swell and a long fade (the energy detector misses the fade; its ±0.6 s widening
  brings it back)."""
  t = np.arange(length) / sample_rate
  rate = rng.uniform(4.0, 6.0) * (1.0 + 0.15 * np.cumsum(rng.normal(0.0, 1.0, length)) / np.sqrt(length))
  pulses = 0.55 + 0.45 * (0.5 - 0.5 * np.cos(2.0 * np.pi * np.cumsum(rate) / sample_rate))
  seconds = length / sample_rate
  shape = np.minimum(1.0, t / 0.2) * np.clip((seconds - t) / (0.35 * seconds), 0.0, 1.0) ** 2
  band = scipy_signal.butter(2, (300.0, 3500.0), "bandpass", fs=sample_rate, output="sos")
  noise = scipy_signal.sosfilt(band, rng.normal(0.0, 1.0, (length, 2)), axis=0)
  return noise * (pulses * shape)[:, None]


def _applause(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
  """(length, 2): dense hand claps (300/s per channel, each a 3 ms-decaying noise burst), high-passed at 1.5 kHz."""
  kernel = np.exp(-np.arange(round(0.02 * sample_rate)) / (0.003 * sample_rate))
  claps = rng.poisson(300.0 / sample_rate, (length, 2)) * rng.uniform(0.3, 1.0, (length, 2))
  envelope = scipy_signal.fftconvolve(claps, kernel[:, None], axes=0)[:length]
  high = scipy_signal.butter(2, 1500.0, "highpass", fs=sample_rate, output="sos")
  clapping = scipy_signal.sosfilt(high, envelope * rng.normal(0.0, 1.0, (length, 2)), axis=0)
  t = np.arange(length) / sample_rate
  fades = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.1)
  return clapping * fades[:, None]


def _music(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
  """(length, 2): a sting — a major or minor chord (root MIDI 48–66 plus octave) of 4-harmonic notes, each panned
  its own way towards channel 0 (which the embeddings hear), with a quick attack and a release."""
  root = rng.integers(48, 67)
  notes = root + np.array([0, rng.choice([3, 4]), 7, 12])
  t = np.arange(length) / sample_rate
  seconds = length / sample_rate
  chord = np.zeros((length, 2))
  for note in notes:
    frequency = 440.0 * 2.0 ** ((note - 69) / 12)
    tone = sum(np.sin(2.0 * np.pi * harmonic * frequency * t) / harmonic for harmonic in range(1, 5))
    left = rng.uniform(0.7, 1.0)
    chord += tone[:, None] * np.array([left, 1.0 - left])
  envelope = np.minimum(1.0, t / 0.02) * np.clip((seconds - t) / 0.2, 0.0, 1.0) * np.exp(-0.3 * t)
  return chord * envelope[:, None]


_EVENTS = {"laughter": _laughter, "applause": _applause, "music": _music}


def synthetic_episode(
  seed: int,
  duration: float = 120.0,
  sample_rate: int = 16000,
  num_laughs: int = 10,
  num_applause: int = 5,
  num_music: int = 3,
  dialogue: bool = True,
) -> tuple[np.ndarray, dict]:
  """A stereo sitcom track with known events → (audio (T, 2) float32 in [-1, 1], truth).

  truth: {"laughter", "applause", "music", "dialogue"} → (N, 2) seconds, sorted. Dialogue is identical in both
  channels (it cancels in L − R); the events are stereo and never overlap each other (≥ 2 s apart) but may overlap
  dialogue; independent background noise in each channel. A laugh's truth spans its whole swell and fade.
  """
  sample_rate = _check_rate(sample_rate)
  rng = np.random.default_rng(seed)
  kinds = ["laughter"] * num_laughs + ["applause"] * num_applause + ["music"] * num_music
  kinds = [kinds[index] for index in rng.permutation(len(kinds))]
  lengths = np.array([rng.uniform(*_EVENT_SECONDS[kind]) for kind in kinds])
  spare = duration - lengths.sum() - _EVENT_GAP * (len(kinds) + 1)
  if min(num_laughs, num_applause, num_music) < 0 or spare < 0:
    raise DataError(
      f"{num_laughs} laughs, {num_applause} applause and {num_music} music events (counts ≥ 0) need about "
      f"{lengths.sum() + _EVENT_GAP * (len(kinds) + 1):.0f} s; duration={duration} s is too short"
    )
  gaps = _EVENT_GAP + spare * rng.dirichlet(np.ones(len(kinds) + 1))
  starts = np.cumsum(gaps[:-1]) + np.concatenate([[0.0], np.cumsum(lengths[:-1])])
  audio = rng.normal(0.0, _NOISE_RMS, (round(duration * sample_rate), 2))
  truth = {kind: [] for kind in _EVENTS}
  for kind, start, seconds in zip(kinds, starts, lengths):
    first, length = round(start * sample_rate), round(seconds * sample_rate)
    event = _EVENTS[kind](rng, length, sample_rate)
    audio[first : first + length] += _rms_normalise(event, rng.uniform(*_EVENT_RMS[kind]))
    truth[kind].append((first / sample_rate, (first + length) / sample_rate))
  truth = {kind: np.array(spans, np.float64).reshape(-1, 2) for kind, spans in truth.items()}
  if dialogue:
    speech, truth["dialogue"] = _dialogue(rng, duration, sample_rate)
    audio += speech[:, None]
  else:
    truth["dialogue"] = np.zeros((0, 2))
  return audio.astype(np.float32), truth
