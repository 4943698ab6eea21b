"""A word-level caption tokenizer over a closed vocabulary, built locally (no downloads)."""

from collections.abc import Iterable, Sequence
import os

import numpy as np
import tokenizers
from tokenizers import models, normalizers, pre_tokenizers, processors
import transformers

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0, 1, 2, 3
TOKENIZER_FILE = "tokenizer.json"


def build_caption_tokenizer(words: Iterable[str]) -> transformers.PreTrainedTokenizerFast:
  """WordLevel tokenizer: ids 0–3 are [PAD], [UNK], [BOS], [EOS], then the sorted unique lowercased words.

  Text is lowercased and split on whitespace and punctuation; encoding adds [BOS] … [EOS].
  """
  pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation()])
  vocabulary = sorted({word.lower() for word in words} - set(SPECIAL_TOKENS))
  for word in vocabulary:
    pieces = [piece for piece, _ in pre_tokenizer.pre_tokenize_str(word)]
    if pieces != [word]:
      raise ValueError(
        f"Vocabulary entry {word!r} is split into {pieces} by the pre-tokenizer, so it could "
        f"never be matched; pass single words or single punctuation marks."
      )
  vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + tuple(vocabulary))}
  backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=UNK))
  backend.normalizer = normalizers.Lowercase()
  backend.pre_tokenizer = pre_tokenizer
  backend.post_processor = processors.TemplateProcessing(
    single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
  )
  return transformers.PreTrainedTokenizerFast(
    tokenizer_object=backend,
    pad_token=PAD,
    unk_token=UNK,
    bos_token=BOS,
    eos_token=EOS,
    clean_up_tokenization_spaces=True,
  )


def save_tokenizer(tokenizer: transformers.PreTrainedTokenizerFast, path: str | os.PathLike) -> None:
  """Writes the tokenizer to the directory `path` (save_pretrained format)."""
  tokenizer.save_pretrained(os.fspath(path))


def load_caption_tokenizer(path: str | os.PathLike) -> transformers.PreTrainedTokenizerFast:
  """Reads a tokenizer written by save_tokenizer from the directory `path`."""
  path = os.fspath(path)
  if not os.path.isfile(os.path.join(path, TOKENIZER_FILE)):
    raise FileNotFoundError(
      f"No caption tokenizer at {path!r}: expected {os.path.join(path, TOKENIZER_FILE)!r}, written by save_tokenizer."
    )
  return transformers.PreTrainedTokenizerFast.from_pretrained(path)


def tokenize_captions(
  tokenizer: transformers.PreTrainedTokenizerFast, captions: Sequence[str], max_length: int
) -> tuple[np.ndarray, np.ndarray]:
  """captions (B,) → ids (B, L) int32 [BOS] … [EOS] right-padded with [PAD], mask (B, L) bool; L = max_length.

  Longer captions lose words from the end; [EOS] stays the last valid token.
  """
  if isinstance(captions, str):
    raise ValueError("tokenize_captions takes a list of captions, got a single string; wrap it in a list.")
  if max_length < 2:
    raise ValueError(f"max_length={max_length} leaves no room for [BOS] and [EOS]; use at least 2.")
  encoded = tokenizer(
    list(captions),
    padding="max_length",
    truncation=True,
    max_length=max_length,
    padding_side="right",
    truncation_side="right",
    return_attention_mask=True,
  )
  return np.asarray(encoded["input_ids"], np.int32), np.asarray(encoded["attention_mask"], bool)


def caption_token_counts(tokenizer: transformers.PreTrainedTokenizerBase, captions: Sequence[str]) -> list[int]:
  """captions (B,) → each one's token count with the tokenizer's special tokens ([BOS] … [EOS]), not truncated.

  A caption counting n > max_length loses its last n − max_length tokens before [EOS] in tokenize_captions.
  """
  if isinstance(captions, str):
    raise ValueError("caption_token_counts takes a list of captions, got a single string; wrap it in a list.")
  if not captions:
    return []
  encoded = tokenizer(list(captions), truncation=False, verbose=False)  # verbose: no "longer than" log line
  return [len(ids) for ids in encoded["input_ids"]]


def unknown_words(tokenizer: transformers.PreTrainedTokenizerFast, caption: str) -> list[str]:
  """The distinct pieces of `caption`, as written, that the tokenizer reads as [UNK], in order of appearance."""
  encoded = tokenizer(caption, return_offsets_mapping=True, verbose=False)
  pieces = [
    caption[start:end]
    for token, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"])
    if token == tokenizer.unk_token_id
  ]
  return list(dict.fromkeys(pieces))
