"""The SFD question-answering evaluation (thesis §2.2): `python -m storyjax.qa --data=DIR`.

  python -m storyjax.qa --write_sample=DIR                 the embedded sample set (sample.py), then exit
  python -m storyjax.qa --data=DIR [--settings=mcq_subtitles,oeq_title] [--answerer=causal_lm --model=PATH]
      [--judge=causal_lm --judge_model=PATH] [--num_questions=N] [--out=DIR]

DIR holds the release's data.csv and, for the subtitle settings, subtitles.csv. As published, questions are
de-duplicated on question_id, `--num_questions` draws a seeded subsample (pandas' df.sample(n, random_state=seed)
order), and a question whose film has no subtitle rows is skipped in every setting (counted in num_skipped); without a
subtitles.csv no question is skipped. MCQ responses are scored by the published regex (no "(X)" = wrong, counted in
num_unparsed); OEQ answers by the judge, accuracy = yes / (yes + no) over the judgements that could be read (the rest
counted in num_unparsed; null when none could, where the published 1e-5 in the denominators gave 0), and
mean_score over the same judgements. Prints one JSON object, setting → scores. With --out, each setting's
per-question records go to OUT/sfd_<setting>.json (keyed by question_id, fields as in the published results files), and
a rerun skips the questions already there.
"""

import json
import pathlib

from absl import flags
import numpy as np

from storyjax import program
from storyjax.errors import ConfigError, DataError
from storyjax.qa import answerers, judges, prompts, sample
from storyjax.qa.data import OPTION_COLUMNS, Question, Release, load_release

ANSWERERS = ("baseline", "causal_lm")
JUDGES = ("overlap", "causal_lm")
CHUNK = 8  # questions answered (and saved) together


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The CLI's flags (defined by `python -m storyjax.qa` only; tests define them on their own FlagValues)."""
  define = {"flag_values": flag_values}
  flags.DEFINE_string("data", None, "SFD directory: data.csv and (for the subtitle settings) subtitles.csv.", **define)
  flags.DEFINE_list("settings", list(prompts.SETTINGS), f"Some of {list(prompts.SETTINGS)}.", **define)
  flags.DEFINE_enum("answerer", "baseline", ANSWERERS, "Subtitle-similarity baseline or a local causal LM.", **define)
  flags.DEFINE_string("model", None, "With --answerer=causal_lm: the Hugging Face model directory.", **define)
  flags.DEFINE_enum("judge", "overlap", JUDGES, "Open-ended judge: token-F1 overlap or a local causal LM.", **define)
  flags.DEFINE_string("judge_model", None, "With --judge=causal_lm: the Hugging Face model directory.", **define)
  flags.DEFINE_integer(
    "judge_max_new_tokens", 64, "With --judge=causal_lm: tokens per judgement at most.", lower_bound=1, **define
  )
  flags.DEFINE_float(
    "temperature", 0.5, "With --answerer=causal_lm: sampling temperature (published).", lower_bound=0.0, **define
  )
  flags.DEFINE_integer(
    "max_new_tokens", 1024, "With --answerer=causal_lm: tokens per answer (published).", lower_bound=1, **define
  )
  flags.DEFINE_integer("seed", 42, "Subsample and sampling seed (published).", **define)
  flags.DEFINE_integer(
    "num_questions", -1, "A seeded subsample of this many questions; -1: all.", lower_bound=-1, **define
  )
  flags.DEFINE_string("out", None, "Directory of per-setting, per-question JSON results (resumable).", **define)
  flags.DEFINE_string(
    "write_sample", None, "Write the embedded sample set (data.csv, subtitles.csv) here; exit.", **define
  )


def select_questions(release: Release, num_questions: int, seed: int) -> list[Question]:
  """All questions, or the subsample pandas' df.sample(n=num_questions, random_state=seed) takes, in its order."""
  questions = list(release.questions)
  if num_questions == -1:
    return questions
  if not 0 < num_questions <= len(questions):
    raise ConfigError(f"--num_questions={num_questions}: give -1 (all) or 1…{len(questions)} (the questions there are)")
  return [questions[index] for index in np.random.RandomState(seed).choice(len(questions), num_questions, False)]


def record(question: Question, prediction: str) -> dict:
  """The published per-question result fields."""
  return {
    "question_id": question.question_id,
    "video_id": question.video_id,
    "question": question.question,
    "answer": question.answer,
    **dict(zip(OPTION_COLUMNS, question.options)),
    "correct_answer": question.correct_answer,
    "prediction": prediction,
  }


