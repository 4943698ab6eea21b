"""SFD question answering (storyjax.qa): the published prompts byte for byte, the MCQ regex and judge parsing, the
release loader's checks, the baseline on the embedded sample (subtitles far above chance, title-only at chance), and
`python -m storyjax.qa` in all six settings with the baseline and with a tiny random causal LM as answerer and judge."""

import json

from absl import flags
import numpy as np
import pytest

from storyjax.errors import ConfigError, DataError
from storyjax.qa import __main__ as qa_main
from storyjax.qa import answerers, judges, prompts, sample
from storyjax.qa.data import Question, Subtitle, load_release
from storyjax.text import causal_lm
from tests.causal_lm_checkpoint import write_tiny_causal_lm

QUESTION = Question(
  question_id="q7",
  video_id="vid",
  question="Who opens the door?",
  options=("Anna", "the dog", "Ben", "nobody", "a stranger"),
  correct_answer=2,
  movie_title="The Door",
)
SUBTITLES = (Subtitle(3.5, 7.25, "Who is there?"), Subtitle(3725.9, 3727.0, " It's me, Ben."))


def run_cli(*argv: str) -> dict:
  """`python -m storyjax.qa ARGV` in this process (its flags on a FlagValues of their own) → the printed summary."""
  flag_values = flags.FlagValues()
  qa_main.define_flags(flag_values)
  flag_values(["storyjax.qa", *argv])
  return qa_main.main(flag_values)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
  return sample.write_sample(tmp_path_factory.mktemp("sfd"))


def test_mcq_query_with_subtitles_is_the_published_text():
  expected = (
    "You will be given a question about a movie.Try to answer it based on the subtitles from the movie.\n"
    "\n"
    "Subtitles: 00:00:03 - 00:00:07 Who is there?\n"
    "01:02:05 - 01:02:07  It's me, Ben.\n"
    "\n"
    "Question: Who opens the door?\n"
    "Possible answer choices:\n"
    "(1) Anna\n"
    "(2) the dog\n"
    "(3) Ben\n"
    "(4) nobody\n"
    "(5) a stranger\n"
    'Output the final answer in the format "(X)" where X is the correct digit choice. DO NOT OUTPUT with the full '
    "answer text or any other words."
  )
  assert prompts.build_query(QUESTION, "mcq_subtitles", SUBTITLES) == expected


def test_open_ended_query_without_context_and_title_query():
  assert prompts.build_query(QUESTION, "oeq_none") == (
    "You will be given a question about a movie.Try to answer it based on the movie.\n\nQuestion: Who opens the door?\n"
    "Answer it shortly and directly without repeating the question."
  )
  assert prompts.build_query(QUESTION, "oeq_title") == (
    "You will be given a question about a movie.Try to answer it based on the movie title.\n\nMovie title: The Door\n\n"
    "Question: Who opens the door?\nAnswer it shortly and directly without repeating the question."
  )
  with pytest.raises(ValueError, match="mcq_frames"):
    prompts.build_query(QUESTION, "mcq_frames")


@pytest.mark.parametrize(
  ("seconds", "expected"),
  [(3725.9, "01:02:05"), (0.0, "00:00:00"), (59.999, "00:00:59"), (86399.5, "23:59:59"), (360000.0, "100:00:00")],
)
def test_timestamps_truncate_to_whole_seconds(seconds, expected):
  assert prompts.timestamp(seconds) == expected


@pytest.mark.parametrize(
  ("response", "expected"),
  [
    ("(3)", 2),
    ("The answer is (2).", 1),
    ("(6)", None),
    ("3", None),
    ("(1) and (2)", 0),
    ("( 4 )", None),
    ("(5)(1)", 4),
    ("", None),
  ],
)
def test_mcq_responses_are_scored_by_the_published_regex(response, expected):
  assert prompts.score_mcq(response) == expected


