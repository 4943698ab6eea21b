"""Stress recordings: ADAPT's data (thesis §4.2), procedural with a known latent stress, and StressID's layout.

StressID records (subject, task) pairs: ECG, EDA and respiration (RR) at 500 Hz in ADC counts, audio at 16 kHz and
precomputed 768-d video features, labelled `binary-stress`. Audio is missing for 46% of the recordings and video for
18%; the physiological signals are always there. `StressWindowSource` applies the authors' preprocessing to either
source: 30-s windows at a 15-s stride (whole recordings at test), physiological signals standardised with the
published global constants, audio as a normalised log-mel spectrogram, one video feature per window, zeros for a
missing modality.

`StressRecordings` draws one recording per (subject, task) around a latent arousal a in (0, 1): a = sigmoid(task
propensity + subject susceptibility + noise), label = a > 0.5 (about balanced). Every modality sees its own noisy view
of a (a + N(0, σ_m)), and every subject has baselines of its own (resting heart rate, skin conductance level, breathing
rate, voice pitch and loudness, appearance), so no single modality or raw statistic gives the label away and fusing
the views beats each one:
- ECG: P-QRS-T beats at 60 + 25·a bpm; beat-to-beat variability shrinks as a grows.
- EDA: a tonic level that rises with a, plus skin-conductance responses whose rate grows with a.
- RR: breathing at 12 + 8·a breaths/min, shallower when stressed.
- audio: in the tasks with speech (SPEECH_TASKS), voiced syllables whose rate, pitch and energy rise with a; a noise
  floor elsewhere.
- video: per clip, a fixed random projection of [a, appearance, lighting] plus noise.
The views are not independent given a: a recording-level state unrelated to stress (`shared_state_std`, in view
units) moves ECG and EDA up and respiration and video down (SHARED_STATE_LOADINGS). Each modality alone mistakes it
for arousal; the complete set cancels it and a subset can cancel it only by weighting its views unequally, which
a joint model can learn and an average of per-modality classifiers cannot. `shared_state_std=0` gives independent
views.
Signals are stored in StressID's raw units (ADC counts, so the published μ/σ bring them near zero mean and unit
variance) at `sample_rate` Hz instead of 500, to keep CPU training cheap.

`write_stressid_tree` writes any recordings in the published layout and `StressIDRecordings` reads that layout:
  <root>/Physiological/<subj>/<subj>_<task>.txt   CSV with header ECG,EDA,RR, one row per sample
  <root>/Audio/<subj>/<subj>_<task>.wav           PCM WAV; a missing file is a missing modality
  <root>/{train,test}_video_features.txt          one line per clip: subj:task:clipIdx:label:target:[v0, v1, …]
  <root>/labels.csv                               index column subject/task (e.g. 2ea4_Breathing), binary-stress, …
"""

import csv
import pathlib
from typing import Protocol

import numpy as np
from scipy import signal as scipy_signal
from scipy.io import wavfile

from storyjax.data.audio import log_mel_spectrogram, normalise_log_mel
from storyjax.errors import ConfigError, DataError

MODALITIES = ("ecg", "eda", "rr", "audio", "video")
PHYSIO_MODALITIES = ("ecg", "eda", "rr")
PHYSIO_COLUMNS = ("ECG", "EDA", "RR")  # the Physiological CSV header, in PHYSIO_MODALITIES order
TASKS = (
  "Baseline",
  "Breathing",
  "Counting1",
  "Counting2",
  "Counting3",
  "Math",
  "Reading",
  "Relax",
  "Speaking",
  "Stroop",
  "Video1",
  "Video2",
)
SPEECH_TASKS = ("Counting1", "Counting2", "Counting3", "Math", "Reading", "Speaking", "Stroop")
SPLITS = ("train", "test")
MISSING_AT_TEST_ONLY = (None, "audio", "video", "audio_video")

# The published recordings and preprocessing (the authors' code).
PHYSIO_RATE = 500  # Hz
AUDIO_RATE = 16000  # Hz
PHYSIO_MEAN = {"ecg": 32788.44, "eda": 18246.48, "rr": 32779.832}  # ADC counts
PHYSIO_STD = {"ecg": 1426.1212, "eda": 12555.281, "rr": 7963.4375}
WINDOW_SECONDS = 30
STRIDE_SECONDS = 15
N_FFT = 2048  # = the Hann window's length
HOP_LENGTH = 1024
NUM_MELS = 64
MEL_FMIN = 60.0  # Hz
MEL_FMAX = 7800.0  # Hz, at AUDIO_RATE
NUM_FRAMES = 469  # 1 + 30 s · 16 kHz // HOP_LENGTH: a window's spectrogram is resized to this many frames
VIDEO_DIM = 768
# One video feature per 30-s clip, clips at the training windows' 15-s stride: the authors pair physiological window
# k with clip k.
VIDEO_CLIP_SECONDS = 30
VIDEO_CLIP_STRIDE_SECONDS = 15

