"""Captions from E.T. camera and character tags: a deterministic template captioner and optional LLM writing.

E.T. (thesis §3.2) tags every velocity step with a camera and a character class (`tagging`), then asked an LLM
to describe the runs from an outline "Between frames s and e: pattern". `describe_runs` writes such a caption
from templates instead, with each camera run's timing in words at 25 fps, and `parse_camera_classes` reads
the camera classes back. `LLMRewriter` reproduces E.T.'s LLM step with a local transformers model.
"""

from collections.abc import Callable
import functools
import importlib.util
import os
import re

import numpy as np

from storyjax.data.et import tagging
from storyjax.data.et.camera import FPS
from storyjax.data.et.procedural import (
  CAMERA_MOTION_CLASSES,
  CHARACTER_MOTION_CLASSES,
  STATIC_CAMERA_PHRASES,
  camera_phrases,
  character_phrases,
)
from storyjax.errors import ConfigError, DataError

_NUM_CLASSES = len(tagging.CAMERA_CLASS_NAMES)
_ONES = [
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
  "fourteen",
  "fifteen",
  "sixteen",
  "seventeen",
  "eighteen",
  "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_VERTICAL_CHARACTER_PHRASES = {-1: ("climbs up", "moves up", "goes up"), 1: ("climbs down", "moves down", "goes down")}


def _signs(motion_class: int) -> np.ndarray:
  """Class id → (3,) signs in {−1, 0, 1}, inverting tagging.class_from_signs."""
  if not 0 <= motion_class < _NUM_CLASSES:
    raise DataError(f"motion class {motion_class} is not one of E.T.'s {_NUM_CLASSES} classes (0..26).")
  digits = np.array([motion_class // 9, motion_class // 3 % 3, motion_class % 3])
  return np.where(digits == 2, -1, digits)


@functools.cache
def camera_class_phrases(camera_class: int) -> tuple[str, ...]:
  """Verb phrases for any of E.T.'s 27 camera classes; a tagged static run never pans (rotation is not tagged)."""
  signs = _signs(camera_class)
  if camera_class == 0:
    return STATIC_CAMERA_PHRASES
  if camera_class in CAMERA_MOTION_CLASSES:
    return camera_phrases(camera_class)
  # The 8 three-axis classes, which the procedural generator never makes: a lateral pair plus push/pull.
  lateral = camera_phrases(tagging.class_from_signs((*signs[:2], 0)))[0]
  depth = camera_phrases(tagging.class_from_signs((0, 0, signs[2])))[0]
  return f"{lateral} while it {depth}", f"{depth} while it {lateral}"


@functools.cache
def character_class_phrases(character_class: int) -> tuple[str, ...]:
  """Verb phrases for any of E.T.'s 27 character classes (world axes; −y is up)."""
  signs = _signs(character_class)
  if character_class in CHARACTER_MOTION_CLASSES:
    return character_phrases(character_class)
  ground_class = tagging.class_from_signs((signs[0], 0, signs[2]))
  if ground_class == 0:
    return _VERTICAL_CHARACTER_PHRASES[int(signs[1])]
  vertical = "up" if signs[1] < 0 else "down"
  return tuple(f"{phrase} while going {vertical}" for phrase in character_phrases(ground_class))


def _number_words(number: int) -> str:
  if number < 20:
    return _ONES[number]
  if number < 100:
    return _TENS[number // 10] + ("" if number % 10 == 0 else "-" + _ONES[number % 10])
  if number < 1000:
    rest = number % 100
    return f"{_ONES[number // 100]} hundred" + ("" if rest == 0 else f" and {_number_words(rest)}")
  raise DataError(f"A run of {number} seconds is too long to caption (at most 999 s).")


def seconds_in_words(steps: int, fps: float = FPS) -> str:
  """Step count → "about two seconds", "one second", "less than a second" (rounded half up, 'about' unless exact)."""
  seconds = steps / fps
  whole = int(np.floor(seconds + 0.5))
  if whole == 0:
    return "less than a second"
  about = "" if whole == seconds else "about "
  return f"{about}{_number_words(whole)} second{'s' if whole > 1 else ''}"


def _valid_steps(segments, name: str) -> np.ndarray:
  """(M,) int classes with PAD_CLASS entries dropped; DataError for anything else."""
  labels = np.asarray(segments)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DataError(
      f"{name} must be a 1-D integer array of E.T. classes (N−1,), got shape {labels.shape} dtype {labels.dtype}."
    )
  if np.any((labels < 0) | (labels > tagging.PAD_CLASS)):
    raise DataError(
      f"{name} has values outside [0, {tagging.PAD_CLASS}] (27 classes, {tagging.PAD_CLASS} = "
      f"padding): {sorted(set(labels[(labels < 0) | (labels > tagging.PAD_CLASS)].tolist()))}."
    )
  labels = labels[labels != tagging.PAD_CLASS]
  if labels.size == 0:
    raise DataError(f"{name} is empty (or all padding); a caption needs at least one tagged step.")
  return labels.astype(np.int64)


def _checked_labels(cam_segments, char_segments, include_character: bool):
  """(cam_labels, char_labels or None), unpadded, checked to tag the same steps."""
  cam_labels = _valid_steps(cam_segments, "cam_segments")
  if not include_character:
    return cam_labels, None
  if char_segments is None:
    raise DataError("char_segments is None; pass the character tags or include_character=False.")
  char_labels = _valid_steps(char_segments, "char_segments")
  if len(char_labels) != len(cam_labels):
    raise DataError(
      f"cam_segments has {len(cam_labels)} unpadded steps but char_segments has "
      f"{len(char_labels)}; both tag the same N−1 velocity steps."
    )
  return cam_labels, char_labels


def _join_then(parts: list[str], subject: str = "") -> str:
  """["A", "B", "C"] → "A, then {subject}B, and finally {subject}C"; two parts have no 'finally'."""
  if len(parts) == 1:
    return parts[0]
  middle = "".join(f", then {subject}{part}" for part in parts[1:-1])
  last = "finally " if len(parts) > 2 else "then "
  return f"{parts[0]}{middle}, {'and ' if len(parts) > 2 else ''}{last}{subject}{parts[-1]}"


def _camera_clause(template: str, cam_phrases: list[str], cam_runs, char_clause: str | None) -> str:
  """The camera part of a template: durations ("for about two seconds"), or onsets for at_first_after."""
  timed = [f"{phrase} for {seconds_in_words(end - start)}" for phrase, (_, start, end) in zip(cam_phrases, cam_runs)]
  if template == "first_then_finally":
    return (
      f"throughout the shot, the camera {timed[0]}"
      if len(timed) == 1
      else f"first the camera {_join_then(timed, 'it ')}"
    )
  if template == "at_first_after":
    if len(timed) == 1:
      return f"from start to finish, the camera {timed[0]}"
    onsets = [
      f"after {seconds_in_words(start)} it {phrase}" for phrase, (_, start, _) in zip(cam_phrases[1:], cam_runs[1:])
    ]
    return f"at first the camera {cam_phrases[0]}{''.join(f', {onset}' for onset in onsets[:-1])}, and {onsets[-1]}"
  if template == "interleaved":
    during = "" if char_clause is None else f" while the character {char_clause}"
    return f"the camera {timed[0]}{during}{_join_then(['', *timed[1:]], 'it ')}"
  return f"the camera {_join_then(timed)}"


# Sentences of each template with a character; without one, every template is its camera clause alone.
_SENTENCES = {
  "while": ("while the character {char}, {cam}",),
  "interleaved": ("{cam}",),
  "first_then_finally": ("{cam}", "the character {char}"),
  "at_first_after": ("the character {char}", "{cam}"),
  "meanwhile": ("{cam}", "meanwhile, the character {char}"),
}
TEMPLATES = tuple(_SENTENCES)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
  return options[int(rng.integers(len(options)))]


def _rng(rng) -> np.random.Generator:
  if isinstance(rng, np.random.Generator):
    return rng
  return np.random.default_rng(0 if rng is None else rng)


def describe_runs(
  cam_segments, char_segments=None, rng=None, template: str | None = None, include_character: bool = True
) -> str:
  """(N−1,) camera and character class arrays (PAD_CLASS ignored) → one caption with timing in words.

  rng: a numpy Generator, an int seed, or None (seed 0); it draws the template (unless given, from TEMPLATES),
  then one phrase per camera run, then one per character run. include_character=False gives E.T.'s
  camera-only caption_cam (char_segments may then be None); same rng and template → the same camera words.
  """
  if template is not None and template not in TEMPLATES:
    raise ConfigError(f"Unknown caption template {template!r}; choose one of {TEMPLATES}.")
  cam_labels, char_labels = _checked_labels(cam_segments, char_segments, include_character)
  cam_runs = tagging.runs(cam_labels)
  rng = _rng(rng)
  template = TEMPLATES[int(rng.integers(len(TEMPLATES)))] if template is None else template
  cam_phrases = [_pick(rng, camera_class_phrases(run_class)) for run_class, _, _ in cam_runs]
  char_clause = None
  if char_labels is not None:
    char_runs = tagging.runs(char_labels)
    char_phrases = [_pick(rng, character_class_phrases(run_class)) for run_class, _, _ in char_runs]
    if len(char_runs) == 1:
      char_clause = char_phrases[0]
    else:
      char_clause = " and then ".join(
        f"{phrase} for {seconds_in_words(end - start)}" for phrase, (_, start, end) in zip(char_phrases, char_runs)
      )
  camera = _camera_clause(template, cam_phrases, cam_runs, char_clause)
  frames = ("{cam}",) if char_clause is None else _SENTENCES[template]
  sentences = [frame.format(cam=camera, char=char_clause) for frame in frames]
  return " ".join(sentence[0].upper() + sentence[1:] + "." for sentence in sentences)


def caption_trajectory(poses, char_pos, seed: int) -> dict:
  """(N, 3, 4) camera-to-world poses and (N, 3) character positions → E.T. tags and template captions.

  Returns caption str (camera + character), caption_cam str (camera only, same template and camera words),
  cam_segments and char_segments (N−1,) int64 E.T. classes.
  """
  poses, char_pos = np.asarray(poses), np.asarray(char_pos)
  if len(poses) != len(char_pos):
    raise DataError(f"poses has {len(poses)} frames but char_pos has {len(char_pos)}; they must match.")
  cam_segments, char_segments = tagging.tag_camera(poses), tagging.tag_character(char_pos)
  return {
    "caption": describe_runs(cam_segments, char_segments, seed),
    "caption_cam": describe_runs(cam_segments, None, seed, include_character=False),
    "cam_segments": cam_segments,
    "char_segments": char_segments,
  }


def _alternation(phrases) -> str:
  # Longest first, so a two-axis phrase wins over the one-axis phrase it starts with.
  return "|".join(re.escape(phrase) for phrase in sorted(set(phrases), key=len, reverse=True))


@functools.cache
def _parsers() -> tuple[re.Pattern, re.Pattern, dict[str, int]]:
  """(character clause, camera phrase, camera phrase → class)."""
  phrase_class = {phrase: cls for cls in range(_NUM_CLASSES) for phrase in camera_class_phrases(cls)}
  char_phrases = [phrase for cls in range(_NUM_CLASSES) for phrase in character_class_phrases(cls)]
  # A character clause runs to the next comma or period; camera phrases like "moves closer to the character"
  # are never followed by a character verb phrase, so they are not taken for one.
  char_clause = re.compile(rf"\bthe character (?:{_alternation(char_phrases)})\b[^,.]*")
  camera_phrase = re.compile(rf"(?<![\w-])(?:{_alternation(phrase_class)})(?![\w-])")
  return char_clause, camera_phrase, phrase_class


def parse_camera_classes(caption: str) -> tuple[int, ...]:
  """The ordered camera classes of a caption written by `describe_runs` (any template, with or without character)."""
  char_clause, camera_phrase, phrase_class = _parsers()
  camera_text = char_clause.sub(" ", caption.lower())
  return tuple(phrase_class[match.group(0)] for match in camera_phrase.finditer(camera_text))


def _et_runs(labels: np.ndarray, names: tuple[str, ...]) -> str:
  """E.T.'s "Between frames s and e: pattern" per run (e inclusive), joined with ';'."""
  return ";".join(
    f"Between frames {start} and {end - 1}: {names[run_class]}" for run_class, start, end in tagging.runs(labels)
  )


def outline(cam_segments, char_segments=None) -> str:
  """E.T.'s LLM outline of the tag runs (PAD_CLASS ignored; char_segments None → camera only).

  As in E.T., "Total frames" is the last run's inclusive end step, i.e. N−2 for N frames.
  """
  cam_labels, char_labels = _checked_labels(cam_segments, char_segments, char_segments is not None)
  text = (
    f"Outline: Total frames {len(cam_labels) - 1}; [Camera motion] {_et_runs(cam_labels, tagging.CAMERA_CLASS_NAMES)}. "
  )
  if char_labels is None:
    return text
  return text + f"[Main character motion] {_et_runs(char_labels, tagging.CHARACTER_CLASS_NAMES)}."


# E.T.'s prompt parts (configs/captioning/llm/prompt/cam*.yaml), asking for one sentence relative to the character.
_LLM_CONTEXT = "You act as a camera operator writing a technical script for camera motion descriptions."
_LLM_INSTRUCTION = {
  True: "Given a rough outline of the camera motion and main character motion, write one short sentence "
  "describing the camera motion relative to the main character.",
  False: "Given a rough outline of the camera motion, write one short sentence describing the camera motion.",
}
_LLM_CONSTRAINT = "The sentence should be short, and factual. Do not mention frame indices."
_EXAMPLE_CAM = np.repeat([9, 1], [100, 60])  # trucking right, then push in
_EXAMPLE_CHAR = np.repeat([9], [160])  # move right
_EXAMPLE_DESCRIPTION = {
  True: "The camera trucks right alongside the character as they walk to the right, then pushes in towards them.",
  False: "The camera trucks right, then pushes in.",
}
_LLM_RETRY = "Remove frame indices."


def llm_prompt(cam_segments, char_segments=None) -> list[dict[str, str]]:
  """Chat messages asking for a caption of the tag runs: E.T.'s context, instruction, constraint, one example and
  the outline (char_segments None → camera only)."""
  with_character = char_segments is not None
  example = outline(_EXAMPLE_CAM, _EXAMPLE_CHAR if with_character else None)
  demonstration = f"\n# Example\n{example}\nDescription: {_EXAMPLE_DESCRIPTION[with_character]}\n# End of example"
  content = (
    f"{_LLM_CONTEXT}\n{_LLM_INSTRUCTION[with_character]}\n{_LLM_CONSTRAINT}{demonstration}"
    f"\n\n{outline(cam_segments, char_segments)}\nDescription: "
  )
  return [{"role": "user", "content": content}]


def llm_caption(
  generate: Callable[[list[dict[str, str]]], str], cam_segments, char_segments=None, max_retries: int = 10
) -> str:
  """Caption from `generate(messages) -> text`; while the text has digits, asks again ("Remove frame indices.")
  up to max_retries times, then keeps the last answer, as E.T. does. "Description: " is stripped."""
  messages = llm_prompt(cam_segments, char_segments)
  for retry in range(max_retries + 1):
    caption = generate(messages)
    if retry == max_retries or not any(character.isdigit() for character in caption):
      break
    messages = [*messages, {"role": "assistant", "content": caption}, {"role": "user", "content": _LLM_RETRY}]
  return caption.replace("Description: ", "").strip()


class LLMRewriter:
  """Writes captions from the tag outline with a local transformers causal LM (E.T.'s sampling settings)."""

  def __init__(self, model_dir: str, max_new_tokens: int = 80, seed: int = 0, max_retries: int = 10):
    if not os.path.isdir(model_dir):
      raise DataError(
        f"LLM model directory {model_dir!r} does not exist; pass a local transformers model "
        f"directory (nothing is downloaded)."
      )
    if importlib.util.find_spec("torch") is None:
      raise ConfigError(
        "LLM caption rewriting needs torch (transformers loads causal LMs with it) and a local "
        "model directory; install torch or use the template captioner (describe_runs)."
      )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
    self.model = AutoModelForCausalLM.from_pretrained(model_dir)
    self.max_new_tokens, self.max_retries = max_new_tokens, max_retries

  def _generate(self, messages: list[dict[str, str]]) -> str:
    inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    inputs = inputs.to(self.model.device)
    pad_token_id = self.tokenizer.pad_token_id
    output = self.model.generate(
      **inputs,
      max_new_tokens=self.max_new_tokens,
      do_sample=True,
      temperature=0.6,
      top_p=0.95,
      top_k=50,
      pad_token_id=self.tokenizer.eos_token_id if pad_token_id is None else pad_token_id,
    )
    return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

  def __call__(self, cam_segments, char_segments=None) -> str:
    """(N−1,) camera and optional character classes → one caption without frame numbers (ideally)."""
    return llm_caption(self._generate, cam_segments, char_segments, self.max_retries)
