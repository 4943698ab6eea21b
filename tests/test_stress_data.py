"""Stress recordings (ADAPT's embedded data), their windows and StressID's published layout.

The generator against its construction (determinism, availability rates, balanced labels, arousal recovered from
each modality by plain signal processing), the windows against slices of the recordings and the published constants,
the log-mel against an independent DFT and mel-scale reference, and the layout against a write/read round trip and
its errors.
"""

import math

import numpy as np
import pytest
from scipy import signal as scipy_signal

from storyjax.data.audio import LOG_MEL_EPS, log_mel_spectrogram, mel_filterbank, normalise_log_mel
from storyjax.data.medical.stress import (
  MODALITIES,
  NUM_FRAMES,
  PHYSIO_MEAN,
  PHYSIO_MODALITIES,
  PHYSIO_STD,
  SPEECH_TASKS,
  TASKS,
  StressIDRecordings,
  StressRecordings,
  StressWindowSource,
  mel_parameters,
  resize_frames,
  write_stressid_tree,
)
from storyjax.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("fast_compile")

AUDIO, VIDEO = MODALITIES.index("audio"), MODALITIES.index("video")


def standardised(recording: dict, modality: str) -> np.ndarray:
  return (recording[modality] - PHYSIO_MEAN[modality]) / PHYSIO_STD[modality]


def test_published_constants():
  assert PHYSIO_MEAN == {"ecg": 32788.44, "eda": 18246.48, "rr": 32779.832}
  assert PHYSIO_STD == {"ecg": 1426.1212, "eda": 12555.281, "rr": 7963.4375}
  assert len(TASKS) == 12 and set(SPEECH_TASKS) < set(TASKS)
  assert NUM_FRAMES == 1 + 30 * 16000 // 1024
  assert mel_parameters(16000) == {"n_fft": 2048, "hop_length": 1024, "fmin": 60.0, "fmax": 7800.0}
  # at a quarter of the rate the windows keep their duration and fmax its place below Nyquist
  assert mel_parameters(4000) == {"n_fft": 512, "hop_length": 256, "fmin": 60.0, "fmax": 1950.0}
  log_mel = np.array([[-5.4919195, 0.0]])
  np.testing.assert_allclose(normalise_log_mel(log_mel), [[0.0, 5.4919195 / 5.0389895]], rtol=1e-6)


def test_deterministic_and_independent_of_availability():
  first, again = StressRecordings("train", 2, audio_rate=1000), StressRecordings("train", 2, audio_rate=1000)
  complete = StressRecordings("train", 2, audio_rate=1000, missing_audio=0.0, missing_video=0.0)
  other_seed = StressRecordings("train", 2, audio_rate=1000, seed=1)
  for index in (0, 5, 17):
    recording, repeat, full = first.recording(index), again.recording(index), complete.recording(index)
    for key in ("ecg", "eda", "rr", "audio", "video"):
      if recording[key] is None:
        assert repeat[key] is None
        continue
      np.testing.assert_array_equal(recording[key], repeat[key])
      np.testing.assert_array_equal(recording[key], full[key])  # availability never changes a signal
    assert recording["arousal"] == full["arousal"] and recording["label"] == full["label"]
    assert not np.array_equal(recording["ecg"], other_seed.recording(index)["ecg"])


