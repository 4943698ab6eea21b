"""MEDIMP's clinical prompts: word mappings at their boundaries, missing variables, template parsing, vocabulary."""

import numpy as np
import pytest

from storyjax.data.medical import prompts
from storyjax.errors import ConfigError, DataError
from storyjax.text import tokenizer as tokenizer_lib


def test_word_mappings_at_their_boundaries():
  assert [prompts.age_word(age) for age in (18, 64.9, 65, 80)] == ["low", "low", "high", "high"]
  cases = {
    0: "extremely low",
    14.99: "extremely low",
    15: "very low",
    29.9: "very low",
    30: "low",
    44.9: "low",
    45: "medium",
    59.99: "medium",
    60: "high",
    120: "high",
  }
  assert {gfr: prompts.gfr_word(gfr) for gfr in cases} == cases
  assert [prompts.date_word(exam) for exam in ("D15", "D30", "M3", "M12")] == [
    "two weeks",
    "first month",
    "third month",
    "first year",
  ]
  with pytest.raises(DataError, match="unknown exam 'J15'"):
    prompts.date_word("J15")
  with pytest.raises(DataError, match="gfr is missing"):
    prompts.gfr_word(float("nan"))


def test_creatinine_adjective_sets_and_determinism():
  rng = np.random.default_rng(0)
  unstable = {prompts.creatinine_adjective(std, rng) for std in np.linspace(50.01, 200, 60)}
  stable = {prompts.creatinine_adjective(std, rng) for std in np.linspace(0, 50, 60)}  # 50 itself is stable
  assert unstable == {"unstable", "fluctuating", "variable"}
  assert stable == {"stable", "steady", "consistent"}

  # Prompts depend only on the variables and the rng's state.
  def draws(seed):
    rng = np.random.default_rng(seed)
    return [prompts.clinical_prompt(line, 70, 40, "M3", 80, rng) for line in prompts.TEMPLATES]

  assert draws(7) == draws(7)
  assert draws(7) != draws(8)


def test_full_prompt_and_missing_parts():
  line = prompts.TEMPLATES[0]
  rng = np.random.default_rng(1)
  prompt = prompts.clinical_prompt(line, 70, 20.0, "D15", 80.0, rng)
  adjective = prompt.split("displayed ")[1].split(" ")[0]
  assert adjective in prompts.UNSTABLE_ADJECTIVES
  assert prompt == (
    "The kidney donor was high years of age. The patient's GFR was found to be very low at the two weeks check-up. "
    f"Creatinine levels displayed {adjective} fluctuations."
  )
  assert prompts.clinical_prompt(line, None, 20.0, "D15", float("nan"), rng) == (
    "The patient's GFR was found to be very low at the two weeks check-up."
  )
  # GFR's sentence needs both the value and the exam.
  assert prompts.clinical_prompt(line, 40, np.nan, "M12", None, rng) == "The kidney donor was low years of age."
  assert prompts.clinical_prompt(line, 40, 75, None, None, rng) == "The kidney donor was low years of age."
  assert prompts.clinical_prompt(line, None, None, None, None, rng) == ""
  # No creatinine sentence, no draw from rng.
  state = rng.bit_generator.state
  prompts.clinical_prompt(line, 40, 75, "M3", None, rng)
  assert rng.bit_generator.state == state


def test_templates_hold_their_slots():
  assert len(prompts.TEMPLATES) == 10
  assert prompts.TEMPLATES[1] == (
    "At the time of transplant, the age of the kidney donor was {age}.",
    "The patient's glomerular filtration rate was {gfr} at the {date} follow-up.",
    "Creatinine levels varied {adj}.",
  )
  for age, gfr, creatinine in prompts.TEMPLATES:
    assert age.count("{age}") == 1 and "{" not in age.replace("{age}", "")
    assert gfr.count("{gfr}") == gfr.count("{date}") == 1
    assert creatinine.count("{adj}") == 1 and "{" not in creatinine.replace("{adj}", "")
  as_strings = [" ; ".join(line) for line in prompts.TEMPLATES]
  assert prompts.parse_templates(as_strings) == prompts.TEMPLATES


def test_parse_templates_errors_name_the_line():
  good = "Donor {age}. ; GFR {gfr} at {date}. ; Creatinine {adj}."
  assert prompts.parse_templates([good]) == (("Donor {age}.", "GFR {gfr} at {date}.", "Creatinine {adj}."),)
  bad_lines = {
    "Donor {age}. ; GFR {gfr} at {date}.": "line 2 has 2 ';'-separated parts",
    "Donor {age}. ; GFR {gfr}. ; Creatinine {adj}.": r"line 2: 'GFR \{gfr\}.' must hold \{gfr\} and \{date\}",
    "Donor. ; GFR {gfr} at {date}. ; Creatinine {adj}.": "line 2: 'Donor.' must hold {age}",
    "Donor {age} {age}. ; GFR {gfr} at {date}. ; Creatinine {adj}.": "once each",
    "Donor {age}. ; GFR {gfr} at {date}. ; Creatinine {adj} {gfr}.": "no other slot",
    "Donor {age. ; GFR {gfr} at {date}. ; Creatinine {adj}.": "line 2: 'Donor {age.' is not a valid template",
  }
  for line, message in bad_lines.items():
    with pytest.raises(ConfigError, match=message):
      prompts.parse_templates([good, line])
  with pytest.raises(ConfigError, match="non-empty list"):
    prompts.parse_templates(good)


def test_vocabulary_covers_every_prompt_word():
  vocabulary = prompts.prompt_vocabulary(prompts.TEMPLATES)
  tokenizer = tokenizer_lib.build_caption_tokenizer(vocabulary)
  unknown = tokenizer.convert_tokens_to_ids(tokenizer_lib.UNK)
  rng = np.random.default_rng(2)
  captions = []
  for _ in range(40):
    for line in prompts.TEMPLATES:
      age, gfr, creatinine = rng.uniform(10, 90), rng.uniform(0, 100), rng.uniform(0, 100)
      exam = rng.choice(list(prompts.EXAM_WORDS))
      age, gfr, creatinine = (value if rng.random() < 0.8 else np.nan for value in (age, gfr, creatinine))
      captions.append(prompts.clinical_prompt(line, age, gfr, exam, creatinine, rng))
  ids = tokenizer(captions)["input_ids"]
  assert not any(unknown in row for row in ids)
  # The vocabulary is no larger than needed: every entry occurs in some prompt.
  used = {token for row in ids for token in tokenizer.convert_ids_to_tokens(row)}
  assert set(vocabulary) <= used
  assert vocabulary == sorted(set(vocabulary)) and all(word == word.lower() for word in vocabulary)
