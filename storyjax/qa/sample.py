"""An embedded procedural SFD sample in the release format (data.csv, subtitles.csv) with known answers.

Each film has a generated title, a few characters and 4–5 questions, each about one fact one subtitle line states
(where someone kept something, whom they waited for, when they leave for a city, what they carried, where they were
born). The 5 options are of the fact's type; the other subtitle lines name some of the distractors in passing, deny
some ("… not in the bakery"), or are small talk. The correct index is balanced over the questions. Titles share no
word with any option, so the title alone tells nothing (the leakage setting stays at chance), while the subtitles
answer every question. As in the release, one film (the last) has no speech, hence no subtitle rows, and one
question row (the first) is repeated at the end of data.csv.
"""

import csv
import pathlib

import numpy as np

from storyjax.qa.data import DATA_FILE, NUM_OPTIONS, SUBTITLES_FILE

PEOPLE = (
  "Maria",
  "Tomas",
  "Ines",
  "Viktor",
  "Amara",
  "Jonas",
  "Leila",
  "Oskar",
  "Nadia",
  "Felix",
  "Rosa",
  "Anton",
  "Mira",
  "Bruno",
  "Elena",
  "Hugo",
  "Sara",
  "Ivan",
  "Clara",
  "Pavel",
  "Lucia",
  "Emil",
  "Dora",
  "Karim",
  "Yara",
  "Milo",
  "Greta",
  "Omar",
  "Alma",
  "Tariq",
)
PLACES = (
  "lighthouse",
  "bakery",
  "train station",
  "greenhouse",
  "boathouse",
  "chapel",
  "library",
  "harbour",
  "attic",
  "cellar",
  "garage",
  "museum",
  "cinema",
  "laundromat",
  "pharmacy",
  "barn",
  "shed",
  "motel",
  "old mill",
  "bus depot",
)
OBJECTS = ("letter", "key", "ring", "map", "diary", "passport", "photograph", "watch", "notebook", "medal")
ITEMS = (
  "violin",
  "umbrella",
  "suitcase",
  "shovel",
  "birdcage",
  "lantern",
  "bouquet",
  "typewriter",
  "telescope",
  "kite",
  "trumpet",
)
CITIES = ("Lisbon", "Oslo", "Dakar", "Lima", "Seoul", "Tunis", "Quebec", "Bergen", "Porto", "Cairo", "Hanoi", "Kyoto")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TITLE_ADJECTIVES = ("Silent", "Paper", "Crimson", "Hollow", "Quiet", "Broken", "Golden", "Distant", "Velvet", "Frozen")
TITLE_NOUNS = ("Tide", "Orchard", "Season", "Promise", "Echo", "Horizon", "Lullaby", "Compass", "Harvest", "Mirror")
SMALL_TALK = (
  "Come on, we are late.",
  "I cannot believe it.",
  "Are you sure about this?",
  "Listen to me for once.",
  "Not now, please.",
  "It is getting cold outside.",
  "Do you want some tea?",
  "Everything will be fine.",
)
FACTS = ("kept", "waited", "leaving", "carried", "born")
DATA_HEADER = (
  "question_id",
  "video_id",
  "video_url",
  "question",
  "answer",
  *(f"option_{index}" for index in range(NUM_OPTIONS)),
  "correct_answer",
  "movie_title",
  "movie_caption",
  "movie_synopsis",
)
SUBTITLES_HEADER = ("video_id", "start", "end", "text", "no_speech_prob")
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _pick(rng: np.random.Generator, pool, count: int, exclude=()) -> list[str]:
  candidates = [item for item in pool if item not in exclude]
  return [candidates[index] for index in rng.choice(len(candidates), count, replace=False)]


