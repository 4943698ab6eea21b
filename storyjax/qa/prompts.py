"""SFD prompts and scoring, byte for byte as in the published LongVA harness (ridouaneg/ShortFilmDataset,
experiments/baselines/LongVA/run_longva.py and eval_longva.py), plus the title-only prompt of the leakage protocol.

A setting is `<task>_<context>`: task `mcq` (5 options, answer "(X)") or `oeq` (open-ended, judged), context
`subtitles` (the film's subtitle lines), `none` (the question alone) or `title` (the movie title only: the data-leakage
protocol, thesis §2.2.2). The published harness has no title prompt; ours keeps the published frame, with the context
sentence "Try to answer it based on the movie title." and "\\n\\nMovie title: {title}" where the subtitles would go.
The published first two sentences have no space between them; kept. Frames are not part of any setting here (text
models only), so the two published frame sentences are not used.
"""

import ast
from collections.abc import Sequence
import dataclasses
import re

from storyjax.qa.data import NUM_OPTIONS, Question, Subtitle

TASKS = ("mcq", "oeq")
CONTEXTS = ("subtitles", "none", "title")
SETTINGS = tuple(f"{task}_{context}" for task in TASKS for context in CONTEXTS)

# The system message of the published ChatML wrapper (LongVA / Qwen2).
SYSTEM_PROMPT = "You are a helpful assistant."
INTRODUCTION = "You will be given a question about a movie."
CONTEXT_SENTENCES = {
  "subtitles": "Try to answer it based on the subtitles from the movie.",
  "none": "Try to answer it based on the movie.",
  "title": "Try to answer it based on the movie title.",  # ours: the leakage protocol
}
MCQ_INSTRUCTION = (
  'Output the final answer in the format "(X)" where X is the correct digit choice. DO NOT OUTPUT with the full '
  "answer text or any other words."
)
OEQ_INSTRUCTION = "Answer it shortly and directly without repeating the question."
MCQ_PATTERN = re.compile(r"\((\b[1-5]\b)\)")

# The published judge (gpt-3.5-turbo-0125, a Video-ChatGPT-style prompt); the fragments are joined as published.
JUDGE_SYSTEM_PROMPT = (
  "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer "
  "pairs. "
  "Your task is to compare the predicted answer with the correct answer and determine if they match meaningfully. "
  "Here's how you can accomplish the task:"
  "------"
  "##INSTRUCTIONS: "
  "- Focus on the meaningful match between the predicted answer and the correct answer.\n"
  "- Consider synonyms or paraphrases as valid matches.\n"
  "- Evaluate the correctness of the prediction compared to the answer."
)
JUDGE_INSTRUCTIONS = (
  "Provide your evaluation only as a yes/no and score where the score is an integer value between 0 and 5, with 5 "
  "indicating the highest meaningful match. "
  "Please generate the response in the form of a Python dictionary string with keys 'pred' and 'score', where value "
  "of 'pred' is  a string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING."
  "DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR EXPLANATION. Only provide the Python dictionary string. "
  "For example, your response should look like this: {'pred': 'yes', 'score': 4.8}."
)

_SUBTITLE_LINE = re.compile(r"\d{2,}:\d{2}:\d{2} - \d{2,}:\d{2}:\d{2} (.*)")


def split_setting(setting: str) -> tuple[str, str]:
  """'mcq_title' → ('mcq', 'title')."""
  task, _, context = setting.partition("_")
  if task not in TASKS or context not in CONTEXTS:
    raise ValueError(f"unknown setting {setting!r}; choose from {SETTINGS}")
  return task, context


def timestamp(seconds: float) -> str:
  """Seconds → 'HH:MM:SS', truncated to whole seconds as published (3725.9 → '01:02:05')."""
  whole = int(seconds)
  return f"{whole // 3600:02}:{whole % 3600 // 60:02}:{whole % 60:02}"


