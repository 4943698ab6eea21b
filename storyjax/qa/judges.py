"""Judges of open-ended answers: (question, reference answer, prediction) → (pred 'yes'|'no', score 0–5), or None
when the judgement could not be read (left out of the accuracy and counted, as published).

The published judge is gpt-3.5-turbo-0125 with prompts.judge_messages. CausalLMJudge sends those same messages to a
local causal LM; OverlapJudge is ours, an offline stand-in.
"""

import collections
import pathlib
import re
import string
from typing import Protocol

from storyjax.qa.prompts import JUDGE_SYSTEM_PROMPT, judge_messages, parse_judgement
from storyjax.text.causal_lm import load_causal_lm

Judgement = tuple[str, float]

_ARTICLES = re.compile(r"\b(a|an|the)\b")


class Judge(Protocol):
  def judge(self, questions: list[str], answers: list[str], predictions: list[str]) -> list[Judgement | None]:
    """One judgement per (question, answer, prediction), in order."""
    ...


def answer_tokens(text: str) -> list[str]:
  """SQuAD's answer normalisation: lower case, no punctuation, no articles, split on white space."""
  text = "".join(character for character in text.lower() if character not in string.punctuation)
  return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, answer: str) -> float:
  """SQuAD's token F1 between the normalised prediction and answer (1 when both are empty)."""
  predicted, reference = answer_tokens(prediction), answer_tokens(answer)
  if not predicted or not reference:
    return float(predicted == reference)
  common = sum((collections.Counter(predicted) & collections.Counter(reference)).values())
  if not common:
    return 0.0
  precision, recall = common / len(predicted), common / len(reference)
  return 2 * precision * recall / (precision + recall)


class OverlapJudge:
  """Ours, offline: 'yes' when the token F1 of prediction and answer is at least `threshold`; score = 5·F1 rounded
  half up. It ignores the question and, unlike an LLM judge, gives no credit to paraphrases."""

  def __init__(self, threshold: float = 0.5):
    self._threshold = threshold

  def judge(self, questions: list[str], answers: list[str], predictions: list[str]) -> list[Judgement | None]:
    del questions
    judgements = []
    for answer, prediction in zip(answers, predictions, strict=True):
      f1 = token_f1(prediction, answer)
      judgements.append(("yes" if f1 >= self._threshold else "no", float(int(5 * f1 + 0.5))))
    return judgements


class CausalLMJudge:
  """The published judge messages (system + user) through a local causal LM, decoded greedily so that a judgement is
  reproducible (the published API call sampled at its default temperature); read with prompts.parse_judgement."""

  def __init__(self, path: str | pathlib.Path, *, max_new_tokens: int):
    self._model = load_causal_lm(path)
    self._max_new_tokens = max_new_tokens

  def judge(self, questions: list[str], answers: list[str], predictions: list[str]) -> list[Judgement | None]:
    users = [judge_messages(*triple)[1] for triple in zip(questions, answers, predictions, strict=True)]
    if not users:
      return []
    responses = self._model.generate(
      users, max_new_tokens=self._max_new_tokens, temperature=0.0, system=JUDGE_SYSTEM_PROMPT
    )
    return [parse_judgement(response) for response in responses]