def _a(noun: str) -> str:
  return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _fact(rng: np.random.Generator, kind: str, cast: list[str]) -> dict:
  """One fact about cast[0]: question, options (the answer first, then 4 distractors of its type) and its subtitle
  lines: the fact (in the question's words, or 1 time in 4 paraphrased) and 1–2 lines naming distractors in passing
  or denying one."""
  person = cast[0]
  if kind == "kept":
    thing, (answer, *others) = _pick(rng, OBJECTS, 1)[0], _pick(rng, PLACES, NUM_OPTIONS)
    question, options = f"Where was {person} keeping the {thing}?", [f"In the {place}" for place in (answer, *others)]
    facts = (f"{person} was keeping the {thing} in the {answer}.", f"The {thing}? {person} hid it in the {answer}.")
    mentions = (f"Nobody goes to the {others[0]} anymore.", f"{person} said the {thing} was not in the {others[1]}.")
  elif kind == "waited":
    named = [name for name in cast[1:] if rng.random() < 0.7]
    answer, *others = (named + _pick(rng, PEOPLE, NUM_OPTIONS, exclude=[person, *named]))[:NUM_OPTIONS]
    question, options = f"Who was {person} waiting for?", [answer, *others]
    facts = (f"{person} was waiting for {answer}.", f"{person} stood by the door until {answer} came.")
    mentions = (f"Have you seen {others[0]} today?", f"{others[1]} called again this morning.")
  elif kind == "leaving":
    city, (answer, *others) = _pick(rng, CITIES, 1)[0], _pick(rng, DAYS, NUM_OPTIONS)
    question, options = f"When is {person} leaving for {city}?", [f"On {day}" for day in (answer, *others)]
    facts = (f"{person} is leaving for {city} on {answer}.", f"{person} takes the {answer} train to {city}.")
    mentions = (f"The market is closed on {others[0]}.", f"{person} is not leaving on {others[1]}, that is sure.")
  elif kind == "carried":
    answer, *others = _pick(rng, ITEMS, NUM_OPTIONS)
    question, options = f"What was {person} carrying?", [_a(item).capitalize() for item in (answer, *others)]
    facts = (f"{person} was carrying {_a(answer)}.", f"{person} had {_a(answer)} under one arm.")
    mentions = (f"Whose {others[0]} is this?", f"I used to own {_a(others[1])}.")
  else:
    answer, *others = _pick(rng, CITIES, NUM_OPTIONS)
    question, options = f"Where was {person} born?", [f"In {city}" for city in (answer, *others)]
    facts = (f"{person} was born in {answer}.", f"{person} grew up in {answer}, the family never moved.")
    mentions = (f"I have never been to {others[0]}.", f"They say {others[1]} is beautiful in spring.")
  keep = rng.random(len(mentions)) < 0.7
  keep[rng.integers(len(mentions))] = True
  lines = [facts[int(rng.random() < 0.25)], *(line for line, kept in zip(mentions, keep) if kept)]
  return {"question": question, "options": options, "lines": lines}


def _times(rng: np.random.Generator, count: int) -> list[tuple[float, float]]:
  """`count` (start, end) seconds, sorted, non-overlapping, within a 5–25 minute film."""
  duration = float(rng.uniform(300, 1500))
  starts = np.sort(rng.uniform(5, duration, size=count))
  gaps = np.diff(np.append(starts, duration + 4))
  return [(round(float(s), 3), round(float(s + min(g - 0.1, rng.uniform(1, 4))), 3)) for s, g in zip(starts, gaps)]


def write_sample(directory: str | pathlib.Path, num_films: int = 20, seed: int = 0) -> pathlib.Path:
  """Writes DIR/data.csv and DIR/subtitles.csv of `num_films` films (≥ 2); returns DIR."""
  if num_films < 2:
    raise ValueError(f"num_films must be at least 2 (one of them silent), got {num_films}")
  rng = np.random.default_rng(seed)
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  titles = [f"The {TITLE_ADJECTIVES[i // 10 % 10]} {TITLE_NOUNS[i % 10]}" for i in rng.permutation(100)]
  films = []
  for film in range(num_films):
    video_id = "".join(rng.choice(list(_ID_ALPHABET), 11))
    cast = _pick(rng, PEOPLE, int(rng.integers(3, 5)))
    kinds = _pick(rng, FACTS, int(rng.integers(4, 6)))
    facts = [_fact(rng, kind, list(np.roll(cast, -index))) for index, kind in enumerate(kinds)]
    lines = [line for fact in facts for line in fact["lines"]] + _pick(rng, SMALL_TALK, 3)
    silent = film == num_films - 1
    films.append((video_id, titles[film % len(titles)], cast, facts, [] if silent else rng.permutation(lines)))
  num_questions = sum(len(facts) for _, _, _, facts, _ in films)
  correct = iter(rng.permutation(np.arange(num_questions) % NUM_OPTIONS))
  data_rows, subtitle_rows = [], []
  for video_id, title, cast, facts, lines in films:
    for number, fact in enumerate(facts):
      index = int(next(correct))
      answer, *others = fact["options"]
      options = [*others[:index], answer, *others[index:]]
      caption = f"{cast[0]} and {cast[1]} live through one long week."
      data_rows.append(
        [
          f"{video_id}_{number}",
          video_id,
          f"https://www.youtube.com/watch?v={video_id}",
          fact["question"],
          answer,
          *options,
          index,
          title,
          caption,
          f"{caption} Old secrets come back, and nobody leaves unchanged.",
        ]
      )
    for (start, end), text in zip(_times(rng, len(lines)), lines):
      subtitle_rows.append([video_id, start, end, text, round(float(rng.uniform(0, 0.3)), 4)])
  data_rows.append(data_rows[0])
  for name, header, rows in ((DATA_FILE, DATA_HEADER, data_rows), (SUBTITLES_FILE, SUBTITLES_HEADER, subtitle_rows)):
    with (directory / name).open("w", newline="", encoding="utf-8") as file:
      writer = csv.writer(file)
      writer.writerow(header)
      writer.writerows(rows)
  return directory
