"""Log-mel spectrograms as BYOL-A computes them (torchaudio's MelSpectrogram, log(mel + ε), the AudioSet statistics),
shared by ADAPT's audio (storyjax/data/medical/stress.py) and the laughter detector (storyjax/data/laughter.py)."""

import functools

import numpy as np

from storyjax.errors import ConfigError

LOG_MEL_MEAN = -5.4919195
LOG_MEL_STD = 5.0389895
# log(mel + ε) with ε float32's machine epsilon, as BYOL-A (torch.finfo().eps), whose AudioSet statistics the
# published LOG_MEL_MEAN and LOG_MEL_STD are.
LOG_MEL_EPS = float(np.finfo(np.float32).eps)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float) -> np.ndarray:
  """(num_mels, n_fft // 2 + 1) float64, read-only: triangular filters on the HTK mel scale, m = 2595·log10(1 +
  f / 700), peak 1, no area normalisation (torchaudio's MelSpectrogram defaults, which the published pipeline uses)."""
  bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
  mel_edges = np.linspace(2595.0 * np.log10(1.0 + fmin / 700.0), 2595.0 * np.log10(1.0 + fmax / 700.0), num_mels + 2)
  hz_edges = 700.0 * (10.0 ** (mel_edges / 2595.0) - 1.0)
  lower, centre, upper = hz_edges[:-2, None], hz_edges[1:-1, None], hz_edges[2:, None]
  rising = (bin_hz - lower) / (centre - lower)
  falling = (upper - bin_hz) / (upper - centre)
  filters = np.maximum(0.0, np.minimum(rising, falling))
  filters.flags.writeable = False
  return filters


def log_mel_spectrogram(
  audio: np.ndarray,
  sample_rate: int,
  n_fft: int,
  hop_length: int,
  num_mels: int,
  fmin: float,
  fmax: float,
) -> np.ndarray:
  """(N,) waveform → (num_mels, 1 + N // hop_length) float32 log(mel power + LOG_MEL_EPS).

  Like torch.stft(center=True): reflect-padded by n_fft // 2 on both sides, periodic Hann window of length n_fft.
  """
  audio = np.asarray(audio, np.float64)
  if audio.ndim != 1 or audio.shape[0] <= n_fft // 2:
    raise ConfigError(
      f"audio of shape {audio.shape}: a centred STFT needs a 1-d waveform longer than n_fft // 2 = {n_fft // 2}"
    )
  padded = np.pad(audio, n_fft // 2, mode="reflect")
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]  # (F, n_fft)
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
  power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (F, n_fft // 2 + 1)
  mel = mel_filterbank(sample_rate, n_fft, num_mels, fmin, fmax) @ power.T
  return np.log(mel + LOG_MEL_EPS).astype(np.float32)


def normalise_log_mel(log_mel: np.ndarray) -> np.ndarray:
  """Standardises a log-mel spectrogram with the published statistics (LOG_MEL_MEAN, LOG_MEL_STD); same shape."""
  return ((np.asarray(log_mel) - LOG_MEL_MEAN) / LOG_MEL_STD).astype(np.float32)