@pytest.mark.parametrize(
  ("text", "expected"),
  [
    ("{'pred': 'yes', 'score': 4}", ("yes", 4.0)),
    ("  {'pred': 'no', 'score': 1.5}", ("no", 1.5)),
    ("{'pred': 'Yes', 'score': 3}", ("Yes", 3.0)),  # kept; only exactly 'yes' counts as yes
    ("{'pred': 'yes', 'score': '4'}", None),
    ("{'pred': 'yes'}", None),
    ("['yes', 4]", None),
    ("yes, 4", None),
    ("Sure! {'pred': 'yes', 'score': 4}", None),
    ("{'pred': 'yes', 'score': True}", None),
  ],
)
def test_judgements_are_read_as_python_dict_literals(text, expected):
  assert prompts.parse_judgement(text) == expected


def test_judge_messages_are_the_published_text():
  system, user = prompts.judge_messages("Who opens the door?", "Ben", "It is Ben.")
  assert system == (
    "You are an intelligent chatbot designed for evaluating the correctness of generative outputs for question-answer "
    "pairs. Your task is to compare the predicted answer with the correct answer and determine if they match "
    "meaningfully. Here's how you can accomplish the task:------##INSTRUCTIONS: - Focus on the meaningful match "
    "between the predicted answer and the correct answer.\n- Consider synonyms or paraphrases as valid matches.\n"
    "- Evaluate the correctness of the prediction compared to the answer."
  )
  assert user == (
    "Please evaluate the following video-based question-answer pair:\n\nQuestion: Who opens the door?\n"
    "Correct Answer: Ben\nPredicted Answer: It is Ben.\n\nProvide your evaluation only as a yes/no and score where the "
    "score is an integer value between 0 and 5, with 5 indicating the highest meaningful match. Please generate the "
    "response in the form of a Python dictionary string with keys 'pred' and 'score', where value of 'pred' is  a "
    "string of 'yes' or 'no' and value of 'score' is in INTEGER, not STRING.DO NOT PROVIDE ANY OTHER OUTPUT TEXT OR "
    "EXPLANATION. Only provide the Python dictionary string. For example, your response should look like this: "
    "{'pred': 'yes', 'score': 4.8}."
  )


def test_overlap_judge_scores_token_f1():
  judge = judges.OverlapJudge()
  verdicts = judge.judge(
    ["q"] * 4, ["In the old mill", "Ben", "Ben", "On Monday"], ["in old mill.", "Ben and Anna", "", "x"]
  )
  # F1 1; 2/3 (precision 1/3, recall 1 → 0.5: yes, 5·0.5 = 2.5 rounds up); empty; none in common
  assert verdicts == [("yes", 5.0), ("yes", 3.0), ("no", 0.0), ("no", 0.0)]


def write_csv(path, header, rows):
  path.write_text("\n".join([",".join(header), *(",".join(map(str, row)) for row in rows)]) + "\n")


DATA_HEADER, SUBTITLES_HEADER = sample.DATA_HEADER, sample.SUBTITLES_HEADER
GOOD_ROW = ["q1", "v1", "url", "Who?", "Ben", "Anna", "Ben", "Carl", "Dora", "Eve", 1, "Title", "caption", "synopsis"]


def test_loader_dedupes_questions_and_sorts_each_films_subtitles(tmp_path):
  second = ["q2", "v2", *GOOD_ROW[2:10], 4, "Other", "c", "s"]
  write_csv(tmp_path / "data.csv", DATA_HEADER, [GOOD_ROW, second, ["q1", *GOOD_ROW[1:10], 0, *GOOD_ROW[11:]]])
  write_csv(
    tmp_path / "subtitles.csv",
    SUBTITLES_HEADER,
    [
      ["v1", 9.5, 10, "late", 0.1],
      ["v2", 1, 2, "other film", 0.1],
      ["v1", 2.25, 3, "early", 0.2],
      ["v1", 2.25, 4, "tie", 0],
    ],
  )
  release = load_release(tmp_path)
  assert [question.question_id for question in release.questions] == ["q1", "q2"]
  assert release.num_duplicates == 1 and release.questions[0].correct_answer == 1  # the first row wins
  assert release.questions[0].options == ("Anna", "Ben", "Carl", "Dora", "Eve") and release.questions[0].answer == "Ben"
  assert [line.text for line in release.subtitles["v1"]] == ["early", "tie", "late"]
  assert release.subtitles["v1"][0] == Subtitle(2.25, 3.0, "early")
  (tmp_path / "subtitles.csv").unlink()
  assert load_release(tmp_path).subtitles is None


