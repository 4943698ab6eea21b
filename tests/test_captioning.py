"""Template captioner: exact camera-class round trip on tagged procedural samples, timing words, E.T. outline, LLM."""

import importlib.util
import re

import numpy as np
import pytest

from storyjax.data.et import captioning, procedural, tagging
from storyjax.errors import ConfigError, DataError

_NUMBER_WORDS = {
  word: value
  for value, word in enumerate(
    [
      "zero",
      "one",
      "two",
      "three",
      "four",
      "five",
      "six",
      "seven",
      "eight",
      "nine",
      "ten",
      "eleven",
      "twelve",
      "thirteen",
    ]
  )
}
_STATIC_WORDS = "stays still|remains static|holds its position|does not move|stays fixed"
_CHARACTER_CLAUSE = re.compile(r"\bthe character (walks|moves|heads|stands|stays|waits|climbs|goes)\b", re.IGNORECASE)


def _tagged_samples():
  """(sample, cam_tags, char_tags) for pure and mixed procedural samples."""
  for index in range(16):
    sample = procedural.generate_sample(3, ("pure", "mixed")[index % 2], "test", index)
    yield sample, tagging.tag_camera(sample["camera_pose"]), tagging.tag_character(sample["char_pos"])


def _rounded_seconds(steps: int) -> int:
  return int(np.floor(steps / 25.0 + 0.5))


def _template_of(caption: str) -> str:
  """Which template wrote a caption with several camera runs, from its fixed words."""
  if caption.startswith("While the character"):
    return "while"
  if caption.startswith("First the camera"):
    return "first_then_finally"
  if caption.startswith("The character") and ". At first the camera" in caption:
    return "at_first_after"
  if ". Meanwhile, the character" in caption:
    return "meanwhile"
  if caption.startswith("The camera") and " while the character " in caption:
    return "interleaved"
  raise AssertionError(f"no template recognised in {caption!r}")


def _alternatives(phrases) -> str:
  return "|".join(re.escape(phrase) for phrase in phrases)


def test_parse_recovers_tagged_camera_runs_for_every_template():
  for sample, cam_tags, char_tags in _tagged_samples():
    expected = tagging.run_sequence(cam_tags)
    assert expected == sample["cam_classes"]  # the tagger recovers the generator's classes
    for template in captioning.TEMPLATES:
      for include_character in (True, False):
        caption = captioning.describe_runs(
          cam_tags, char_tags, rng=len(expected), template=template, include_character=include_character
        )
        assert captioning.parse_camera_classes(caption) == expected, caption
        assert not any(character.isdigit() for character in caption)


def test_parse_is_exact_for_all_27_classes_and_every_phrase():
  rng = np.random.default_rng(0)
  seen = set()
  for camera_class in range(27):
    neighbour = 1 if camera_class == 0 else 0  # neighbours' phrases never contain this class's phrases
    cam_tags = np.repeat([neighbour, camera_class, neighbour], [30, 40, 30])
    char_tags = np.repeat(rng.permutation(27)[:2], [60, 40])
    for seed in range(40):
      template = captioning.TEMPLATES[seed % len(captioning.TEMPLATES)]
      caption = captioning.describe_runs(cam_tags, char_tags, rng=seed, template=template)
      assert captioning.parse_camera_classes(caption) == (neighbour, camera_class, neighbour), caption
      seen |= {(camera_class, phrase) for phrase in captioning.camera_class_phrases(camera_class) if phrase in caption}
  every_phrase = {(cls, phrase) for cls in range(27) for phrase in captioning.camera_class_phrases(cls)}
  assert seen == every_phrase


def test_phrase_tables_reuse_procedural_ones_and_name_each_class_once():
  camera = [captioning.camera_class_phrases(cls) for cls in range(27)]
  character = [captioning.character_class_phrases(cls) for cls in range(27)]
  for table in (camera, character):
    phrases = [phrase for options in table for phrase in options]
    assert len(phrases) == len(set(phrases))
    assert all("," not in phrase and "." not in phrase for phrase in phrases)
  for cls in procedural.CAMERA_MOTION_CLASSES[1:]:
    assert camera[cls] == procedural.camera_phrases(cls)
  assert set(camera[0]) == set(_STATIC_WORDS.split("|"))  # a tagged static run is never called a pan
  for cls in procedural.CHARACTER_MOTION_CLASSES:
    assert character[cls] == procedural.character_phrases(cls)
  assert "climbs up" in character[6] and "walks forward and to the left while going down" in character[22]
  with pytest.raises(DataError, match="27"):
    captioning.camera_class_phrases(tagging.PAD_CLASS)


