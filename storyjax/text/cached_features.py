"""What the frozen text encoders share: fixed-size jitted batches and a per-caption feature cache."""

from collections.abc import Sequence

import numpy as np

from storyjax.errors import ConfigError


class CachedTextFeatures:
  """encode(captions) → features (N, max_length, D) float32, zero after each caption's tokens, and mask (N,
  max_length) bool; each distinct caption runs once, in batches of `batch_size` (one compiled shape).

  Subclasses give `width`, `tokenize(captions) → (token ids (N, max_length) int32, lengths (N,))` and
  `_forward_batch(token_ids (batch_size, max_length), mask (batch_size, max_length)) → (batch_size, max_length, D)`.
  """

  def __init__(self, name: str, max_length: int, batch_size: int):
    if batch_size < 1:
      raise ConfigError(f"{name} batch_size={batch_size} must be at least 1")
    self.max_length, self.batch_size = max_length, batch_size
    self._cache: dict[str, np.ndarray] = {}  # caption → its features for its tokens, (length, D) float32

  def _compute(self, captions: list[str]) -> None:
    token_ids, lengths = self.tokenize(captions)
    # The last caption repeats to fill the last batch, so every call has one shape.
    rows = np.minimum(np.arange(len(captions) + -len(captions) % self.batch_size), len(captions) - 1)
    token_ids, mask = token_ids[rows], np.arange(self.max_length) < lengths[rows, None]
    features = np.concatenate(
      [
        np.asarray(
          self._forward_batch(token_ids[start : start + self.batch_size], mask[start : start + self.batch_size])
        )
        for start in range(0, len(rows), self.batch_size)
      ]
    )
    for caption, caption_rows, length in zip(captions, features, lengths):
      self._cache[caption] = caption_rows[:length].astype(np.float32)

  def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """captions (N,) → features (N, max_length, D) float32, mask (N, max_length) bool."""
    if isinstance(captions, str):
      raise TypeError("encode takes a sequence of captions, got a single string; wrap it in a list")
    missing = list(dict.fromkeys(caption for caption in captions if caption not in self._cache))
    if missing:
      self._compute(missing)
    features = np.zeros((len(captions), self.max_length, self.width), np.float32)
    mask = np.zeros((len(captions), self.max_length), bool)
    for index, caption in enumerate(captions):
      rows = self._cache[caption]
      features[index, : len(rows)], mask[index, : len(rows)] = rows, True
    return features, mask