@pytest.mark.parametrize(
  ("file", "header", "bad_row", "message"),
  [
    ("data.csv", DATA_HEADER[:-4] + DATA_HEADER[-3:], None, "data.csv: missing column.*movie_title"),
    ("data.csv", DATA_HEADER, [*GOOD_ROW[:10], 5, *GOOD_ROW[11:]], r"data.csv, row 2 \(line 3\): correct_answer '5'"),
    ("data.csv", DATA_HEADER, [*GOOD_ROW[:10], "B", *GOOD_ROW[11:]], r"data.csv, row 2 \(line 3\): correct_answer 'B'"),
    ("data.csv", DATA_HEADER, ["", *GOOD_ROW[1:]], r"data.csv, row 2 \(line 3\): question_id is empty"),
    ("data.csv", DATA_HEADER, GOOD_ROW[:-2], r"data.csv, row 2 \(line 3\): 14 columns expected, the row has 12"),
    (
      "subtitles.csv",
      SUBTITLES_HEADER,
      ["v1", 1, 2, "hi, there", 0],
      r"subtitles.csv, row 2 \(line 3\): 5 columns .* has 6",
    ),
    ("subtitles.csv", SUBTITLES_HEADER[1:], None, "subtitles.csv: missing column.*video_id"),
    ("subtitles.csv", SUBTITLES_HEADER, ["v1", "0:01", 3, "hi", 0], r"subtitles.csv, row 2 \(line 3\): start '0:01'"),
    ("subtitles.csv", SUBTITLES_HEADER, ["v1", 1, -3, "hi", 0], r"subtitles.csv, row 2 \(line 3\): end '-3'"),
    ("subtitles.csv", SUBTITLES_HEADER, ["v1", 1, "nan", "hi", 0], r"subtitles.csv, row 2 \(line 3\): end 'nan'"),
  ],
)
def test_loader_errors_name_the_file_row_and_problem(tmp_path, file, header, bad_row, message):
  write_csv(tmp_path / "data.csv", DATA_HEADER, [GOOD_ROW])
  good_row = GOOD_ROW if file == "data.csv" else ["v1", 0.5, 1, "first", 0]
  write_csv(tmp_path / file, header, [good_row] + ([bad_row] if bad_row else []))
  with pytest.raises(DataError, match=message):
    load_release(tmp_path)


def test_missing_files_are_data_errors(tmp_path):
  with pytest.raises(DataError, match="not found"):
    load_release(tmp_path / "none")
  with pytest.raises(DataError, match="data.csv not found"):
    load_release(tmp_path)


def test_the_sample_is_in_the_release_format_with_balanced_answers(sample_dir):
  release = load_release(sample_dir)
  assert release.num_duplicates == 1 and len(release.subtitles) == 19
  counts = np.bincount([question.correct_answer for question in release.questions], minlength=5)
  assert counts.max() - counts.min() <= 1
  for question in release.questions:
    assert len(set(question.options)) == 5
    for setting in prompts.SETTINGS:  # the baseline reads back exactly what build_query wrote
      parsed = prompts.parse_query(prompts.build_query(question, setting, release.subtitles.get(question.video_id, ())))
      assert parsed.question == question.question
      assert parsed.options == (question.options if setting.startswith("mcq") else None)
  assert (
    sample.write_sample(sample_dir.parent / "again").joinpath("data.csv").read_text()
    == (sample_dir / "data.csv").read_text()
  )


