"""MEDIMP's clinical prompts: a kidney-transplant patient's variables turned into a sentence per variable.

Each template line holds three templates, for the donor's age ({age}), the recipient's GFR at an examination
({gfr}, {date}) and the variability of creatinine ({adj}). Lines 1–3 of TEMPLATES are MEDIMP's published ones;
lines 4–10 are ours, written in the same style (the published template file is not available offline).

The words follow MEDIMP's mapping, with one fix: the authors' code tests the exam names 'J15' / 'J30' (French
"jour") and so writes "False" for D15 / D30; date_word gives the intended "two weeks" / "first month".
"""

from collections.abc import Sequence
import math
import re
import string

import numpy as np

from storyjax.errors import ConfigError, DataError

TemplateLine = tuple[str, str, str]

SLOTS = (("age",), ("gfr", "date"), ("adj",))  # the slots of a line's three templates, in order
DONOR_AGE_THRESHOLD = 65  # years
AGE_WORDS = ("low", "high")  # below DONOR_AGE_THRESHOLD, at or above it
GFR_BANDS = ((15, "extremely low"), (30, "very low"), (45, "low"), (60, "medium"))  # upper bounds, mL/min/1.73 m²
GFR_ABOVE_BANDS = "high"
EXAM_WORDS = {"D15": "two weeks", "D30": "first month", "M3": "third month", "M12": "first year"}
CREATININE_STD_THRESHOLD = 50.0  # µmol/L: a larger standard deviation reads as unstable
UNSTABLE_ADJECTIVES = ("unstable", "fluctuating", "variable")
STABLE_ADJECTIVES = ("stable", "steady", "consistent")


def _fields(template: str) -> list[str]:
  """The replacement fields of a str.format template, in order; ValueError on unbalanced braces."""
  return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def parse_templates(lines: Sequence[str]) -> tuple[TemplateLine, ...]:
  """Template lines "age template ; gfr template ; creatinine template" → (N,) tuples of three stripped templates.

  The templates hold exactly their slots, once each: {age}; {gfr} and {date}; {adj}.
  """
  if isinstance(lines, str) or not lines:
    raise ConfigError(f"parse_templates takes a non-empty list of template lines, got {lines!r}")
  parsed = []
  for number, line in enumerate(lines, start=1):
    parts = tuple(part.strip() for part in line.split(";"))
    if len(parts) != 3:
      raise ConfigError(
        f"template line {number} has {len(parts)} ';'-separated parts, not 3 (age ; gfr ; creatinine): {line!r}"
      )
    for part, slots in zip(parts, SLOTS):
      try:
        fields = _fields(part)
      except ValueError as error:
        raise ConfigError(f"template line {number}: {part!r} is not a valid template ({error}): {line!r}") from None
      if sorted(fields) != sorted(slots):
        expected = " and ".join("{" + slot + "}" for slot in slots)
        raise ConfigError(
          f"template line {number}: {part!r} must hold {expected} once each and no other slot, found "
          f"{['{' + field + '}' for field in fields]}: {line!r}"
        )
    parsed.append(parts)
  return tuple(parsed)


TEMPLATES: tuple[TemplateLine, ...] = parse_templates(
  (
    # 1–3: MEDIMP's published templates.
    "The kidney donor was {age} years of age. ; The patient's GFR was found to be {gfr} at the {date} check-up. ; "
    "Creatinine levels displayed {adj} fluctuations.",
    "At the time of transplant, the age of the kidney donor was {age}. ; The patient's glomerular filtration rate was "
    "{gfr} at the {date} follow-up. ; Creatinine levels varied {adj}.",
    "The individual who provided the kidney for transplant was {age} years old. ; The GFR of the recipient was "
    "determined to be {gfr} during the {date} examination. ; There were {adj} changes in creatinine levels.",
    # 4–10: ours.
    "The donor of the transplanted kidney was of {age} age. ; At the {date} visit, the recipient's GFR was {gfr}. ; "
    "The creatinine measurements were {adj}.",
    "The age of the kidney donor was considered {age}. ; A {gfr} GFR was measured at the {date} assessment. ; "
    "Serum creatinine remained {adj} over time.",
    "The kidney came from a donor whose age was {age}. ; The {date} check-up showed a {gfr} glomerular filtration "
    "rate. ; The patient's creatinine values were {adj}.",
    "Donor age at transplantation was {age}. ; Kidney function at the {date} follow-up was {gfr}, as measured by "
    "GFR. ; Creatinine showed {adj} behavior across visits.",
    "The graft was donated by a person of {age} age. ; The recipient's glomerular filtration rate at the {date} "
    "control was {gfr}. ; The evolution of creatinine was {adj}.",
    "The donor's age was {age} at the time of donation. ; During the {date} evaluation, the GFR was {gfr}. ; "
    "Creatinine levels were {adj} over the follow-up.",
    "The renal graft came from a donor of {age} age. ; The estimated GFR at the {date} visit was {gfr}. ; "
    "The patient had {adj} creatinine levels.",
  )
)


