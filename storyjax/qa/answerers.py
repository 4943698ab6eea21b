"""Answerers: anything that maps SFD queries (prompts.build_query's text) to responses.

SubtitleSimilarityAnswerer is our offline, model-free baseline; CausalLMAnswerer is a Hugging Face causal LM from a
local directory, prompted as the published harness prompts LongVA (the query as the user message of a chat with the
system message "You are a helpful assistant.").
"""

import collections
import math
import pathlib
import re
from typing import Protocol

from storyjax.qa.prompts import SYSTEM_PROMPT, ParsedQuery, parse_query
from storyjax.text.causal_lm import load_causal_lm

_WORD = re.compile(r"[a-z0-9]+")


class Answerer(Protocol):
  def answer(self, prompts: list[str]) -> list[str]:
    """One response per prompt, in order."""
    ...


def words(text: str) -> list[str]:
  """Lower-case alphanumeric word tokens ("I'm here." → ['i', 'm', 'here'])."""
  return _WORD.findall(text.lower())


class TfidfSpace:
  """TF-IDF vectors over word tokens with the document frequencies of `documents` (smoothed idf
  log((1 + N) / (1 + df)) + 1, so words of no document weigh most), compared by cosine."""

  def __init__(self, documents: list[str]):
    document_frequency = collections.Counter(word for document in documents for word in set(words(document)))
    self._idf = lambda word: math.log((1 + len(documents)) / (1 + document_frequency[word])) + 1

  def vector(self, text: str) -> dict[str, float]:
    weights = {word: count * self._idf(word) for word, count in collections.Counter(words(text)).items()}
    norm = math.sqrt(sum(weight * weight for weight in weights.values()))
    return {word: weight / norm for word, weight in weights.items()} if norm else {}

  @staticmethod
  def cosine(first: dict[str, float], second: dict[str, float]) -> float:
    return sum(weight * second.get(word, 0.0) for word, weight in first.items())


class SubtitleSimilarityAnswerer:
  """Reads the query's fields back (prompts.parse_query) and answers from its context lines (the subtitle texts, or
  the title in the leakage setting; none without context), by TF-IDF cosine over word tokens:

  MCQ: "(k)" for the option k whose `question + option` best matches one context line (the maximum over lines, so a
    distractor named elsewhere in the film loses to the line stating the fact); ties, and no context, give the first.
  OEQ: the context line most similar to the question, without the words the question already has ("Answer it
    shortly and directly without repeating the question"); "" without context.
  """

  def answer(self, prompts: list[str]) -> list[str]:
    return [self._answer(parse_query(prompt)) for prompt in prompts]

  @staticmethod
  def _answer(query: ParsedQuery) -> str:
    lines = [line for line in query.lines if words(line)]
    space = TfidfSpace(lines)
    line_vectors = [space.vector(line) for line in lines]

    def best_match(text: str) -> tuple[float, int]:
      vector = space.vector(text)
      return max(((space.cosine(vector, line), -index) for index, line in enumerate(line_vectors)), default=(0.0, 0))

    if query.options is not None:
      scores = [best_match(f"{query.question} {option}")[0] for option in query.options]
      return f"({scores.index(max(scores)) + 1})"
    if not lines:
      return ""
    line = lines[-best_match(query.question)[1]]
    asked = set(words(query.question))
    return " ".join(token for token in line.split() if not set(words(token)) <= asked)


class CausalLMAnswerer:
  """A causal LM from a local Hugging Face directory (storyjax.text.causal_lm); sampling as published by default
  (the CLI's flags). Each call draws with seed + the number of earlier calls, so a run is reproducible."""

  def __init__(self, path: str | pathlib.Path, *, temperature: float, max_new_tokens: int, seed: int):
    self._model = load_causal_lm(path)
    self._temperature, self._max_new_tokens, self._seed = temperature, max_new_tokens, seed
    self._calls = 0

  def answer(self, prompts: list[str]) -> list[str]:
    responses = self._model.generate(
      prompts,
      max_new_tokens=self._max_new_tokens,
      temperature=self._temperature,
      seed=self._seed + self._calls,
      system=SYSTEM_PROMPT,
    )
    self._calls += 1
    return responses