class RecordingAnswerer:
  def __init__(self, inner):
    self.inner, self.prompts = inner, []

  def answer(self, prompts_: list[str]) -> list[str]:
    self.prompts += prompts_
    return self.inner.answer(prompts_)


def test_the_baseline_answers_from_subtitles_and_learns_nothing_from_titles(sample_dir, tmp_path, capsys):
  summary = run_cli(f"--data={sample_dir}", f"--out={tmp_path}")
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
  release = load_release(sample_dir)
  silent = sum(question.video_id not in release.subtitles for question in release.questions)
  assert list(summary) == list(prompts.SETTINGS) and silent == 5
  for setting, scores in summary.items():
    assert scores["num_questions"] == len(release.questions) - silent and scores["num_skipped"] == silent, setting
    assert scores["num_unparsed"] == 0, setting
    assert ("mean_score" in scores) == setting.startswith("oeq"), setting
  assert summary["mcq_subtitles"]["accuracy"] >= 0.8 and summary["oeq_subtitles"]["accuracy"] >= 0.6
  assert summary["mcq_title"]["accuracy"] <= 0.3 and summary["mcq_none"]["accuracy"] <= 0.3
  assert summary["oeq_title"]["accuracy"] == summary["oeq_none"]["accuracy"] == 0.0

  records = json.loads((tmp_path / "sfd_mcq_subtitles.json").read_text())
  first = release.questions[0]
  assert records[first.question_id] == {
    "question_id": first.question_id,
    "video_id": first.video_id,
    "question": first.question,
    "answer": first.answer,
    **{f"option_{index}": option for index, option in enumerate(first.options)},
    "correct_answer": first.correct_answer,
    "prediction": records[first.question_id]["prediction"],
    "pred": prompts.score_mcq(records[first.question_id]["prediction"]),
    "acc": int(prompts.score_mcq(records[first.question_id]["prediction"]) == first.correct_answer),
  }
  assert set(json.loads((tmp_path / "sfd_oeq_title.json").read_text())[first.question_id]) >= {"pred", "score"}

  # A rerun over the same OUT answers only the questions missing there, and reports the same.
  del records[first.question_id]
  (tmp_path / "sfd_mcq_subtitles.json").write_text(json.dumps(records))
  recording = RecordingAnswerer(answerers.SubtitleSimilarityAnswerer())
  for setting in ("mcq_subtitles", "oeq_title"):
    again = qa_main.evaluate_setting(
      setting, release, list(release.questions), recording, judges.OverlapJudge(), tmp_path / f"sfd_{setting}.json"
    )
    assert again == summary[setting]
  assert recording.prompts == [prompts.build_query(first, "mcq_subtitles", release.subtitles[first.video_id])]


def test_subsampling_is_seeded_and_flags_are_checked(sample_dir):
  release = load_release(sample_dir)
  first = qa_main.select_questions(release, 10, seed=42)
  assert first == qa_main.select_questions(release, 10, seed=42) != qa_main.select_questions(release, 10, seed=0)
  assert len({question.question_id for question in first}) == 10
  summary = run_cli(f"--data={sample_dir}", "--num_questions=10", "--settings=mcq_none")
  assert summary["mcq_none"]["num_questions"] + summary["mcq_none"]["num_skipped"] == 10
  for argv, message in [
    (["--num_questions=1000"], "--num_questions=1000"),
    (["--settings=mcq_frames"], "mcq_frames"),
    (["--model=/m"], "--model goes with --answerer=causal_lm"),
    (["--temperature=0.2"], "--temperature goes with --answerer=causal_lm"),
    (["--answerer=causal_lm"], "needs --model=PATH"),
    (["--judge=causal_lm", "--settings=oeq_none"], "needs --judge_model=PATH"),
    ([f"--write_sample={sample_dir}"], "drop the evaluation flags --data"),
  ]:
    with pytest.raises(ConfigError, match=message):
      run_cli(f"--data={sample_dir}", *argv)