def _missing(value) -> bool:
  return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _present(value, name: str):
  if _missing(value):
    raise DataError(f"{name} is missing ({value!r}); clinical_prompt drops the sentence of a missing variable")
  return value


def age_word(donor_age: float) -> str:
  """Donor age in years → "low" (< 65) or "high" (>= 65)."""
  below, above = AGE_WORDS
  return below if _present(donor_age, "donor_age") < DONOR_AGE_THRESHOLD else above


def gfr_word(gfr: float) -> str:
  """GFR in mL/min/1.73 m² → "extremely low" (< 15), "very low" (< 30), "low" (< 45), "medium" (< 60) or "high"."""
  gfr = _present(gfr, "gfr")
  return next((word for bound, word in GFR_BANDS if gfr < bound), GFR_ABOVE_BANDS)


def date_word(exam: str) -> str:
  """Exam name D15, D30, M3 or M12 → "two weeks", "first month", "third month" or "first year"."""
  if _present(exam, "exam") not in EXAM_WORDS:
    raise DataError(f"unknown exam {exam!r}; known exams are {sorted(EXAM_WORDS)}")
  return EXAM_WORDS[exam]


def creatinine_adjective(std: float, rng: np.random.Generator) -> str:
  """Creatinine standard deviation (µmol/L) → a random one of UNSTABLE_ADJECTIVES if > 50, else of STABLE_ADJECTIVES."""
  adjectives = UNSTABLE_ADJECTIVES if _present(std, "creatinine_std") > CREATININE_STD_THRESHOLD else STABLE_ADJECTIVES
  return adjectives[rng.integers(len(adjectives))]


def clinical_prompt(
  templates_line: TemplateLine, donor_age, gfr, exam, creatinine_std, rng: np.random.Generator
) -> str:
  """The age, GFR and creatinine sentences of one template line joined by spaces.

  A sentence whose variable is missing (None or nan; for GFR, either gfr or exam) is dropped; rng is drawn from
  only for the creatinine adjective.
  """
  age_template, gfr_template, creatinine_template = templates_line
  sentences = []
  if not _missing(donor_age):
    sentences.append(age_template.format(age=age_word(donor_age)))
  if not (_missing(gfr) or _missing(exam)):
    sentences.append(gfr_template.format(gfr=gfr_word(gfr), date=date_word(exam)))
  if not _missing(creatinine_std):
    sentences.append(creatinine_template.format(adj=creatinine_adjective(creatinine_std, rng)))
  return " ".join(sentences)


def _words(text: str) -> list[str]:
  """Lowercased words and single punctuation marks, as the caption tokenizer's pre-tokenizer splits them."""
  return re.findall(r"\w+|[^\w\s]", text.lower())


def prompt_vocabulary(templates: Sequence[TemplateLine]) -> list[str]:
  """Sorted lowercased words and punctuation marks of every prompt clinical_prompt can build from templates."""
  fillers = (
    AGE_WORDS,
    (word for _, word in GFR_BANDS),
    (GFR_ABOVE_BANDS,),
    EXAM_WORDS.values(),
    UNSTABLE_ADJECTIVES,
    STABLE_ADJECTIVES,
  )
  texts = [literal for line in templates for part in line for literal, *_ in string.Formatter().parse(part)]
  texts += [word for group in fillers for word in group]
  return sorted({word for text in texts for word in _words(text)})