def evaluate_setting(
  setting: str,
  release: Release,
  questions: list[Question],
  answerer: answerers.Answerer,
  judge: judges.Judge | None,
  out_path: pathlib.Path | None = None,
) -> dict:
  """Answers and scores `questions` in one setting → {accuracy, num_questions, num_skipped, num_unparsed[, mean_score]}.

  Records already in out_path are kept, not redone; new ones are added there after every chunk.
  """
  task, context = prompts.split_setting(setting)
  if context == "subtitles" and release.subtitles is None:
    raise DataError(f"setting {setting} needs subtitles.csv beside data.csv; choose --settings without *_subtitles")
  subtitles = release.subtitles
  kept = [question for question in questions if subtitles is None or question.video_id in subtitles]
  records = {}
  if out_path is not None and out_path.exists():
    try:
      records = json.loads(out_path.read_text())
    except json.JSONDecodeError as error:
      raise DataError(f"{out_path} is not a results file ({error}); move it away to start the setting afresh") from None
  todo = [question for question in kept if question.question_id not in records]
  for begin in range(0, len(todo), CHUNK):
    chunk = todo[begin : begin + CHUNK]
    queries = [prompts.build_query(q, setting, subtitles[q.video_id] if subtitles else ()) for q in chunk]
    responses = answerer.answer(queries)
    if len(responses) != len(queries):
      raise ValueError(f"the answerer gave {len(responses)} responses to {len(queries)} prompts")
    if task == "mcq":
      for question, response in zip(chunk, responses):
        pred = prompts.score_mcq(response)
        records[question.question_id] = {
          **record(question, response),
          "pred": pred,
          "acc": int(pred == question.correct_answer),
        }
    else:
      judgements = judge.judge([q.question for q in chunk], [q.answer for q in chunk], responses)
      for question, response, judgement in zip(chunk, responses, judgements, strict=True):
        pred, score = judgement or (None, None)
        records[question.question_id] = {**record(question, response), "pred": pred, "score": score}
    if out_path is not None:
      out_path.parent.mkdir(parents=True, exist_ok=True)
      out_path.write_text(json.dumps(records, indent=4))
  results = [records[question.question_id] for question in kept]
  counts = {"num_questions": len(results), "num_skipped": len(questions) - len(kept)}
  if task == "mcq":
    accuracy = sum(result["acc"] for result in results) / len(results) if results else None
    return {"accuracy": accuracy, **counts, "num_unparsed": sum(result["pred"] is None for result in results)}
  judged = [result for result in results if result["pred"] is not None]
  return {
    "accuracy": sum(result["pred"] == "yes" for result in judged) / len(judged) if judged else None,
    "mean_score": sum(result["score"] for result in judged) / len(judged) if judged else None,
    **counts,
    "num_unparsed": len(results) - len(judged),
  }


# flag → (the flag, value) it goes with
_FLAG_NEEDS = {
  "model": ("answerer", "causal_lm"),
  "temperature": ("answerer", "causal_lm"),
  "max_new_tokens": ("answerer", "causal_lm"),
  "judge_model": ("judge", "causal_lm"),
  "judge_max_new_tokens": ("judge", "causal_lm"),
}
_EVALUATION_FLAGS = ("data", "settings", "answerer", "judge", "seed", "num_questions", "out", *_FLAG_NEEDS)


def _check_flags(args: flags.FlagValues) -> list[str]:
  """The settings asked for, after checking that every flag given is one the run reads."""
  if args.write_sample:
    given = [f"--{name}" for name in _EVALUATION_FLAGS if args[name].present]
    if given:
      raise ConfigError(
        f"--write_sample=DIR writes the sample set and exits; drop the evaluation flags {', '.join(given)}"
      )
    return []
  if not args.data:
    raise ConfigError("give --data=DIR, a directory with the SFD data.csv (and subtitles.csv), or --write_sample=DIR")
  settings = [setting.strip() for setting in args.settings]
  unknown = sorted(set(settings) - set(prompts.SETTINGS))
  if unknown or not settings:
    raise ConfigError(f"--settings {unknown or '(empty)'}: choose from {','.join(prompts.SETTINGS)}")
  misplaced = [
    f"--{name} goes with --{flag}={value}"
    for name, (flag, value) in _FLAG_NEEDS.items()
    if args[name].present and args[flag].value != value
  ]
  if misplaced:
    raise ConfigError("; ".join(misplaced))
  for flag, path in (("answerer", "model"), ("judge", "judge_model")):
    if args[flag].value == "causal_lm" and not args[path].value:
      raise ConfigError(f"--{flag}=causal_lm needs --{path}=PATH, a local Hugging Face model directory")
  return settings


def main(args: flags.FlagValues = flags.FLAGS) -> dict:
  """Runs the evaluation the flags describe; prints and returns its JSON summary."""
  settings = _check_flags(args)
  if args.write_sample:
    directory = sample.write_sample(args.write_sample)
    print(json.dumps({"wrote": str(directory)}))
    return {}
  release = load_release(pathlib.Path(args.data))
  questions = select_questions(release, args.num_questions, args.seed)
  if args.answerer == "causal_lm":
    answerer = answerers.CausalLMAnswerer(
      args.model, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
  else:
    answerer = answerers.SubtitleSimilarityAnswerer()
  judge = None
  if any(prompts.split_setting(setting)[0] == "oeq" for setting in settings):
    if args.judge == "causal_lm":
      judge = judges.CausalLMJudge(args.judge_model, max_new_tokens=args.judge_max_new_tokens)
    else:
      judge = judges.OverlapJudge()
  out = pathlib.Path(args.out) if args.out else None
  summary = {
    setting: evaluate_setting(
      setting, release, questions, answerer, judge, out / f"sfd_{setting}.json" if out else None
    )
    for setting in settings
  }
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  define_flags()
  program.run_program(main)