def test_shapes_dtypes_and_raw_units():
  recordings = StressRecordings("test", 2, seconds=45, audio_rate=1000, num_mels=8, video_dim=12)
  assert len(recordings) == 24 and recordings.num_clips == 2
  assert len(set(recordings.subjects)) == 2
  assert not set(recordings.subjects) & set(StressRecordings("train", 50).subjects)  # splits by subject
  for index in range(len(recordings)):
    recording = recordings.recording(index)
    assert recording["task"] == TASKS[index % 12] and recording["subject"] == recordings.subjects[index // 12]
    assert len(recording["subject"]) == 4 and int(recording["subject"], 16) >= 0
    for modality in PHYSIO_MODALITIES:
      values = recording[modality]
      assert values.dtype == np.float32 and values.shape == (45 * 50,)
      assert np.all(values == np.round(values)) and values.min() >= 0 and values.max() <= 65535  # ADC counts
    present = recordings.present(index)
    assert present.dtype == bool and present.shape == (5,) and present[:3].all()
    assert (recording["audio"] is not None) == present[AUDIO] and (recording["video"] is not None) == present[VIDEO]
    if present[AUDIO]:
      audio = recording["audio"]
      assert audio.dtype == np.float32 and audio.shape == (45 * 1000,) and np.abs(audio).max() <= 1.0
    if present[VIDEO]:
      assert recording["video"].dtype == np.float32 and recording["video"].shape == (2, 12)
    assert recording["label"] == int(recording["arousal"] > 0.5) and 0.0 < recording["arousal"] < 1.0


def test_availability_rates_and_missing_at_test_only():
  recordings = StressRecordings("train", 40)  # 480 recordings
  present = np.stack([recordings.present(index) for index in range(len(recordings))])
  assert present[:, :3].all()
  # binomial standard errors: 0.023 (audio), 0.018 (video); tolerances are 3.5 of them
  assert abs(1.0 - present[:, AUDIO].mean() - 0.46) < 0.08
  assert abs(1.0 - present[:, VIDEO].mean() - 0.18) < 0.063
  assert abs(np.corrcoef(present[:, AUDIO], present[:, VIDEO])[0, 1]) < 0.15  # drawn independently
  for mode, missing in (("audio", [AUDIO]), ("video", [VIDEO]), ("audio_video", [AUDIO, VIDEO])):
    train = StressRecordings("train", 3, missing_at_test_only=mode)
    test = StressRecordings("test", 3, missing_at_test_only=mode)
    assert all(train.present(index).all() for index in range(len(train)))
    for index in range(len(test)):
      present = test.present(index)
      assert not present[missing].any() and present[[m for m in range(5) if m not in missing]].all()
  recording = StressRecordings("test", 1, missing_at_test_only="audio_video", audio_rate=1000).recording(3)
  assert recording["audio"] is None and recording["video"] is None


def test_labels_balanced_and_task_driven():
  recordings = StressRecordings("train", 40)
  arousal = np.array([recordings.arousal(index) for index in range(len(recordings))])
  labels = arousal > 0.5
  assert 0.4 < labels.mean() < 0.6
  by_task = labels.reshape(-1, len(TASKS)).mean(axis=0)
  assert by_task[TASKS.index("Math")] > 0.8 and by_task[TASKS.index("Relax")] < 0.2
  # subjects differ in susceptibility: the same task is not always the same label
  assert 0.05 < by_task[TASKS.index("Reading")] < 0.95


def arousal_statistics(recording: dict, sample_rate: int) -> dict:
  """Per-modality statistics that should follow arousal, by plain signal processing."""
  ecg = standardised(recording, "ecg")
  height = np.median(ecg) + 0.5 * (np.percentile(ecg, 99) - np.median(ecg))
  peaks, _ = scipy_signal.find_peaks(ecg, distance=int(0.33 * sample_rate), height=height)
  beat_intervals = np.diff(peaks) / sample_rate
  respiration = standardised(recording, "rr")
  power = np.abs(np.fft.rfft(respiration - respiration.mean())) ** 2
  frequencies = np.fft.rfftfreq(respiration.shape[0], 1.0 / sample_rate)
  band = (frequencies > 0.05) & (frequencies < 0.7)
  return {
    "heart_rate": 60.0 / beat_intervals.mean(),
    "beat_interval_spread": beat_intervals.std(),
    "breathing_rate": 60.0 * frequencies[band][np.argmax(power[band])],
    "eda_level": standardised(recording, "eda").mean(),
    "audio_energy": np.sqrt(np.mean(recording["audio"] ** 2)),
  }


def recordings_statistics(recordings: StressRecordings) -> tuple[dict, dict]:
  """({name: (N,) arousal statistic of each recording, with the video factor decoded by the generator's projection},
  {"arousal", "shared_state": (N,)})."""
  rows = [
    (recording, arousal_statistics(recording, recordings.sample_rate))
    for recording in map(recordings.recording, range(len(recordings)))
  ]
  statistics = {name: np.array([stats[name] for _, stats in rows]) for name in rows[0][1]}
  decoded = [np.linalg.lstsq(recordings.video_projection, recording["video"].mean(0))[0][0] for recording, _ in rows]
  statistics["video_decoded"] = np.array(decoded)
  latents = {name: np.array([recording[name] for recording, _ in rows]) for name in ("arousal", "shared_state")}
  return statistics, latents


def test_each_modality_carries_arousal():
  options = {"audio_rate": 1000, "missing_audio": 0.0, "missing_video": 0.0, "shared_state_std": 0.0}
  recordings = StressRecordings("train", 10, **options)
  statistics, latents = recordings_statistics(recordings)
  arousal = latents["arousal"]
  assert not latents["shared_state"].any()  # independent views
  subject = np.arange(len(recordings)) // len(TASKS)

  def within_subject(values):
    return values - (np.bincount(subject, values) / np.bincount(subject))[subject]

  sign = {"beat_interval_spread": -1.0}  # heart rate variability falls under stress
  correlations = {}
  for name, values in statistics.items():
    raw = sign.get(name, 1.0) * np.corrcoef(values, arousal)[0, 1]
    within = sign.get(name, 1.0) * np.corrcoef(within_subject(values), within_subject(arousal))[0, 1]
    correlations[name] = raw
    assert raw > 0.35 and within > 0.5, (name, raw, within)
  # the modalities are noisy views: their standardised sum follows arousal better than any one of them
  fused = sum(sign.get(name, 1.0) * (values - values.mean()) / values.std() for name, values in statistics.items())
  assert np.corrcoef(fused, arousal)[0, 1] > max(correlations.values()) + 0.05


def test_shared_state_couples_the_views():
  """The recording-level state moves each view with its loading's sign; the complete set's sum cancels it, the
  physiological subset's does not."""
  recordings = StressRecordings("train", 10, audio_rate=1000, missing_audio=0.0, missing_video=0.0)
  statistics, latents = recordings_statistics(recordings)
  arousal, state = latents["arousal"], latents["shared_state"]
  assert 0.6 < state.std() < 1.0 and abs(np.corrcoef(state, arousal)[0, 1]) < 0.2  # N(0, 0.8²), not arousal
  # each statistic's part not explained by arousal follows the state with the loading's sign
  loadings = {"heart_rate": 1, "eda_level": 1, "breathing_rate": -1, "video_decoded": -1, "audio_energy": 0}
  design = np.stack([np.ones_like(arousal), arousal], axis=1)
  for name, loading in loadings.items():
    values = statistics[name]
    residual = values - design @ np.linalg.lstsq(design, values)[0]
    correlation = np.corrcoef(residual, state)[0, 1]
    assert (correlation > 0.5) if loading > 0 else (correlation < -0.5) if loading < 0 else abs(correlation) < 0.25, (
      name,
      correlation,
    )
  z = {name: (values - values.mean()) / values.std() for name, values in statistics.items()}
  physiological = z["heart_rate"] + z["eda_level"] + z["breathing_rate"]
  complete = physiological + z["video_decoded"]
  assert np.corrcoef(physiological, state)[0, 1] > 0.4 and abs(np.corrcoef(complete, state)[0, 1]) < 0.2
  assert np.corrcoef(complete, arousal)[0, 1] > np.corrcoef(physiological, arousal)[0, 1] + 0.1


def test_windows_are_slices_of_the_recordings():
  recordings = StressRecordings("train", 1, seconds=60, audio_rate=1000, missing_audio=0.0, missing_video=0.0)
  source = StressWindowSource(recordings, window_seconds=30, stride_seconds=15)
  assert len(source) == 3 * 12 and source.windows[:4] == [(0, 0), (0, 750), (0, 1500), (1, 0)]
  mel = mel_parameters(1000)
  assert source.num_frames == 1 + 30 * 1000 // mel["hop_length"] == 469
  for index, clip in ((4, 1), (5, 2), (6 * 3 + 2, 2)):  # the clip starting with the window, 15 s apart
    example = source[index]
    recording_index, start = source.windows[index]
    recording = recordings.recording(recording_index)
    for modality in PHYSIO_MODALITIES:
      expected = (recording[modality][start : start + 1500] - PHYSIO_MEAN[modality]) / PHYSIO_STD[modality]
      np.testing.assert_allclose(example[modality], expected, rtol=1e-6, atol=1e-6)
      assert example[modality].dtype == np.float32
    audio = recording["audio"][start * 20 : start * 20 + 30000]
    expected_audio = normalise_log_mel(log_mel_spectrogram(audio, 1000, num_mels=recordings.num_mels, **mel))
    np.testing.assert_allclose(example["audio"], expected_audio, rtol=1e-5, atol=1e-5)
    assert example["audio"].shape == (16, 469) and example["audio"].dtype == np.float32
    np.testing.assert_array_equal(example["video"], recording["video"][clip])
    assert example["present"].dtype == bool and example["present"].all()
    assert example["label"] == recording["label"] and example["label"].dtype == np.int32
    assert example["recording"] == recording_index and example["recording"].dtype == np.int32

  test_source = StressWindowSource(recordings, window_seconds=30, stride_seconds=30, num_frames=32)
  assert [start for recording, start in test_source.windows if recording == 0] == [0, 1500]
  assert test_source[1]["audio"].shape == (16, 32)
  whole = StressWindowSource(recordings, whole_recording=True, num_frames=32)
  example, recording = whole[2], recordings.recording(2)
  assert len(whole) == 12 and example["ecg"].shape == (3000,) and example["audio"].shape == (16, 32)
  np.testing.assert_allclose(example["video"], recording["video"].mean(0), rtol=1e-6)


def test_missing_modalities_are_zeros():
  recordings = StressRecordings("test", 1, seconds=30, audio_rate=1000, missing_at_test_only="audio_video")
  example = StressWindowSource(recordings, num_frames=20)[0]
  assert example["present"].tolist() == [True, True, True, False, False]
  np.testing.assert_array_equal(example["audio"], np.zeros((16, 20)))
  np.testing.assert_array_equal(example["video"], np.zeros(32))


def test_normalised_signals_are_near_standard():
  recordings = StressRecordings("train", 4, audio_rate=1000)
  for modality in PHYSIO_MODALITIES:
    values = np.concatenate([standardised(recordings.recording(index), modality) for index in range(48)])
    # EDA's tonic level is exponential in its view, which the shared state widens: σ 1.8 (0.8 without the state)
    assert abs(values.mean()) < 0.35 and 0.6 < values.std() < 2.0, modality


def reference_filterbank(rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
  """HTK mel triangles, bin by bin from the mel formula."""

  def mel(hz):
    return 2595.0 * math.log10(1.0 + hz / 700.0)

  def hz(mel_value):
    return 700.0 * (10.0 ** (mel_value / 2595.0) - 1.0)

  edges = [hz(mel(fmin) + (mel(fmax) - mel(fmin)) * i / (num_mels + 1)) for i in range(num_mels + 2)]
  bank = np.zeros((num_mels, n_fft // 2 + 1))
  for band in range(num_mels):
    lower, centre, upper = edges[band : band + 3]
    for k in range(n_fft // 2 + 1):
      frequency = k * rate / n_fft
      if lower <= frequency <= centre:
        bank[band, k] = (frequency - lower) / (centre - lower)
      elif centre < frequency <= upper:
        bank[band, k] = (upper - frequency) / (upper - centre)
  return bank


def test_mel_filterbank_against_the_mel_formula():
  assert abs(2595.0 * math.log10(1.0 + 1000.0 / 700.0) - 1000.0) < 0.02  # HTK: 1000 Hz is 1000 mel
  for args in ((16000, 2048, 64, 60.0, 7800.0), (4000, 512, 16, 60.0, 1950.0)):
    np.testing.assert_allclose(mel_filterbank(*args), reference_filterbank(*args), atol=1e-9)


def test_log_mel_matches_a_direct_dft():
  rng = np.random.default_rng(0)
  audio = rng.normal(size=5000)
  n_fft, hop = 512, 128
  spectrogram = log_mel_spectrogram(audio, 4000, n_fft, hop, 16, 60.0, 1950.0)
  assert spectrogram.dtype == np.float32 and spectrogram.shape == (16, 1 + 5000 // hop)
  for length in (4000, 4096, 4097, 30 * 4000):
    assert log_mel_spectrogram(np.zeros(length), 4000, n_fft, hop, 16, 60.0, 1950.0).shape[1] == 1 + length // hop
  window = np.sin(np.pi * np.arange(n_fft) / n_fft) ** 2  # periodic Hann
  dft = np.exp(-2j * np.pi * np.outer(np.arange(n_fft // 2 + 1), np.arange(n_fft)) / n_fft)
  bank = reference_filterbank(4000, n_fft, 16, 60.0, 1950.0)
  # frame t is centred on sample t·hop; frame 0 reflects the start around sample 0 (excluded, as torch.stft)
  segments = {
    10: audio[10 * hop - n_fft // 2 : 10 * hop + n_fft // 2],
    0: np.concatenate([audio[256:0:-1], audio[:256]]),
  }
  for frame, segment in segments.items():
    expected = np.log(bank @ np.abs(dft @ (segment * window)) ** 2 + LOG_MEL_EPS)
    np.testing.assert_allclose(spectrogram[:, frame], expected, rtol=1e-5)


@pytest.mark.parametrize("rate, num_mels, frequency", [(16000, 64, 1000.0), (16000, 64, 3000.0), (4000, 16, 700.0)])
def test_pure_tone_peaks_in_its_band(rate, num_mels, frequency):
  mel = mel_parameters(rate)
  tone = 0.5 * np.sin(2 * np.pi * frequency * np.arange(2 * rate) / rate)
  energy = log_mel_spectrogram(tone, rate, num_mels=num_mels, **mel)[:, 2:-2].mean(axis=1)
  bank = reference_filterbank(rate, mel["n_fft"], num_mels, mel["fmin"], mel["fmax"])
  tone_bin = round(frequency * mel["n_fft"] / rate)
  assert np.argmax(energy) == np.argmax(bank[:, tone_bin])


def test_resize_frames():
  spectrogram = np.arange(8, dtype=np.float32).reshape(2, 4)
  np.testing.assert_array_equal(resize_frames(spectrogram, 4), spectrogram)
  # half-frame centres: output frame j samples input position (j + 0.5) · 4/2 − 0.5
  np.testing.assert_allclose(resize_frames(spectrogram, 2), [[0.5, 2.5], [4.5, 6.5]])
  np.testing.assert_allclose(resize_frames(spectrogram[:, :2], 4), [[0.0, 0.25, 0.75, 1.0], [4.0, 4.25, 4.75, 5.0]])


def assert_same_recording(written: dict, read: dict):
  assert (read["subject"], read["task"], read["label"]) == (written["subject"], written["task"], written["label"])
  assert read["arousal"] == written["arousal"]
  for modality in PHYSIO_MODALITIES:
    np.testing.assert_array_equal(read[modality], written[modality])  # whole counts print exactly
  assert (read["audio"] is None) == (written["audio"] is None) and (read["video"] is None) == (written["video"] is None)
  if written["audio"] is not None:
    np.testing.assert_allclose(read["audio"], written["audio"], rtol=0, atol=0.5 / 32768 + 1e-9)
  if written["video"] is not None:
    np.testing.assert_array_equal(read["video"], written["video"])  # 9 significant digits round-trip float32


def test_round_trip_through_the_published_layout(tmp_path):
  options = {"seconds": 30, "audio_rate": 1000, "video_dim": 8}
  train, test = StressRecordings("train", 2, **options), StressRecordings("test", 1, **options)
  write_stressid_tree(train, tmp_path)
  write_stressid_tree(test, tmp_path)  # both splits share one root, as the release
  assert (
    (tmp_path / "Physiological" / train.subjects[0] / f"{train.subjects[0]}_Math.txt")
    .read_text()
    .startswith("ECG,EDA,RR\n")
  )
  assert (tmp_path / "labels.csv").read_text().splitlines()[0].startswith("subject/task,binary-stress,affect3-class")
  line = (tmp_path / "train_video_features.txt").read_text().splitlines()[0]
  assert line.startswith(f"{train.subjects[0]}:Baseline:0:") and line.endswith("]") and line.count(", ") == 7
  for written, split in ((train, "train"), (test, "test")):
    read = StressIDRecordings(tmp_path, split, sample_rate=50, audio_rate=1000, num_mels=16, subjects=written.subjects)
    assert len(read) == len(written) and read.video_dim == 8
    for index in range(len(written)):
      assert read.num_samples(index) == written.num_samples(index)
      np.testing.assert_array_equal(read.present(index), written.present(index))
      assert_same_recording(written.recording(index), read.recording(index))
  # the windows are the same from either source
  read = StressIDRecordings(tmp_path, "train", sample_rate=50, audio_rate=1000, num_mels=16, subjects=train.subjects)
  from_generator, from_files = StressWindowSource(train, num_frames=40), StressWindowSource(read, num_frames=40)
  assert from_generator.windows == from_files.windows
  for index in range(0, len(from_generator), 5):
    expected, actual = from_generator[index], from_files[index]
    assert expected.keys() == actual.keys()
    for key in expected:
      np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5, atol=2e-3, err_msg=key)


def test_layout_errors(tmp_path):
  root = tmp_path / "stressid"
  with pytest.raises(DataError, match="is not a folder; download StressID"):
    StressIDRecordings(root, "train")
  root.mkdir()
  with pytest.raises(DataError, match="labels.csv does not exist"):
    StressIDRecordings(root, "train")
  recordings = StressRecordings("train", 1, seconds=30, audio_rate=1000, missing_audio=0.0, missing_video=0.0)
  write_stressid_tree(recordings, root)
  subject = recordings.subjects[0]
  options = {"sample_rate": 50, "audio_rate": 1000}
  assert len(StressIDRecordings(root, "train", **options)) == 12

  video_path = root / "train_video_features.txt"
  video_text = video_path.read_text()
  video_path.write_text(video_text.replace("]\n", "\n", 1))
  with pytest.raises(DataError, match=r"train_video_features.txt line 1 is malformed .*subj:task:clipIdx"):
    StressIDRecordings(root, "train", **options)
  video_path.write_text(video_text)
  with pytest.raises(DataError, match=r"line 1 has 32 features, not 5 \(video_dim"):
    StressIDRecordings(root, "train", video_dim=5, **options)

  wav_path = root / "Audio" / subject / f"{subject}_Math.wav"
  wav_bytes = wav_path.read_bytes()
  with pytest.raises(DataError, match=r"_Math.wav is at 1000 Hz, not audio_rate=16000 Hz; resample it"):
    StressIDRecordings(root, "train", sample_rate=50).recording(TASKS.index("Math"))
  wav_path.write_bytes(b"not a wav file at all")
  with pytest.raises(DataError, match=r"_Math.wav is not a readable WAV file"):
    StressIDRecordings(root, "train", **options).recording(TASKS.index("Math"))
  wav_path.write_bytes(wav_bytes)

  physio_path = root / "Physiological" / subject / f"{subject}_Math.txt"
  physio_text = physio_path.read_text()
  physio_path.write_text(physio_text.replace("ECG,EDA,RR", "ECG,GSR,RR", 1))
  with pytest.raises(DataError, match=r"_Math.txt has columns .*without \['EDA'\].*header ECG,EDA,RR"):
    StressIDRecordings(root, "train", **options).recording(TASKS.index("Math"))
  physio_path.unlink()
  with pytest.raises(DataError, match=r"_Math.txt does not exist but labels.csv lists"):
    StressIDRecordings(root, "train", **options)
  physio_path.write_text(physio_text)

  (root / "labels.csv").write_text("subject/task,stress\n")
  with pytest.raises(DataError, match="labels.csv has columns .* binary-stress column"):
    StressIDRecordings(root, "train", **options)


def test_config_errors():
  for kwargs, match in (
    ({"split": "valid", "num_subjects": 1}, "unknown split"),
    ({"split": "train", "num_subjects": 0}, "num_subjects=0"),
    ({"split": "train", "num_subjects": 1, "sample_rate": 0}, "sample_rate=0"),
    ({"split": "train", "num_subjects": 1, "video_dim": 0}, "video_dim=0"),
    ({"split": "train", "num_subjects": 1, "missing_audio": 1.0}, r"missing_audio=1.0: .* \[0, 1\)"),
    ({"split": "train", "num_subjects": 1, "missing_video": -0.1}, r"missing_video=-0.1"),
    ({"split": "train", "num_subjects": 1, "missing_at_test_only": "ecg"}, "missing_at_test_only='ecg'"),
    ({"split": "train", "num_subjects": 1, "shared_state_std": -0.5}, r"shared_state_std=-0.5: choose 0"),
  ):
    with pytest.raises(ConfigError, match=match):
      StressRecordings(**kwargs)
  recordings = StressRecordings("train", 1, seconds=20, audio_rate=1000)
  with pytest.raises(ConfigError, match="window_seconds=30 is longer than recording 0"):
    StressWindowSource(recordings)
  with pytest.raises(ConfigError, match="stride_seconds=0"):
    StressWindowSource(recordings, window_seconds=10, stride_seconds=0)
  with pytest.raises(ConfigError, match="num_frames=0"):
    StressWindowSource(recordings, window_seconds=10, num_frames=0)