@pytest.mark.parametrize(
  "steps, fps, words",
  [
    (25, 25, "one second"),
    (50, 25, "two seconds"),
    (55, 25, "about two seconds"),
    (12, 25, "less than a second"),
    (13, 25, "about one second"),
    (37, 25, "about one second"),
    (38, 25, "about two seconds"),
    (2500, 25, "one hundred seconds"),
    (3025, 25, "one hundred and twenty-one seconds"),
    (5, 2, "about three seconds"),
  ],
)  # halves round up (never reached at 25 fps)
def test_seconds_in_words(steps, fps, words):
  assert captioning.seconds_in_words(steps, fps) == words


def test_timing_words_match_run_lengths():
  timing = re.compile(r"(for|after) (about )?([a-z]+) seconds?")
  for _sample, cam_tags, _ in _tagged_samples():
    found_runs = tagging.runs(cam_tags)
    for template in captioning.TEMPLATES:
      caption = captioning.describe_runs(cam_tags, None, rng=1, template=template, include_character=False)
      found = [
        (match.group(1), bool(match.group(2)), _NUMBER_WORDS[match.group(3)]) for match in timing.finditer(caption)
      ]
      if template == "at_first_after" and len(found_runs) > 1:
        expected = [("after", start % 25 != 0, _rounded_seconds(start)) for _, start, _ in found_runs[1:]]
      else:
        expected = [("for", (end - start) % 25 != 0, _rounded_seconds(end - start)) for _, start, end in found_runs]
      assert found == expected, caption


def test_known_runs_give_the_expected_sentences():
  pad = [tagging.PAD_CLASS] * 20
  cam_tags = np.array([0] * 50 + [1] * 80 + pad)  # static for 2 s, then push in for 3.2 s
  char_tags = np.array([18] * 130 + pad)  # moving left
  static, push_in = _STATIC_WORDS, _alternatives(procedural.camera_phrases(1))
  left = _alternatives(procedural.character_phrases(18))
  expected = {
    "while": rf"While the character ({left}), the camera ({static}) for two seconds, then ({push_in}) "
    rf"for about three seconds\.",
    "interleaved": rf"The camera ({static}) for two seconds while the character ({left}), then it ({push_in}) "
    rf"for about three seconds\.",
    "first_then_finally": rf"First the camera ({static}) for two seconds, then it ({push_in}) for about three "
    rf"seconds\. The character ({left})\.",
    "at_first_after": rf"The character ({left})\. At first the camera ({static}), and after two seconds it "
    rf"({push_in})\.",
    "meanwhile": rf"The camera ({static}) for two seconds, then ({push_in}) for about three seconds\. "
    rf"Meanwhile, the character ({left})\.",
  }
  for template, pattern in expected.items():
    caption = captioning.describe_runs(cam_tags, char_tags, rng=5, template=template)
    assert re.fullmatch(pattern, caption), caption
  one_run = captioning.describe_runs(np.full(40, 9), np.full(40, 0), rng=0, template="first_then_finally")
  right = _alternatives(procedural.camera_phrases(9))
  assert re.fullmatch(
    rf"Throughout the shot, the camera ({right}) for about two seconds\. "
    rf"The character (stands still|stays in place|waits without moving)\.",
    one_run,
  ), one_run


def test_character_clause_present_iff_included():
  for _, cam_tags, char_tags in _tagged_samples():
    for seed in range(5):
      with_character = captioning.describe_runs(cam_tags, char_tags, rng=seed)
      camera_only = captioning.describe_runs(cam_tags, char_tags, rng=seed, include_character=False)
      assert _CHARACTER_CLAUSE.search(with_character), with_character
      assert not _CHARACTER_CLAUSE.search(camera_only), camera_only


def test_deterministic_per_seed_and_templates_vary_across_seeds():
  cam_tags, char_tags = np.repeat([0, 9, 2], [40, 50, 60]), np.repeat([1, 0], [90, 60])
  for template in captioning.TEMPLATES:
    assert _template_of(captioning.describe_runs(cam_tags, char_tags, rng=0, template=template)) == template
  captions = [captioning.describe_runs(cam_tags, char_tags, rng=seed) for seed in range(30)]
  assert captions == [captioning.describe_runs(cam_tags, char_tags, rng=seed) for seed in range(30)]
  assert captions[0] == captioning.describe_runs(cam_tags, char_tags, rng=np.random.default_rng(0))
  assert {_template_of(caption) for caption in captions} == set(captioning.TEMPLATES)
  assert len(set(captions)) > 20


