"""Caption tokenizer: ids against a plain-Python reference, round trip, padding/truncation, save/load."""

import re

import numpy as np
import pytest

from storyjax.data.et import procedural
from storyjax.text.tokenizer import build_caption_tokenizer, load_caption_tokenizer, save_tokenizer, tokenize_captions

MAX_LENGTH = 96


@pytest.fixture(scope="module")
def vocabulary():
  return procedural.caption_vocabulary()


@pytest.fixture(scope="module")
def tokenizer(vocabulary):
  return build_caption_tokenizer(vocabulary)


@pytest.fixture(scope="module")
def captions():
  texts = []
  for subset in procedural.SUBSETS:
    for index in range(100):
      sample = procedural.generate_sample(0, subset, "train", index)
      texts += [sample["caption"], sample["caption_cam"]]
  return texts


def reference_ids(caption, vocabulary):
  """[BOS]=2, words at 4 + their rank in the sorted vocabulary, [EOS]=3."""
  words = re.findall(r"\w+|[^\w\s]", caption.lower())
  return [2] + [4 + vocabulary.index(word) for word in words] + [3]


def test_special_tokens_come_first(tokenizer, vocabulary):
  special_ids = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id]
  assert special_ids == [0, 1, 2, 3]
  assert len(tokenizer) == 4 + len(vocabulary)


def test_ids_match_plain_python_reference(tokenizer, vocabulary, captions):
  ids, mask = tokenize_captions(tokenizer, captions, MAX_LENGTH)
  assert ids.shape == mask.shape == (len(captions), MAX_LENGTH)
  assert ids.dtype == np.int32 and mask.dtype == bool
  for row, valid, caption in zip(ids, mask, captions):
    expected = reference_ids(caption, vocabulary)
    assert len(expected) <= MAX_LENGTH, "raise MAX_LENGTH: a dataset caption was truncated"
    np.testing.assert_array_equal(row[: len(expected)], expected)
    np.testing.assert_array_equal(row[len(expected) :], 0)
    np.testing.assert_array_equal(valid, np.arange(MAX_LENGTH) < len(expected))
  assert not np.any(ids == tokenizer.unk_token_id)


def test_round_trip_gives_the_lowercased_caption(tokenizer, captions):
  for caption in captions:
    assert tokenizer.decode(tokenizer(caption)["input_ids"], skip_special_tokens=True) == caption.lower()


def test_truncation_keeps_eos_last_and_unknown_words_map_to_unk(tokenizer):
  ids, mask = tokenize_captions(tokenizer, ["The camera pushes in, then pulls out.", "The zebra pushes in."], 5)
  assert mask.all()
  np.testing.assert_array_equal(ids[:, [0, -1]], [[2, 3], [2, 3]])
  assert ids[0, 1:4].tolist() == [tokenizer.convert_tokens_to_ids(w) for w in ("the", "camera", "pushes")]
  assert ids[1, 2] == tokenizer.unk_token_id


def test_save_then_load_gives_identical_ids(tokenizer, captions, tmp_path):
  save_tokenizer(tokenizer, tmp_path / "tokenizer")
  loaded = load_caption_tokenizer(tmp_path / "tokenizer")
  assert loaded.get_vocab() == tokenizer.get_vocab()
  for left, right in zip(
    tokenize_captions(tokenizer, captions, MAX_LENGTH), tokenize_captions(loaded, captions, MAX_LENGTH)
  ):
    np.testing.assert_array_equal(left, right)


def test_errors_name_the_problem(tmp_path):
  missing = tmp_path / "no_tokenizer_here"
  with pytest.raises(FileNotFoundError, match="no_tokenizer_here"):
    load_caption_tokenizer(missing)
  with pytest.raises(ValueError, match="dolly-in"):
    build_caption_tokenizer(["camera", "dolly-in"])
  tokenizer = build_caption_tokenizer(["camera"])
  with pytest.raises(ValueError, match="list"):
    tokenize_captions(tokenizer, "camera", 8)
  with pytest.raises(ValueError, match="max_length=1"):
    tokenize_captions(tokenizer, ["camera"], 1)