# The generator's latent model: task propensities (logits of a), subject susceptibility, each modality's view noise.
TASK_LOGITS = {
  "Baseline": -1.2,
  "Breathing": -1.6,
  "Counting1": 0.6,
  "Counting2": 0.9,
  "Counting3": 1.2,
  "Math": 1.6,
  "Reading": -0.2,
  "Relax": -2.0,
  "Speaking": 1.0,
  "Stroop": 1.4,
  "Video1": -0.9,
  "Video2": -0.6,
}
SUSCEPTIBILITY_STD = 0.7
RECORDING_NOISE_STD = 0.5  # of the arousal logit, per recording
VIEW_NOISE_STD = {"ecg": 0.3, "eda": 0.3, "rr": 0.3, "audio": 0.3, "video": 0.3}
# A recording-level bodily state unrelated to stress (posture, warmth, caffeine, …), N(0, shared_state_std²) in view
# units, added to each view with these signs: it raises heart rate and skin conductance, slows breathing and moves
# the face the way calm does. No single modality can tell it from arousal; the complete set cancels it when the
# views are summed, a subset of them does not.
SHARED_STATE_LOADINGS = {"ecg": 1.0, "eda": 1.0, "rr": -1.0, "audio": 0.0, "video": -1.0}
SHARED_STATE_STD = 0.8
VIEW_RANGE = (-0.25, 1.25)  # views are clipped to this range widened by 2 shared_state_std on each side
LABEL_THRESHOLD = 0.5
_ADC_MAX = 65535  # 16-bit counts
_MAX_SUBJECTS = 32768  # train and test subjects get disjoint ids among the 65536 4-hex-digit ones
_VIDEO_FACTORS = 6  # arousal, 4 of appearance, lighting
# random streams, numbered from 1: numpy's seed sequences ignore trailing zeros
_SUBJECT_IDS, _PROJECTION, _TRAITS, _AROUSAL, _AVAILABILITY, _SIGNALS = range(1, 7)
_SHARED_STATE = _SIGNALS + len(MODALITIES)  # after the signals' streams, one per modality
# P, Q, R, S, T waves of a beat: (offset from the R peak in s, amplitude, width σ in s); T's offset scales with √RR.
_BEAT_WAVES = ((-0.17, 0.12, 0.025), (-0.035, -0.12, 0.01), (0.0, 1.0, 0.012), (0.035, -0.25, 0.01), (0.25, 0.3, 0.045))
_VIDEO_LINE = "subj:task:clipIdx:label:target:[v0, v1, …]"


def resize_frames(spectrogram: np.ndarray, frames: int) -> np.ndarray:
  """(M, T) → (M, frames) float32, linear along time with half-frame centres (torch's interpolate(mode="linear"))."""
  spectrogram = np.asarray(spectrogram, np.float32)
  length = spectrogram.shape[1]
  if frames < 1:
    raise ConfigError(f"frames={frames} must be positive")
  if length == frames:
    return spectrogram
  source = np.clip((np.arange(frames) + 0.5) * (length / frames) - 0.5, 0.0, length - 1)
  left = np.floor(source).astype(int)
  right = np.minimum(left + 1, length - 1)
  weight = (source - left).astype(np.float32)
  return spectrogram[:, left] * (1.0 - weight) + spectrogram[:, right] * weight


def mel_parameters(audio_rate: int) -> dict:
  """The published STFT and mel settings scaled from AUDIO_RATE to `audio_rate` (windows keep their duration, fmax
  its fraction of Nyquist; fmin stays 60 Hz): {"n_fft", "hop_length", "fmin", "fmax"}."""
  scale = audio_rate / AUDIO_RATE
  return {
    "n_fft": max(2, round(N_FFT * scale)),
    "hop_length": max(1, round(HOP_LENGTH * scale)),
    "fmin": MEL_FMIN,
    "fmax": MEL_FMAX * scale,
  }