def format_subtitles(subtitles: Sequence[Subtitle]) -> str:
  """One 'HH:MM:SS - HH:MM:SS text' line per subtitle, in the given (start-sorted) order."""
  return "\n".join(f"{timestamp(line.start)} - {timestamp(line.end)} {line.text}" for line in subtitles)


def build_query(question: Question, setting: str, subtitles: Sequence[Subtitle] = ()) -> str:
  """The user message of `setting` for `question` (subtitles: the film's lines, read by the subtitles context)."""
  task, context = split_setting(setting)
  query = INTRODUCTION + CONTEXT_SENTENCES[context]
  if context == "subtitles":
    query += f"\n\nSubtitles: {format_subtitles(subtitles)}"
  elif context == "title":
    query += f"\n\nMovie title: {question.movie_title}"
  query += f"\n\nQuestion: {question.question}\n"
  if task == "mcq":
    choices = "".join(f"({index + 1}) {option}\n" for index, option in enumerate(question.options))
    return query + f"Possible answer choices:\n{choices}{MCQ_INSTRUCTION}"
  return query + OEQ_INSTRUCTION


@dataclasses.dataclass(frozen=True)
class ParsedQuery:
  """What a query built by build_query holds: its context, lines (subtitle texts without their times, or the
  title), the question and, for the MCQ, the options."""

  context: str
  lines: tuple[str, ...]
  question: str
  options: tuple[str, ...] | None


def parse_query(query: str) -> ParsedQuery:
  """The inverse of build_query (for answerers that read the fields rather than the text)."""
  header, _, body = query.rpartition("\n\nQuestion: ")
  context = next(
    (name for name, sentence in CONTEXT_SENTENCES.items() if header.startswith(INTRODUCTION + sentence)), None
  )
  if not header or context is None:
    raise ValueError(f"not an SFD query: {query[:80]!r}…")
  lines = ()
  if context == "subtitles":
    text = header.partition("\n\nSubtitles: ")[2]
    lines = tuple(match.group(1) if (match := _SUBTITLE_LINE.fullmatch(line)) else line for line in text.split("\n"))
  elif context == "title":
    lines = (header.partition("\n\nMovie title: ")[2],)
  if body.endswith("\n" + OEQ_INSTRUCTION):
    return ParsedQuery(context, lines, body.removesuffix("\n" + OEQ_INSTRUCTION), None)
  question, _, choices = body.removesuffix("\n" + MCQ_INSTRUCTION).partition("\nPossible answer choices:\n(1) ")
  options = []
  for index in range(2, NUM_OPTIONS + 1):
    option, _, choices = choices.partition(f"\n({index}) ")
    options.append(option)
  return ParsedQuery(context, lines, question, (*options, choices))


def score_mcq(response: str) -> int | None:
  """The 0-based option of the first '(1)' … '(5)' in response, None without one (scored wrong)."""
  match = MCQ_PATTERN.search(response)
  return int(match.group(1)) - 1 if match else None


def judge_messages(question: str, answer: str, prediction: str) -> tuple[str, str]:
  """(system, user) messages of the published open-ended judge."""
  user = (
    "Please evaluate the following video-based question-answer pair:\n\n"
    f"Question: {question}\n"
    f"Correct Answer: {answer}\n"
    f"Predicted Answer: {prediction}\n\n"
  )
  return JUDGE_SYSTEM_PROMPT, user + JUDGE_INSTRUCTIONS


def parse_judgement(text: str) -> tuple[str, float] | None:
  """A judge's "{'pred': 'yes', 'score': 4}" → ('yes', 4.0); None (unparsed, left out of the accuracy) unless it is a
  Python dict literal with a string 'pred' and a numeric 'score'. Any pred other than exactly 'yes' counts as no."""
  try:
    judgement = ast.literal_eval(text)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
    return None
  if not isinstance(judgement, dict):
    return None
  pred, score = judgement.get("pred"), judgement.get("score")
  if not isinstance(pred, str) or isinstance(score, bool) or not isinstance(score, int | float):
    return None
  return pred, float(score)
