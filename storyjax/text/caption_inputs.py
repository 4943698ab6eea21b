"""Captions → the text input of a model: word ids for a scratch text encoder, or frozen CLIP features.

With `text_encoder="clip"` the features are, in order of preference, E.T.'s precomputed ones carried by the
example (`<caption key>_clip_seq` / `_clip_mask`, e.g. the released `caption_clip/seq/`) or computed once per
distinct caption by our Flax CLIP text transformer from a local Hugging Face checkpoint (`clip_path`) and
cached, so training on the released E.T. data needs no CLIP weights at all.
"""

from collections.abc import Sequence
import pathlib

import numpy as np

from storyjax.errors import ConfigError, DataError
from storyjax.layers.text_encoder import TEXT_ENCODERS
from storyjax.text.clip import CONTEXT_LENGTH as CLIP_LENGTH
from storyjax.text.clip import ClipTextFeatures
from storyjax.text.tokenizer import build_caption_tokenizer, load_caption_tokenizer, save_tokenizer, tokenize_captions

TOKENIZER_DIR = "tokenizer"


class CaptionInputs:
  """example → (caption, caption_mask): ids (L,) int32 for "scratch", features (77, D) float32 for "clip".

  `vocabulary` is the closed word list of the scratch tokenizer (e.g. the embedded captions' words).
  """

  def __init__(
    self,
    text_encoder: str,
    max_length: int,
    vocabulary: Sequence[str] = (),
    clip_path: str = "",
    caption_key: str = "caption",
  ):
    if text_encoder not in TEXT_ENCODERS:
      raise ConfigError(f"model.text_encoder={text_encoder!r}; choose one of {TEXT_ENCODERS}.")
    self.text_encoder, self.max_length, self.clip_path = text_encoder, max_length, clip_path
    self.caption_key = caption_key
    self.tokenizer = build_caption_tokenizer(vocabulary)
    self._clip = None

  @property
  def frozen(self) -> bool:
    return self.text_encoder != "scratch"

  @property
  def vocab_size(self) -> int:
    return len(self.tokenizer)

  def _clip_features(self):
    """The CLIP encoder, loaded on first use (only when an example lacks precomputed features)."""
    if self._clip is None:
      if not self.clip_path:
        raise ConfigError(
          "model.text_encoder='clip' needs CLIP text features: this data has no precomputed "
          "caption_clip features, so set --config.model.clip_path to a local Hugging Face CLIP "
          "checkpoint directory (e.g. openai/clip-vit-base-patch32 saved with save_pretrained)."
        )
      self._clip = ClipTextFeatures(self.clip_path, max_length=CLIP_LENGTH)
    return self._clip

  def texts(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """captions (N,) → inputs (N, L) ids or (N, 77, D) features, and mask (N, L)."""
    if not self.frozen:
      return tokenize_captions(self.tokenizer, list(captions), self.max_length)
    features, mask = self._clip_features().encode(list(captions))
    return np.asarray(features, np.float32), np.asarray(mask, bool)

  def __call__(self, example: dict) -> tuple[np.ndarray, np.ndarray]:
    """One source example → (caption (L,) or (77, D), mask (L,))."""
    precomputed = f"{self.caption_key}_clip_seq"
    if self.frozen and precomputed in example:
      features, mask = example[precomputed], example[f"{self.caption_key}_clip_mask"]
      if np.ndim(features) != 2 or len(features) != CLIP_LENGTH:
        raise DataError(
          f"example {example.get('id', '?')}: {precomputed} has shape {np.shape(features)}, expected ({CLIP_LENGTH}, D)"
        )
      return np.asarray(features, np.float32), np.asarray(mask, bool)
    inputs, mask = self.texts([example[self.caption_key]])
    return inputs[0], mask[0]

  def save(self, workdir: pathlib.Path) -> None:
    save_tokenizer(self.tokenizer, workdir / TOKENIZER_DIR)

  def load(self, workdir: pathlib.Path) -> None:
    self.tokenizer = load_caption_tokenizer(workdir / TOKENIZER_DIR)
