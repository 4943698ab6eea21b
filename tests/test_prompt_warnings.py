"""Warnings about prompts that would lose words silently: empty, cut at the caption limit, unknown to the vocabulary.

In-process and fast: tasks are built from their configs (no training), the CLIP tokenizer is a tiny local one.
"""

import json

import pytest

from configs import cad as cad_config
from configs import director as director_config
from configs import rin as rin_config
from storyjax import sample as sample_lib
from storyjax.tasks import get_task
from storyjax.text import tokenizer as tokenizer_lib
from storyjax.text.caption_inputs import CaptionInputs

VOCABULARY = ["the", "camera", "pushes", "in", "slowly", "and", "then", "pans", "left", ",", "."]


@pytest.fixture(scope="module")
def inputs():
  return CaptionInputs("scratch", max_length=8, vocabulary=VOCABULARY, limit_name="model.max_caption_length")


def test_token_counts_include_bos_and_eos_and_are_not_truncated(inputs):
  captions = ["", "the camera pushes in", "The camera pushes in slowly, and then pans left."]
  # [BOS] [EOS]; [BOS] 4 words [EOS]; [BOS] the camera pushes in slowly , and then pans left . [EOS]
  assert tokenizer_lib.caption_token_counts(inputs.tokenizer, captions) == [2, 6, 13]
  ids, mask = tokenizer_lib.tokenize_captions(inputs.tokenizer, captions[2:], 8)
  assert mask.sum() == 8 and ids[0, -1] == inputs.tokenizer.eos_token_id  # 13 − 8 = 5 tokens dropped before [EOS]


def test_scratch_warnings_count_dropped_tokens_empty_prompts_and_unknown_words(inputs):
  long = "The camera pushes in slowly, and then pans left."  # 13 tokens with [BOS] and [EOS]
  warnings = inputs.prompt_warnings(["the camera pushes in", "", long, "   ", "the camera zooms in on the Dog, dog"])
  assert warnings == [
    "prompt 1 '' is empty; the sample follows no words",
    "prompt 2 'The camera pushes in slowly, and then p…' has 13 tokens; the caption limit "
    "(model.max_caption_length) is 8, so the last 5 are dropped",
    "prompt 3 '   ' is empty (only whitespace); the sample follows no words",
    # [BOS] the camera zooms in on the dog , dog [EOS]: 11 tokens
    "prompt 4 'the camera zooms in on the Dog, dog' has 11 tokens; the caption limit (model.max_caption_length) "
    "is 8, so the last 3 are dropped",
    "prompt 4 'the camera zooms in on the Dog, dog' has 4 words outside the caption vocabulary, read as [UNK]: "
    "'zooms', 'on', 'Dog', 'dog'",
  ]


def test_one_token_over_and_exactly_at_the_limit(inputs):
  at_limit = "the camera pushes in slowly ."  # 6 + 2 = 8 tokens: nothing dropped
  assert inputs.prompt_warnings([at_limit]) == []
  assert inputs.prompt_warnings([at_limit + " ."]) == [
    "prompt 0 'the camera pushes in slowly . .' has 9 tokens; the caption limit (model.max_caption_length) is 8, "
    "so the last 1 is dropped"
  ]
  unnamed = CaptionInputs("scratch", max_length=8, vocabulary=VOCABULARY)
  assert unnamed.prompt_warnings([at_limit + " ."]) == [
    "prompt 0 'the camera pushes in slowly . .' has 9 tokens; the caption limit is 8, so the last 1 is dropped"
  ]


def test_repeated_prompts_are_reported_once_at_their_first_index(inputs):
  prompts = ["the camera pans left", "", "the camera pans left", "", "xylophone"]
  assert inputs.prompt_warnings(prompts) == [
    "prompt 1 '' is empty; the sample follows no words",
    "prompt 4 'xylophone' has 1 word outside the caption vocabulary, read as [UNK]: 'xylophone'",
  ]


def test_clip_counts_with_its_tokenizer_against_its_77_token_context(tmp_path):
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
  vocab = letters + [letter + "</w>" for letter in letters] + ["<|startoftext|>", "<|endoftext|>"]
  (tmp_path / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
  (tmp_path / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per letter
  clip = CaptionInputs("clip", max_length=8, vocabulary=VOCABULARY, clip_path=str(tmp_path))
  # 20 words of 4 letters = 80 tokens, with start and end 82: CLIP's 77 keep 75 of the 80
  warnings = clip.prompt_warnings(["abcd " * 20, "the camera zooms", ""])
  assert warnings == [
    "prompt 0 'abcd abcd abcd abcd abcd abcd abcd abcd…' has 82 tokens; CLIP's text context is 77, so the last 5 "
    "are dropped",
    "prompt 2 '' is empty; the sample follows no words",
  ]
  # Without tokenizer files (e.g. E.T.'s precomputed features) only empty prompts are checked.
  without = CaptionInputs("clip", max_length=8, vocabulary=VOCABULARY)
  assert without.prompt_warnings(["abcd " * 20, ""]) == ["prompt 1 '' is empty; the sample follows no words"]


def test_director_task_warns_about_empty_and_long_prompts():
  task = get_task(director_config.get_config("smoke"))
  assert task.config.model.max_caption_length == 36
  assert task.prompt_warnings(["", "the camera pushes in"]) == ["prompt 0 '' is empty; the sample follows no words"]
  long = " ".join(["the camera pushes in"] * 10)  # 40 words + [BOS] + [EOS] = 42 tokens
  assert task.prompt_warnings([long]) == [
    "prompt 0 'the camera pushes in the camera pushes…' has 42 tokens; the caption limit "
    "(model.max_caption_length) is 36, so the last 6 are dropped"
  ]


def test_rin_tasks_check_captions_in_text_mode_and_only_emptiness_for_class_names():
  cad = get_task(cad_config.get_config("smoke"))
  assert (cad.conditioning, cad.config.model.text_encoder, cad.config.model.max_text_length) == ("text", "scratch", 32)
  long = "a red circle " * 11  # 33 words + 2 = 35 tokens
  assert cad.prompt_warnings([long, "a red circle at the top"]) == [
    "prompt 0 'a red circle a red circle a red circle…' has 35 tokens; the caption limit (model.max_text_length) "
    "is 32, so the last 3 are dropped"
  ]
  rin = get_task(rin_config.get_config("smoke"))
  assert rin.conditioning == "class"
  assert rin.prompt_warnings(["red circle", " ", "red circle " * 20]) == [
    "prompt 1 ' ' is empty (only whitespace); the sample follows no words"
  ]


def test_sample_reports_each_distinct_prompt_once_and_nothing_for_tasks_without_warnings():
  class Task:
    def prompt_warnings(self, prompts):
      return ["same line", *(f"prompt {index}" for index in range(len(prompts))), "same line"]

  assert sample_lib.prompt_warnings(Task(), ["a", "b"]) == ["same line", "prompt 0", "prompt 1"]
  assert sample_lib.prompt_warnings(object(), ["", ""]) == []