def test_subtitle_settings_need_subtitles(sample_dir, tmp_path):
  (tmp_path / "data.csv").write_text((sample_dir / "data.csv").read_text())
  with pytest.raises(DataError, match="subtitles.csv"):
    run_cli(f"--data={tmp_path}", "--settings=mcq_none,mcq_subtitles")
  summary = run_cli(f"--data={tmp_path}", "--settings=oeq_title")
  assert summary["oeq_title"]["num_skipped"] == 0 and summary["oeq_title"]["num_questions"] == 89


@pytest.mark.usefixtures("fast_compile")
def test_a_causal_lm_answers_and_judges_in_every_setting(sample_dir, tmp_path, monkeypatch):
  """A tiny random model as answerer and judge: whatever it says, each question is answered once per setting from the
  byte-exact query and the published system message, scored or judged (or counted unparsed), and recorded."""
  models = [
    write_tiny_causal_lm(tmp_path / name, seed=seed, max_position_embeddings=1024)
    for name, seed in [("lm", 0), ("judge", 1)]
  ]
  calls = []
  generate = causal_lm.CausalLM.generate

  def recording_generate(self, prompts_, **kwargs):
    calls.append((list(prompts_), kwargs))
    return generate(self, prompts_, **kwargs)

  monkeypatch.setattr(causal_lm.CausalLM, "generate", recording_generate)
  out = tmp_path / "out"
  summary = run_cli(
    f"--data={sample_dir}",
    "--answerer=causal_lm",
    f"--model={models[0]}",
    "--judge=causal_lm",
    f"--judge_model={models[1]}",
    "--num_questions=4",
    "--max_new_tokens=6",
    "--judge_max_new_tokens=16",
    f"--out={out}",
  )
  release = load_release(sample_dir)
  questions = [q for q in qa_main.select_questions(release, 4, seed=42) if q.video_id in release.subtitles]
  answer_calls = [(prompts_, kwargs) for prompts_, kwargs in calls if kwargs["system"] == prompts.SYSTEM_PROMPT]
  judge_calls = [(prompts_, kwargs) for prompts_, kwargs in calls if kwargs["system"] == prompts.JUDGE_SYSTEM_PROMPT]
  assert len(answer_calls) == 6 and len(judge_calls) == 3 and len(calls) == 9
  assert [kwargs["seed"] for _, kwargs in answer_calls] == [42 + index for index in range(6)]
  assert {(kwargs["temperature"], kwargs["max_new_tokens"]) for _, kwargs in answer_calls} == {(0.5, 6)}
  assert {(kwargs["temperature"], kwargs["max_new_tokens"]) for _, kwargs in judge_calls} == {(0.0, 16)}
  judge_users = iter(prompts_ for prompts_, _ in judge_calls)
  for (received, _), setting in zip(answer_calls, prompts.SETTINGS):
    scores = summary[setting]
    assert scores["num_questions"] == len(questions) and scores["num_skipped"] == 4 - len(questions)
    assert received == [prompts.build_query(q, setting, release.subtitles[q.video_id]) for q in questions], setting
    records = json.loads((out / f"sfd_{setting}.json").read_text())
    assert list(records) == [q.question_id for q in questions]
    predictions = [records[q.question_id]["prediction"] for q in questions]
    if setting.startswith("mcq"):
      assert [records[q.question_id]["pred"] for q in questions] == [prompts.score_mcq(p) for p in predictions]
      assert scores["num_unparsed"] == sum(prompts.score_mcq(p) is None for p in predictions)
      assert scores["accuracy"] == np.mean([records[q.question_id]["acc"] for q in questions])
    else:
      assert next(judge_users) == [
        prompts.judge_messages(q.question, q.answer, p)[1] for q, p in zip(questions, predictions)
      ]
      judged = [records[q.question_id] for q in questions if records[q.question_id]["pred"] is not None]
      assert scores["num_unparsed"] == len(questions) - len(judged)
      assert scores["accuracy"] == (np.mean([r["pred"] == "yes" for r in judged]) if judged else None)