def num_video_clips(seconds: float) -> int:
  """Clips of VIDEO_CLIP_SECONDS at VIDEO_CLIP_STRIDE_SECONDS in a recording; a shorter recording is one clip."""
  return 1 + max(0, int((seconds - VIDEO_CLIP_SECONDS) // VIDEO_CLIP_STRIDE_SECONDS))


def to_adc_counts(standardised: np.ndarray, modality: str) -> np.ndarray:
  """Values in published-σ units around the published μ → float32 whole 16-bit ADC counts."""
  counts = np.round(PHYSIO_MEAN[modality] + PHYSIO_STD[modality] * standardised)
  return np.clip(counts, 0, _ADC_MAX).astype(np.float32)


class Recordings(Protocol):
  """What StressWindowSource reads: `len` recordings, each with its own length, availability and contents."""

  split: str
  sample_rate: int  # Hz of ecg, eda, rr
  audio_rate: int  # Hz of audio
  num_mels: int
  video_dim: int

  def __len__(self) -> int: ...

  def num_samples(self, index: int) -> int:
    """Samples of ecg/eda/rr in recording `index`."""
    ...

  def present(self, index: int) -> np.ndarray:
    """(5,) bool in MODALITIES order."""
    ...

  def recording(self, index: int) -> dict:
    """{"subject", "task", "ecg"/"eda"/"rr" (T,) float32 ADC counts, "audio" (N,) float32 in [-1, 1] or None,
    "video" (clips, video_dim) float32 or None, "label" int, "arousal" float}."""
    ...


def _smooth_noise(rng: np.random.Generator, times: np.ndarray, knot_seconds: float) -> np.ndarray:
  """(T,) unit-variance noise, linear between independent normal knots every `knot_seconds`."""
  knots = np.arange(0.0, times[-1] + 2 * knot_seconds, knot_seconds)
  return np.interp(times, knots, rng.normal(size=knots.shape[0]))


def _add_spans(length: int, starts: np.ndarray, values: np.ndarray) -> np.ndarray:
  """(length,) sum of `values` (K, W) laid from samples `starts` (K,), clipped to [0, length)."""
  indices = starts[:, None] + np.arange(values.shape[1])[None, :]
  inside = (indices >= 0) & (indices < length)
  return np.bincount(indices[inside], weights=values[inside], minlength=length)


def _ecg(rng: np.random.Generator, view: float, traits: dict, seconds: int, rate: int) -> np.ndarray:
  """(seconds·rate,) ECG in published-σ units: P-QRS-T beats at 60 + 25·view bpm, variability falling with view."""
  interval = 60.0 / max(60.0 + 25.0 * view + traits["heart_rate_offset"], 35.0)
  variability = max(0.015 + 0.06 * (1.0 - view), 0.01)
  num_beats = int(seconds / interval * 1.5) + 4
  # AR(1) beat-to-beat fluctuations of unit variance
  fluctuation = scipy_signal.lfilter([np.sqrt(1 - 0.7**2)], [1.0, -0.7], rng.normal(size=num_beats))
  intervals = np.maximum(interval * (1.0 + variability * fluctuation), 0.25)
  beat_times = rng.uniform(0.0, interval) + np.concatenate([[0.0], np.cumsum(intervals[:-1])])
  keep = beat_times < seconds + 0.3
  beat_times, intervals = beat_times[keep], intervals[keep]
  before, after = 0.3, 0.55  # s of a beat's waves around its R peak
  starts = np.floor((beat_times - before) * rate).astype(int)
  offsets = (starts[:, None] + np.arange(int((before + after) * rate) + 2)[None, :]) / rate - beat_times[:, None]
  waves = np.zeros_like(offsets)
  for index, (centre, amplitude, width) in enumerate(_BEAT_WAVES):
    # widths never below 0.6 samples, so a beat survives sampling at low rates
    width = max(width, 0.6 / rate)
    centre = centre * np.sqrt(intervals)[:, None] if index == len(_BEAT_WAVES) - 1 else centre
    waves += amplitude * np.exp(-0.5 * ((offsets - centre) / width) ** 2)
  length = seconds * rate
  times = np.arange(length) / rate
  wander = 0.15 * np.sin(2 * np.pi * rng.uniform(0.15, 0.35) * times + rng.uniform(0, 2 * np.pi))
  beats = _add_spans(length, starts, waves)
  return (
    traits["ecg_gain"] * (beats - beats.mean())  # AC-coupled, like an ECG amplifier
    + traits["ecg_offset"]
    + wander
    + rng.normal(0.0, 0.05, length)
  )


def _eda(rng: np.random.Generator, view: float, traits: dict, seconds: int, rate: int) -> np.ndarray:
  """(seconds·rate,) EDA in published-σ units: a tonic level rising with view, responses at 1 + 6·view per minute."""
  length = seconds * rate
  times = np.arange(length) / rate
  level = np.exp(traits["eda_log_level"] + 1.5 * (view - 0.5))
  drift = 1.0 + rng.normal(0.0, 0.05) * (times / seconds - 0.5)
  tonic = -1.45 + level * drift  # −1.45 σ is 0 counts: conductance stays positive
  num_responses = rng.poisson((1.0 + 6.0 * max(view, 0.0)) * seconds / 60.0)
  onsets = np.floor(rng.uniform(0.0, seconds, num_responses) * rate).astype(int)
  impulses = np.bincount(onsets, weights=rng.exponential(0.2 * traits["scr_gain"], num_responses), minlength=length)
  kernel_times = np.arange(int(8 * traits["scr_decay"] * rate)) / rate
  kernel = np.exp(-kernel_times / traits["scr_decay"]) - np.exp(-kernel_times / 0.75)
  phasic = scipy_signal.fftconvolve(impulses, kernel / kernel.max())[:length]
  return tonic + phasic + rng.normal(0.0, 0.01, length)


def _respiration(rng: np.random.Generator, view: float, traits: dict, seconds: int, rate: int) -> np.ndarray:
  """(seconds·rate,) respiration in published-σ units: 12 + 8·view breaths/min, shallower as view grows."""
  length = seconds * rate
  times = np.arange(length) / rate
  breaths_per_minute = max(12.0 + 8.0 * view + traits["breathing_rate_offset"], 4.0)
  frequency = breaths_per_minute / 60.0 * (1.0 + 0.1 * _smooth_noise(rng, times, 2.0))
  phase = 2 * np.pi * np.cumsum(frequency) / rate + rng.uniform(0, 2 * np.pi)
  depth = max(traits["breathing_depth"] * (1.3 - 0.5 * view), 0.2)
  breathing = depth * (np.sin(phase) + 0.3 * np.sin(2 * phase + traits["breathing_asymmetry"]))
  return breathing + traits["rr_offset"] + rng.normal(0.0, 0.05, length)


def _audio(rng: np.random.Generator, view: float, traits: dict, task: str, seconds: int, rate: int) -> np.ndarray:
  """(seconds·rate,) float32 in [-1, 1]: a noise floor, plus in SPEECH_TASKS voiced syllables at 2 + 3·view per
  second whose pitch (× 1 + 0.35·view) and energy rise with view."""
  length = seconds * rate
  audio = traits["noise_floor"] * rng.standard_normal(length, dtype=np.float32)
  if task in SPEECH_TASKS:
    view = min(max(view, 0.0), 1.25)
    syllable_rate = 2.0 + 3.0 * view
    gaps = rng.gamma(4.0, 1.0 / (4.0 * syllable_rate), int(seconds * syllable_rate * 2) + 8)
    onsets = rng.uniform(0.0, 0.5) + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    keep = onsets < seconds - 0.3
    onsets, gaps = onsets[keep], gaps[keep]
    count = onsets.shape[0]
    durations = np.minimum(0.7 * gaps, rng.uniform(0.1, 0.25, count))
    pitch = traits["voice_pitch"] * (1.0 + 0.35 * view) * np.exp(rng.normal(0.0, 0.04, count))
    energy = traits["loudness"] * (0.08 + 0.12 * view) * rng.uniform(0.7, 1.0, count)
    lengths = np.maximum(np.round(durations * rate).astype(int), 1)
    # every voiced sample: its syllable and its step into the syllable
    syllable = np.repeat(np.arange(count), lengths)
    step = np.arange(syllable.shape[0]) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    voiced = np.floor(onsets * rate).astype(int)[syllable] + step
    phase = 2 * np.pi * pitch[syllable] * step / rate
    # harmonics below 0.45·rate, each 0.6× the one before; sin(kθ) = 2·cos θ·sin((k−1)θ) − sin((k−2)θ)
    twice_cos, previous, current = 2 * np.cos(phase), np.zeros_like(phase), np.sin(phase)
    harmonics = np.zeros_like(phase)
    for harmonic in range(1, 9):
      weights = np.where(harmonic * pitch < 0.45 * rate, 0.6 ** (harmonic - 1), 0.0)
      harmonics += weights[syllable] * current
      previous, current = current, twice_cos * current - previous
    envelope = energy[syllable] * np.sin(np.pi * step / lengths[syllable]) ** 2
    audio[voiced] += envelope * harmonics
  return np.clip(audio, -1.0, 1.0)


class StressRecordings:
  """Procedural StressID: `num_subjects` × len(TASKS) recordings of `seconds` s, index = subject · len(TASKS) + task.

  Audio (`missing_audio`) and video (`missing_video`) are missing at random in both splits; with
  `missing_at_test_only` ("audio", "video" or "audio_video") the train split is complete, every test recording lacks
  that modality and the rates are unused. `shared_state_std` (view units) scales the recording-level state shared
  by the views; at 0 the views are independent given the arousal. Signals never depend on availability, the video
  projection and task propensities only on `seed`, and subjects of the two splits are disjoint.
  """

  def __init__(
    self,
    split: str,
    num_subjects: int,
    seconds: int = 60,
    sample_rate: int = 50,
    audio_rate: int = 4000,
    num_mels: int = 16,
    video_dim: int = 32,
    missing_video: float = 0.18,
    missing_audio: float = 0.46,
    missing_at_test_only: str | None = None,
    shared_state_std: float = SHARED_STATE_STD,
    seed: int = 0,
  ):
    if split not in SPLITS:
      raise ConfigError(f"unknown split {split!r}; choose one of {SPLITS}")
    if not 1 <= num_subjects <= _MAX_SUBJECTS:
      raise ConfigError(f"num_subjects={num_subjects}: choose 1 to {_MAX_SUBJECTS} (4-hex-digit subject ids)")
    if seconds < 1 or sample_rate < 20 or audio_rate < 1000:
      raise ConfigError(
        f"seconds={seconds}, sample_rate={sample_rate}, audio_rate={audio_rate}: recordings need seconds >= 1, "
        "sample_rate >= 20 Hz (to sample a heartbeat) and audio_rate >= 1000 Hz (to sample a voice)"
      )
    if num_mels < 1 or video_dim < 1:
      raise ConfigError(f"num_mels={num_mels}, video_dim={video_dim}: both must be positive")
    for name, rate in (("missing_video", missing_video), ("missing_audio", missing_audio)):
      if not 0.0 <= rate < 1.0:
        raise ConfigError(f"{name}={rate}: a missing rate is a probability in [0, 1)")
    if missing_at_test_only not in MISSING_AT_TEST_ONLY:
      raise ConfigError(f"missing_at_test_only={missing_at_test_only!r}; choose one of {MISSING_AT_TEST_ONLY}")
    if not 0.0 <= shared_state_std <= 2.0:
      raise ConfigError(f"shared_state_std={shared_state_std}: choose 0 (independent views) to 2 (in view units)")
    self.shared_state_std = shared_state_std
    self.split, self.num_subjects, self.seconds, self.seed = split, num_subjects, seconds, seed
    self.sample_rate, self.audio_rate, self.num_mels, self.video_dim = sample_rate, audio_rate, num_mels, video_dim
    self.missing_video, self.missing_audio, self.missing_at_test_only = (
      missing_video,
      missing_audio,
      missing_at_test_only,
    )
    self.num_clips = num_video_clips(seconds)
    ids = np.random.default_rng([seed, _SUBJECT_IDS]).permutation(1 << 16)
    ids = ids[:num_subjects] if split == "train" else ids[::-1][:num_subjects]
    self.subjects = tuple(f"{subject_id:04x}" for subject_id in ids.tolist())
    projection_rng = np.random.default_rng([seed, _PROJECTION, video_dim])
    # (video_dim, factors): features are unit-variance mixtures of the factors
    self.video_projection = projection_rng.normal(size=(video_dim, _VIDEO_FACTORS)) / np.sqrt(_VIDEO_FACTORS)

  def __len__(self) -> int:
    return self.num_subjects * len(TASKS)

  def num_samples(self, index: int) -> int:
    self._check(index)
    return self.seconds * self.sample_rate

  def _check(self, index: int) -> None:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} recordings")

  def _stream(self, index: int, stream: int) -> np.random.Generator:
    subject, task = divmod(index, len(TASKS))
    return np.random.default_rng([self.seed, SPLITS.index(self.split), subject, task, stream])

  def present(self, index: int) -> np.ndarray:
    """(5,) bool in MODALITIES order: the physiological signals always, audio and video as drawn."""
    self._check(index)
    if self.missing_at_test_only is not None:
      complete = self.split == "train"
      audio = complete or "audio" not in self.missing_at_test_only
      video = complete or "video" not in self.missing_at_test_only
    else:
      audio_draw, video_draw = self._stream(index, _AVAILABILITY).uniform(size=2)
      audio, video = audio_draw >= self.missing_audio, video_draw >= self.missing_video
    return np.array([True, True, True, audio, video])

  def traits(self, subject: int) -> dict:
    """Subject `subject`'s baselines: {"susceptibility" (logit of a), "heart_rate_offset" (bpm), …}."""
    rng = np.random.default_rng([self.seed, SPLITS.index(self.split), subject, _TRAITS])
    return {
      "susceptibility": rng.normal(0.0, SUSCEPTIBILITY_STD),
      "heart_rate_offset": rng.normal(0.0, 6.0),
      "ecg_gain": rng.uniform(3.5, 6.0),
      "ecg_offset": rng.normal(0.0, 0.3),
      "eda_log_level": rng.normal(np.log(1.1), 0.4),
      "scr_gain": rng.uniform(0.5, 1.5),
      "scr_decay": rng.uniform(3.0, 6.0),
      "breathing_rate_offset": rng.normal(0.0, 1.5),
      "breathing_depth": rng.uniform(0.8, 1.2),
      "breathing_asymmetry": rng.uniform(0.0, 2 * np.pi),
      "rr_offset": rng.normal(0.0, 0.3),
      "voice_pitch": rng.uniform(100.0, 230.0),
      "loudness": rng.uniform(0.6, 1.4),
      "noise_floor": rng.uniform(0.002, 0.008),
      "appearance": rng.normal(size=_VIDEO_FACTORS - 2),
    }

  def arousal(self, index: int) -> float:
    """The latent arousal in (0, 1) of recording `index`: sigmoid(task logit + susceptibility + noise)."""
    self._check(index)
    subject, task = divmod(index, len(TASKS))
    logit = TASK_LOGITS[TASKS[task]] + self.traits(subject)["susceptibility"]
    logit += self._stream(index, _AROUSAL).normal(0.0, RECORDING_NOISE_STD)
    return float(1.0 / (1.0 + np.exp(-logit)))

  def shared_state(self, index: int) -> float:
    """Recording `index`'s bodily state unrelated to stress, N(0, shared_state_std²) (SHARED_STATE_LOADINGS)."""
    self._check(index)
    return float(self._stream(index, _SHARED_STATE).normal(0.0, self.shared_state_std))

  def recording(self, index: int) -> dict:
    """{"subject" (4 hex digits), "task", "ecg"/"eda"/"rr" (seconds·sample_rate,) float32 ADC counts, "audio"
    (seconds·audio_rate,) float32 in [-1, 1] or None, "video" (num_clips, video_dim) float32 or None, "label" int,
    "arousal" float, "shared_state" float}."""
    arousal, present, state = self.arousal(index), self.present(index), self.shared_state(index)
    subject, task = divmod(index, len(TASKS))
    traits = self.traits(subject)
    seconds, rate = self.seconds, self.sample_rate
    rngs = {modality: self._stream(index, _SIGNALS + offset) for offset, modality in enumerate(MODALITIES)}
    # each modality's view: arousal + loading · state + its own noise, in VIEW_RANGE widened by 2 σ of the state
    low, high = VIEW_RANGE[0] - 2 * self.shared_state_std, VIEW_RANGE[1] + 2 * self.shared_state_std
    views = {
      modality: arousal + SHARED_STATE_LOADINGS[modality] * state + rng.normal(0.0, VIEW_NOISE_STD[modality])
      for modality, rng in rngs.items()
    }
    views = {modality: min(max(view, low), high) for modality, view in views.items()}
    result = {
      "subject": self.subjects[subject],
      "task": TASKS[task],
      "ecg": to_adc_counts(_ecg(rngs["ecg"], views["ecg"], traits, seconds, rate), "ecg"),
      "eda": to_adc_counts(_eda(rngs["eda"], views["eda"], traits, seconds, rate), "eda"),
      "rr": to_adc_counts(_respiration(rngs["rr"], views["rr"], traits, seconds, rate), "rr"),
      "audio": None,
      "video": None,
      "label": int(arousal > LABEL_THRESHOLD),
      "arousal": arousal,
      "shared_state": state,
    }
    if present[MODALITIES.index("audio")]:
      result["audio"] = _audio(rngs["audio"], views["audio"], traits, TASKS[task], seconds, self.audio_rate)
    if present[MODALITIES.index("video")]:
      rng = rngs["video"]
      clip_arousal = views["video"] + rng.normal(0.0, 0.1, self.num_clips)
      factors = np.concatenate(
        [
          2.0 * (clip_arousal[:, None] - 0.5),
          np.broadcast_to(traits["appearance"], (self.num_clips, _VIDEO_FACTORS - 2)),
          rng.normal(size=(self.num_clips, 1)),  # lighting
        ],
        axis=1,
      )
      features = factors @ self.video_projection.T + rng.normal(0.0, 0.3, (self.num_clips, self.video_dim))
      result["video"] = features.astype(np.float32)
    return result


class StressWindowSource:
  """Grain random-access source of windows of `recordings` (StressRecordings or StressIDRecordings).

  One example per (recording, window of `window_seconds` every `stride_seconds`), or per recording with
  `whole_recording` (for the test split, or pass stride_seconds = window_seconds). `windows[i]` = (recording, first
  sample). Item: {"ecg", "eda", "rr": (W,) float32 standardised with PHYSIO_MEAN/PHYSIO_STD, "audio": (num_mels,
  num_frames) float32 normalised log-mel (mel_parameters of the audio rate; zeros if missing), "video": (video_dim,)
  float32 feature of the clip starting nearest the window (the mean over clips for a whole recording; zeros if
  missing), "present": (5,) bool in MODALITIES order, "label": int32, "recording": int32}. W = window_seconds ·
  sample_rate, or the recording's length. num_frames defaults to a window's frame count (NUM_FRAMES for 30 s at the
  published rates); whole recordings are resized to it too.
  """

  def __init__(
    self,
    recordings: Recordings,
    window_seconds: float = WINDOW_SECONDS,
    stride_seconds: float = STRIDE_SECONDS,
    num_frames: int | None = None,
    whole_recording: bool = False,
  ):
    if window_seconds <= 0 or stride_seconds <= 0:
      raise ConfigError(f"window_seconds={window_seconds}, stride_seconds={stride_seconds}: both must be positive")
    if num_frames is not None and num_frames < 1:
      raise ConfigError(f"num_frames={num_frames} must be positive")
    self.recordings, self.whole_recording = recordings, whole_recording
    self.window_seconds, self.stride_seconds = window_seconds, stride_seconds
    self.window = round(window_seconds * recordings.sample_rate)
    self.stride = round(stride_seconds * recordings.sample_rate)
    self.mel = mel_parameters(recordings.audio_rate)
    self.num_frames = num_frames or 1 + round(window_seconds * recordings.audio_rate) // self.mel["hop_length"]
    self.windows = []
    for index in range(len(recordings)):
      length = recordings.num_samples(index)
      if whole_recording:
        self.windows.append((index, 0))
        continue
      if length < self.window:
        raise ConfigError(
          f"window_seconds={window_seconds} is longer than recording {index} ({length / recordings.sample_rate:g} "
          "s); choose a shorter window or whole_recording=True"
        )
      self.windows.extend((index, start) for start in range(0, length - self.window + 1, self.stride))

  def __len__(self) -> int:
    return len(self.windows)

  def _audio(self, audio: np.ndarray | None, start_seconds: float, seconds: float) -> np.ndarray:
    """(num_mels, num_frames) normalised log-mel of `seconds` of `audio` from `start_seconds`, zero-padded."""
    if audio is None:
      return np.zeros((self.recordings.num_mels, self.num_frames), np.float32)
    rate = self.recordings.audio_rate
    start, length = round(start_seconds * rate), round(seconds * rate)
    clip = audio[start : start + length]
    clip = np.pad(clip, (0, max(length - clip.shape[0], 0)))
    log_mel = log_mel_spectrogram(clip, rate, num_mels=self.recordings.num_mels, **self.mel)
    return resize_frames(normalise_log_mel(log_mel), self.num_frames)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} windows")
    recording_index, start = self.windows[index]
    recording = self.recordings.recording(recording_index)
    rate = self.recordings.sample_rate
    stop = recording["ecg"].shape[0] if self.whole_recording else start + self.window
    example = {
      modality: ((recording[modality][start:stop] - PHYSIO_MEAN[modality]) / PHYSIO_STD[modality]).astype(np.float32)
      for modality in PHYSIO_MODALITIES
    }
    example["audio"] = self._audio(recording["audio"], start / rate, (stop - start) / rate)
    video = recording["video"]
    if video is None:
      example["video"] = np.zeros(self.recordings.video_dim, np.float32)
    elif self.whole_recording:
      example["video"] = video.mean(axis=0, dtype=np.float32)
    else:
      clip = min(round(start / rate / VIDEO_CLIP_STRIDE_SECONDS), video.shape[0] - 1)
      example["video"] = video[clip].astype(np.float32)
    example["present"] = np.array([True, True, True, recording["audio"] is not None, video is not None])
    example["label"] = np.int32(recording["label"])
    example["recording"] = np.int32(recording_index)
    return example


