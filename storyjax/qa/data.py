"""The SFD release (Short Film Dataset, thesis §2.2): data.csv's questions and subtitles.csv's WhisperX lines.

data.csv (Hugging Face rghermi/sfd) has one row per question: question_id, video_id, video_url, question, answer,
option_0 … option_4, correct_answer (0-based), movie_title, movie_caption, movie_synopsis. The release repeats some
rows; as in the published harness, the first row of each question_id is kept. subtitles.csv (data_prep of
ridouaneg/ShortFilmDataset) has one row per line: video_id, start, end (seconds), text, no_speech_prob. Only the
columns the evaluation reads are required.
"""

import csv
import dataclasses
import math
import pathlib

from storyjax.errors import DataError

DATA_FILE = "data.csv"
SUBTITLES_FILE = "subtitles.csv"
NUM_OPTIONS = 5
OPTION_COLUMNS = tuple(f"option_{index}" for index in range(NUM_OPTIONS))
DATA_COLUMNS = ("question_id", "video_id", "question", *OPTION_COLUMNS, "correct_answer", "movie_title")
SUBTITLE_COLUMNS = ("video_id", "start", "end", "text")


@dataclasses.dataclass(frozen=True)
class Question:
  """One SFD question; `options` are option_0 … option_4 and `correct_answer` indexes them."""

  question_id: str
  video_id: str
  question: str
  options: tuple[str, ...]
  correct_answer: int
  movie_title: str

  @property
  def answer(self) -> str:
    """The reference answer of the open-ended task: the correct option's text (as published)."""
    return self.options[self.correct_answer]


@dataclasses.dataclass(frozen=True)
class Subtitle:
  """One subtitle line; start and end in seconds, text as in the file (not stripped)."""

  start: float
  end: float
  text: str


@dataclasses.dataclass(frozen=True)
class Release:
  """questions: de-duplicated on question_id, in file order. subtitles: video_id → its lines sorted by start (ties in
  file order), or None without a subtitles.csv. num_duplicates: the data.csv rows dropped as repeats."""

  questions: tuple[Question, ...]
  subtitles: dict[str, tuple[Subtitle, ...]] | None
  num_duplicates: int


def _rows(path: pathlib.Path, required: tuple[str, ...]):
  """Yields (where, dict) for each row of the CSV at `path` after checking its header; where = "PATH, row N (line L)",
  N counting the rows after the header from 1, L the file's line where the row ends."""
  if not path.is_file():
    raise DataError(f"{path} not found")
  with path.open(newline="", encoding="utf-8-sig") as file:
    reader = csv.DictReader(file)
    missing = [column for column in required if column not in (reader.fieldnames or ())]
    if missing:
      raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {reader.fieldnames})")
    for number, row in enumerate(reader, start=1):
      where = f"{path}, row {number} (line {reader.line_num})"
      if None in row or None in row.values():
        fields = sum(value is not None for key, value in row.items() if key is not None) + len(row.get(None, ()))
        raise DataError(f"{where}: {len(reader.fieldnames)} columns expected, the row has {fields}")
      yield where, row


def _identifier(where: str, row: dict, column: str) -> str:
  if not row[column].strip():
    raise DataError(f"{where}: {column} is empty")
  return row[column]


def _seconds(where: str, row: dict, column: str) -> float:
  try:
    seconds = float(row[column])
  except ValueError:
    raise DataError(f"{where}: {column} {row[column]!r} is not a number of seconds") from None
  if not math.isfinite(seconds) or seconds < 0:
    raise DataError(f"{where}: {column} {row[column]!r} is not a finite, non-negative number of seconds")
  return seconds


def load_questions(path: pathlib.Path) -> tuple[tuple[Question, ...], int]:
  """data.csv → (questions de-duplicated on question_id keeping the first row, number of rows dropped)."""
  path = pathlib.Path(path)
  questions, seen, num_duplicates = [], set(), 0
  for where, row in _rows(path, DATA_COLUMNS):
    question_id = _identifier(where, row, "question_id")
    try:
      correct_answer = int(row["correct_answer"])
    except ValueError:
      correct_answer = -1
    if not 0 <= correct_answer < NUM_OPTIONS:
      raise DataError(f"{where}: correct_answer {row['correct_answer']!r} is not an option index 0…{NUM_OPTIONS - 1}")
    if question_id in seen:
      num_duplicates += 1
      continue
    seen.add(question_id)
    questions.append(
      Question(
        question_id=question_id,
        video_id=_identifier(where, row, "video_id"),
        question=row["question"],
        options=tuple(row[column] for column in OPTION_COLUMNS),
        correct_answer=correct_answer,
        movie_title=row["movie_title"],
      )
    )
  return tuple(questions), num_duplicates


def load_subtitles(path: pathlib.Path) -> dict[str, tuple[Subtitle, ...]]:
  """subtitles.csv → video_id → its lines sorted by start; ties keep file order (the published pandas sort leaves
  them unspecified)."""
  path = pathlib.Path(path)
  lines = {}
  for where, row in _rows(path, SUBTITLE_COLUMNS):
    video_id = _identifier(where, row, "video_id")
    start, end = _seconds(where, row, "start"), _seconds(where, row, "end")
    lines.setdefault(video_id, []).append(Subtitle(start, end, row["text"]))
  return {video_id: tuple(sorted(rows, key=lambda line: line.start)) for video_id, rows in lines.items()}


def load_release(directory: pathlib.Path) -> Release:
  """DIR/data.csv and, when there, DIR/subtitles.csv."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise DataError(f"SFD data directory {directory} not found (it holds {DATA_FILE} and {SUBTITLES_FILE})")
  questions, num_duplicates = load_questions(directory / DATA_FILE)
  subtitles_path = directory / SUBTITLES_FILE
  subtitles = load_subtitles(subtitles_path) if subtitles_path.exists() else None
  return Release(questions, subtitles, num_duplicates)