def test_caption_trajectory_tags_then_describes():
  sample = procedural.generate_sample(7, "mixed", "train", 2)
  result = captioning.caption_trajectory(sample["camera_pose"], sample["char_pos"], seed=4)
  np.testing.assert_array_equal(result["cam_segments"], tagging.tag_camera(sample["camera_pose"]))
  np.testing.assert_array_equal(result["char_segments"], tagging.tag_character(sample["char_pos"]))
  assert result["caption"] == captioning.describe_runs(result["cam_segments"], result["char_segments"], rng=4)
  for caption in (result["caption"], result["caption_cam"]):
    assert captioning.parse_camera_classes(caption) == sample["cam_classes"]
  with pytest.raises(DataError, match="frames"):
    captioning.caption_trajectory(sample["camera_pose"], sample["char_pos"][:-1], seed=0)


@pytest.mark.parametrize(
  "cam_tags, char_tags, problem",
  [
    (np.zeros(0, np.int64), np.zeros(0, np.int64), "empty"),
    (np.full(5, tagging.PAD_CLASS), np.full(5, tagging.PAD_CLASS), "empty"),
    (np.array([0, 28]), np.array([0, 0]), "outside"),
    (np.array([-1, 0]), np.array([0, 0]), "outside"),
    (np.zeros(3), np.zeros(3, np.int64), "integer"),
    (np.zeros((2, 3), np.int64), np.zeros(3, np.int64), "1-D"),
    (np.zeros(4, np.int64), np.zeros(3, np.int64), "unpadded steps"),
    (np.zeros(4, np.int64), None, "char_segments is None"),
  ],
)
def test_bad_segments_raise_data_error(cam_tags, char_tags, problem):
  with pytest.raises(DataError, match=problem):
    captioning.describe_runs(cam_tags, char_tags)


def test_unknown_template_raises_config_error():
  with pytest.raises(ConfigError, match="sonnet"):
    captioning.describe_runs(np.zeros(30, np.int64), np.zeros(30, np.int64), template="sonnet")


def test_outline_is_et_text():
  pad = [tagging.PAD_CLASS] * 10
  cam_tags = np.array([0] * 50 + [1] * 30 + pad)
  char_tags = np.array([9] * 40 + [19] * 40 + pad)
  assert captioning.outline(cam_tags, char_tags) == (
    "Outline: Total frames 79; [Camera motion] Between frames 0 and 49: static;Between frames 50 and 79: push_in. "
    "[Main character motion] Between frames 0 and 39: move_right;Between frames 40 and 79: move_left-move_forward."
  )
  assert captioning.outline(cam_tags) == (
    "Outline: Total frames 79; [Camera motion] Between frames 0 and 49: static;Between frames 50 and 79: push_in. "
  )


def test_llm_caption_retries_on_digits_and_strips_description():
  cam_tags, char_tags = np.repeat([0, 1], [50, 30]), np.repeat([9], [80])
  answers = iter(["Between frames 0 and 49 the camera is static.", "Description: The camera waits, then pushes in. "])
  prompts = []

  def generate(messages):
    prompts.append(messages)
    return next(answers)

  assert captioning.llm_caption(generate, cam_tags, char_tags) == "The camera waits, then pushes in."
  first, second = prompts
  assert len(first) == 1 and first[0]["role"] == "user"
  assert first[0]["content"].endswith("\n\n" + captioning.outline(cam_tags, char_tags) + "\nDescription: ")
  assert "relative to the main character" in first[0]["content"]
  assert second[1:] == [
    {"role": "assistant", "content": "Between frames 0 and 49 the camera is static."},
    {"role": "user", "content": "Remove frame indices."},
  ]
  camera_only = captioning.llm_prompt(cam_tags)[0]["content"]
  assert "[Main character motion]" not in camera_only and "character" not in camera_only.split("\n")[1]

  calls = []
  assert captioning.llm_caption(lambda messages: calls.append(1) or "frame 3", cam_tags, max_retries=2) == "frame 3"
  assert len(calls) == 3


def test_llm_rewriter_needs_a_model_dir_and_torch(tmp_path):
  missing = tmp_path / "no_model_here"
  with pytest.raises(DataError, match="no_model_here"):
    captioning.LLMRewriter(str(missing))
  if importlib.util.find_spec("torch") is not None:
    pytest.skip("torch is installed; the missing-torch error cannot occur")
  with pytest.raises(ConfigError, match="torch"):
    captioning.LLMRewriter(str(tmp_path))