def _affect3(arousal: float) -> str:
  """Our stand-in for StressID's affect3-class: arousal in thirds, "" when unknown."""
  return str(int(np.digitize(arousal, [1 / 3, 2 / 3]))) if np.isfinite(arousal) else ""


def write_stressid_tree(recordings: Recordings, root) -> pathlib.Path:
  """Writes `recordings` in StressID's layout under `root` → root.

  Physiological CSVs of the raw values, audio as 16-bit PCM WAV at recordings.audio_rate (x · 32768, clipped), the
  split's `<split>_video_features.txt` (rewritten; label and target fields both the binary label), and labels.csv
  rows merged into any earlier ones (so the train and test recordings can share a root), with an extra `arousal`
  column that StressIDRecordings reads back. A recording without audio loses any earlier WAV.
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  labels_path = root / "labels.csv"
  fieldnames, rows = ["subject/task", "binary-stress", "affect3-class", "arousal"], {}
  if labels_path.exists():
    with open(labels_path, newline="") as file:
      reader = csv.DictReader(file)
      fieldnames += [name for name in reader.fieldnames or () if name not in fieldnames]
      rows = {row["subject/task"]: row for row in reader}
  video_lines = []
  for index in range(len(recordings)):
    recording = recordings.recording(index)
    subject, key = recording["subject"], f"{recording['subject']}_{recording['task']}"
    physio_path = root / "Physiological" / subject / f"{key}.txt"
    physio_path.parent.mkdir(parents=True, exist_ok=True)
    physio = np.stack([recording[modality] for modality in PHYSIO_MODALITIES], axis=1)
    np.savetxt(physio_path, physio, fmt="%.9g", delimiter=",", header=",".join(PHYSIO_COLUMNS), comments="")
    audio_path = root / "Audio" / subject / f"{key}.wav"
    if recording["audio"] is None:
      audio_path.unlink(missing_ok=True)
    else:
      audio_path.parent.mkdir(parents=True, exist_ok=True)
      pcm = np.clip(np.round(np.asarray(recording["audio"], np.float64) * 32768), -32768, 32767).astype(np.int16)
      wavfile.write(audio_path, recordings.audio_rate, pcm)
    if recording["video"] is not None:
      for clip, features in enumerate(np.asarray(recording["video"], np.float32)):
        vector = ", ".join(f"{value:.9g}" for value in features.tolist())
        video_lines.append(
          f"{subject}:{recording['task']}:{clip}:{recording['label']}:{recording['label']}:[{vector}]\n"
        )
    rows[key] = {
      "subject/task": key,
      "binary-stress": str(recording["label"]),
      "affect3-class": _affect3(recording["arousal"]),
      "arousal": repr(float(recording["arousal"])),
    }
  (root / f"{recordings.split}_video_features.txt").write_text("".join(video_lines))
  with open(labels_path, "w", newline="") as file:
    writer = csv.DictWriter(file, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(rows.values())
  return root


def _read_labels(path: pathlib.Path) -> list[tuple[str, int, float]]:
  """labels.csv → [(subject_task, binary-stress, arousal or nan)], rows without a binary-stress label skipped."""
  with open(path, newline="") as file:
    reader = csv.reader(file)
    header = next(reader, [])
    if "binary-stress" not in header:
      raise DataError(
        f"{path} has columns {header}; StressID's labels.csv has an index column subject/task and a binary-stress "
        "column: restore the original file"
      )
    label_column = header.index("binary-stress")
    arousal_column = header.index("arousal") if "arousal" in header else None
    labels = []
    for line_number, row in enumerate(reader, start=2):
      if not row or row[label_column].strip().lower() in ("", "nan"):
        continue
      try:
        label = int(float(row[label_column]))
        arousal = float(row[arousal_column]) if arousal_column is not None and row[arousal_column] else float("nan")
      except (ValueError, IndexError) as error:
        raise DataError(f"{path} line {line_number}: {row} is not a number label ({error}); fix the row") from error
      if "_" not in row[0]:
        raise DataError(f"{path} line {line_number}: index {row[0]!r} is not <subject>_<task>; fix the row")
      labels.append((row[0], label, arousal))
  return labels


def _read_video_features(path: pathlib.Path, keys: set[str], video_dim: int | None) -> dict[str, np.ndarray]:
  """`<split>_video_features.txt` → {subject_task: (clips, dim) float32} for `keys`; no file = no video."""
  if not path.exists():
    return {}
  clips: dict[str, dict[int, np.ndarray]] = {}
  with open(path) as file:
    for line_number, line in enumerate(file, start=1):
      if not line.strip():
        continue
      fields = line.strip().split(":", 5)
      vector = fields[5].strip() if len(fields) == 6 else ""
      try:
        if not (vector.startswith("[") and vector.endswith("]")):
          raise ValueError("no [v0, v1, …] vector as the sixth field")
        clip = int(fields[2])
        features = np.array([float(value) for value in vector[1:-1].split(",")], np.float32)
      except ValueError as error:
        raise DataError(
          f"{path} line {line_number} is malformed ({error}); each line is {_VIDEO_LINE}: fix or remove it"
        ) from error
      if video_dim is not None and features.shape[0] != video_dim:
        raise DataError(
          f"{path} line {line_number} has {features.shape[0]} features, not {video_dim} (video_dim, or the lines "
          "before); every line needs video_dim features: fix the line or pass the features' dimension"
        )
      video_dim = features.shape[0]
      key = f"{fields[0]}_{fields[1]}"
      if key in keys:
        if clip in clips.setdefault(key, {}):
          raise DataError(f"{path} line {line_number} repeats clip {clip} of {key}; keep one line per clip")
        clips[key][clip] = features
  video = {}
  for key, by_clip in clips.items():
    if sorted(by_clip) != list(range(len(by_clip))):
      raise DataError(f"{path} holds clips {sorted(by_clip)} of {key}; clips are numbered 0, 1, … without gaps")
    video[key] = np.stack([by_clip[clip] for clip in range(len(by_clip))])
  return video


def _read_physio(path: pathlib.Path) -> np.ndarray:
  """A Physiological CSV → (T, 3) float32 ECG, EDA, RR in ADC counts."""
  with open(path) as file:
    header = [name.strip() for name in file.readline().split(",")]
  missing = [name for name in PHYSIO_COLUMNS if name not in header]
  if missing:
    raise DataError(
      f"{path} has columns {header}, without {missing}; a StressID physiological file is a CSV with header "
      f"{','.join(PHYSIO_COLUMNS)}: restore the original file"
    )
  columns = [header.index(name) for name in PHYSIO_COLUMNS]
  try:
    values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=columns, dtype=np.float64, ndmin=2)
  except ValueError as error:
    raise DataError(f"{path} holds a value that is not a number ({error}); restore the original file") from error
  return values.astype(np.float32)


def _read_wav(path: pathlib.Path, audio_rate: int) -> np.ndarray:
  """A WAV at `audio_rate` → (N,) float32 in [-1, 1] (integer PCM / its full scale, channels averaged)."""
  try:
    rate, samples = wavfile.read(path)
  except (ValueError, OSError, EOFError) as error:
    raise DataError(f"{path} is not a readable WAV file ({error}); re-encode it as PCM WAV or delete it") from error
  if rate != audio_rate:
    raise DataError(f"{path} is at {rate} Hz, not audio_rate={audio_rate} Hz; resample it or pass audio_rate={rate}")
  if samples.dtype == np.uint8:
    audio = (samples.astype(np.float32) - 128.0) / 128.0
  elif np.issubdtype(samples.dtype, np.integer):
    audio = samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
  else:
    audio = samples.astype(np.float32)
  return audio.mean(axis=1) if audio.ndim == 2 else audio


class StressIDRecordings:
  """StressID (or write_stressid_tree's output) under `root`, one recording per labels.csv row with a binary-stress
  label, optionally of `subjects` only (the split's subjects: labels.csv lists both splits); `recording(index)` as
  StressRecordings', with "arousal" from an arousal column or nan. A missing WAV or no lines in the split's
  `<split>_video_features.txt` is a missing modality. `sample_rate` is the physiological files' rate; WAVs must be at
  `audio_rate`; `video_dim` is read from the features unless given (then checked).
  """

  def __init__(
    self,
    root,
    split: str,
    sample_rate: int = PHYSIO_RATE,
    audio_rate: int = AUDIO_RATE,
    video_dim: int | None = None,
    num_mels: int = NUM_MELS,
    subjects=None,
  ):
    if split not in SPLITS:
      raise ConfigError(f"unknown split {split!r}; choose one of {SPLITS}")
    if sample_rate < 1 or audio_rate < 1 or num_mels < 1 or (video_dim is not None and video_dim < 1):
      raise ConfigError(
        f"sample_rate={sample_rate}, audio_rate={audio_rate}, num_mels={num_mels}, video_dim={video_dim}: "
        "all must be positive"
      )
    self.root, self.split = pathlib.Path(root), split
    if not self.root.is_dir():
      raise DataError(f"{self.root} is not a folder; download StressID and pass the folder holding labels.csv")
    labels_path = self.root / "labels.csv"
    if not labels_path.is_file():
      raise DataError(f"{labels_path} does not exist; StressID's root holds labels.csv: restore it from the release")
    labels = _read_labels(labels_path)
    if subjects is not None:
      wanted = set(subjects)
      labels = [row for row in labels if row[0].split("_", 1)[0] in wanted]
    if not labels:
      raise DataError(f"{labels_path} lists no labelled recordings of the subjects asked for; check subjects")
    self.keys = [key for key, _, _ in labels]
    self.labels = [label for _, label, _ in labels]
    self.arousals = [arousal for _, _, arousal in labels]
    self.physio_paths = []
    for key in self.keys:
      path = self.root / "Physiological" / key.split("_", 1)[0] / f"{key}.txt"
      if not path.is_file():
        raise DataError(
          f"{path} does not exist but labels.csv lists {key}; restore the file or drop its row from labels.csv"
        )
      self.physio_paths.append(path)
    self.audio_paths = [self.root / "Audio" / key.split("_", 1)[0] / f"{key}.wav" for key in self.keys]
    video_path = self.root / f"{split}_video_features.txt"
    self.video = _read_video_features(video_path, set(self.keys), video_dim)
    if video_dim is None:
      if not self.video:
        raise ConfigError(
          f"{video_path} holds no features of these recordings; pass video_dim ({VIDEO_DIM} for StressID)"
        )
      video_dim = next(iter(self.video.values())).shape[1]
    self.sample_rate, self.audio_rate, self.num_mels, self.video_dim = sample_rate, audio_rate, num_mels, video_dim
    self._lengths: dict[int, int] = {}

  def __len__(self) -> int:
    return len(self.keys)

  def _check(self, index: int) -> None:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} recordings")

  def num_samples(self, index: int) -> int:
    """Rows of recording `index`'s physiological file (counted once, then cached)."""
    self._check(index)
    if index not in self._lengths:
      with open(self.physio_paths[index], "rb") as file:
        self._lengths[index] = sum(1 for line in file if line.strip()) - 1
    return self._lengths[index]

  def present(self, index: int) -> np.ndarray:
    self._check(index)
    return np.array([True, True, True, self.audio_paths[index].is_file(), self.keys[index] in self.video])

  def recording(self, index: int) -> dict:
    self._check(index)
    key = self.keys[index]
    subject, task = key.split("_", 1)
    physio = _read_physio(self.physio_paths[index])
    audio_path = self.audio_paths[index]
    return {
      "subject": subject,
      "task": task,
      **{modality: np.ascontiguousarray(physio[:, column]) for column, modality in enumerate(PHYSIO_MODALITIES)},
      "audio": _read_wav(audio_path, self.audio_rate) if audio_path.is_file() else None,
      "video": self.video.get(key),
      "label": self.labels[index],
      "arousal": self.arousals[index],
    }
