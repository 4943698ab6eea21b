"""Captions → the text input of a model: word ids for a scratch text encoder, or frozen CLIP features.

With `text_encoder="clip"` the features are, in order of preference, E.T.'s precomputed ones carried by the
example (`<caption key>_clip_seq` / `_clip_mask`, e.g. the released `caption_clip/seq/`) or computed once per
distinct caption by our Flax CLIP text transformer from a local Hugging Face checkpoint (`clip_path`) and
cached, so training on the released E.T. data needs no CLIP weights at all.

`prompt_warnings` names what a user's prompts will silently lose before sampling: an empty prompt, the tokens cut
at the caption limit, and (scratch) the words outside the closed vocabulary, which are read as [UNK].
"""

from collections.abc import Sequence
import pathlib

import numpy as np
import transformers

from storyjax.errors import ConfigError, DataError
from storyjax.layers.text_encoder import TEXT_ENCODERS
from storyjax.text.clip import CONTEXT_LENGTH as CLIP_LENGTH
from storyjax.text.clip import ClipTextFeatures
from storyjax.text.tokenizer import (
  build_caption_tokenizer,
  caption_token_counts,
  load_caption_tokenizer,
  save_tokenizer,
  tokenize_captions,
  unknown_words,
)

TOKENIZER_DIR = "tokenizer"
PROMPT_SHOWN_CHARS = 40  # a longer prompt is shortened to its first characters and "…" in warnings


def prompt_label(index: int, prompt: str) -> str:
  """How a warning names a prompt: "prompt 1 'The camera pushes in slowly while the…'" (repr: one line)."""
  shown = prompt if len(prompt) <= PROMPT_SHOWN_CHARS else prompt[: PROMPT_SHOWN_CHARS - 1].rstrip() + "…"
  return f"prompt {index} {shown!r}"


def distinct_prompts(prompts: Sequence[str]) -> dict[str, int]:
  """Each distinct prompt → the index of its first occurrence, in order (a prompt repeated is reported once)."""
  first = {}
  for index, prompt in enumerate(prompts):
    first.setdefault(prompt, index)
  return first


def empty_prompt_warning(index: int, prompt: str) -> str | None:
  """The warning for an empty or whitespace-only prompt, None for any other."""
  if prompt.strip():
    return None
  return f"{prompt_label(index, prompt)} is empty{' (only whitespace)' if prompt else ''}; the sample follows no words"


def empty_prompt_warnings(prompts: Sequence[str]) -> list[str]:
  """One warning per distinct empty or whitespace-only prompt: the only check for prompts that are not captions."""
  warnings = (empty_prompt_warning(index, prompt) for prompt, index in distinct_prompts(prompts).items())
  return [warning for warning in warnings if warning]


class CaptionInputs:
  """example → (caption, caption_mask): ids (L,) int32 for "scratch", features (77, D) float32 for "clip".

  `vocabulary` is the closed word list of the scratch tokenizer (e.g. the embedded captions' words); `limit_name`
  is the config key of `max_length` (e.g. "model.max_caption_length"), named in prompt warnings.
  """

  def __init__(
    self,
    text_encoder: str,
    max_length: int,
    vocabulary: Sequence[str] = (),
    clip_path: str = "",
    caption_key: str = "caption",
    limit_name: str = "",
  ):
    if text_encoder not in TEXT_ENCODERS:
      raise ConfigError(f"model.text_encoder={text_encoder!r}; choose one of {TEXT_ENCODERS}.")
    self.text_encoder, self.max_length, self.clip_path = text_encoder, max_length, clip_path
    self.caption_key, self.limit_name = caption_key, limit_name
    self.tokenizer = build_caption_tokenizer(vocabulary)
    self._clip = None
    self._clip_tokenizer = None  # CLIP's tokenizer alone, read to count a prompt's tokens without the weights

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

  def _counting_tokenizer(self) -> transformers.PreTrainedTokenizerBase | None:
    """The tokenizer whose token counts meet the caption limit: scratch's, or CLIP's when it is cheap to have (the
    encoder's once loaded, else its tokenizer files alone from clip_path); None when CLIP's is not at hand."""
    if not self.frozen:
      return self.tokenizer
    if self._clip is not None:
      return self._clip.tokenizer
    path = pathlib.Path(self.clip_path) if self.clip_path else None
    if self._clip_tokenizer is None and path and all((path / name).is_file() for name in ("vocab.json", "merges.txt")):
      self._clip_tokenizer = transformers.CLIPTokenizer.from_pretrained(str(path))
    return self._clip_tokenizer

  def prompt_warnings(self, captions: Sequence[str]) -> list[str]:
    """One line per problem with the prompts, each distinct prompt once, named by its first index and its text:
    an empty (or whitespace-only) prompt; one with more tokens than the caption limit (max_length for scratch,
    counting [BOS] and [EOS]; CLIP's 77-token context, when its tokenizer is at hand), whose last tokens are
    dropped; and, for scratch, the words outside its closed vocabulary, which are read as [UNK]."""
    first = distinct_prompts(captions)
    tokenizer = self._counting_tokenizer()
    counts = caption_token_counts(tokenizer, list(first)) if tokenizer is not None else [None] * len(first)
    if self.frozen:
      limit, limit_text = CLIP_LENGTH, "CLIP's text context"
    else:
      limit, limit_text = self.max_length, "the caption limit" + (f" ({self.limit_name})" if self.limit_name else "")
    warnings = []
    for (caption, index), count in zip(first.items(), counts):
      empty = empty_prompt_warning(index, caption)
      if empty:
        warnings.append(empty)
        continue
      label = prompt_label(index, caption)
      if count is not None and count > limit:
        dropped = count - limit
        warnings.append(
          f"{label} has {count} tokens; {limit_text} is {limit}, so the last {dropped} "
          f"{'is' if dropped == 1 else 'are'} dropped"
        )
      unknown = [] if self.frozen else unknown_words(self.tokenizer, caption)
      if unknown:
        warnings.append(
          f"{label} has {len(unknown)} word{'s' if len(unknown) > 1 else ''} outside the caption vocabulary, "
          f"read as [UNK]: {', '.join(map(repr, unknown))}"
        )
    return warnings

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
