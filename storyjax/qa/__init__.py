"""Short-film question answering (SFD, thesis §2.2): the release loader, the published MCQ / open-ended prompts and
their scoring, answerers, judges and an embedded sample set. The CLI is `python -m storyjax.qa` (__main__.py)."""

from storyjax.qa.answerers import Answerer, CausalLMAnswerer, SubtitleSimilarityAnswerer
from storyjax.qa.data import Question, Release, Subtitle, load_release
from storyjax.qa.judges import CausalLMJudge, Judge, OverlapJudge
from storyjax.qa.prompts import SETTINGS, build_query, judge_messages, parse_judgement, score_mcq
from storyjax.qa.sample import write_sample

__all__ = [
  "SETTINGS",
  "Answerer",
  "CausalLMAnswerer",
  "CausalLMJudge",
  "Judge",
  "OverlapJudge",
  "Question",
  "Release",
  "Subtitle",
  "SubtitleSimilarityAnswerer",
  "build_query",
  "judge_messages",
  "load_release",
  "parse_judgement",
  "score_mcq",
  "write_sample",
]
