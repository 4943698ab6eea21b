"""Kidney-transplant cohorts of CosEmb/MEDIMP (thesis §4.1): the embedded procedural cohort and the real NIfTI tree.

A patient has up to four follow-up DCE MRI exams EXAMS (EXAM_DAYS after the transplant, D0 = BASELINE_DAY), each
with several sequences (contrast phases), a donor age, a GFR per exam and a long serum-creatinine series. The
outcome is the published rule (`outcome_label`): mean creatinine within ±LABEL_WINDOW days of the label day above
CREATININE_THRESHOLD µmol/L, the label day of the default target `pred_M12` being (12 + 12) months · 30.5 = 732.

`KidneyCohort` draws patient i of (seed, split) from its own generator around a latent health h ~ N(0, 1), with
d = max(−h, 0) the decline of unhealthy patients and ε independent N(0, 1) draws:
  donor age     clip(50 − 8h + 6ε, 18, 80) years
  GFR of exam k max(55 + 15h − 3·d·k + 5ε, 5) mL/min
  creatinine    b·(1 + 2·exp(−t/7))·exp(0.05·d·t/365)·exp(σε) µmol/L on day t, rounded to 0.1, with
                b = 97·exp(−0.25h + 0.15ε) and σ = 0.04 + 0.08·sigmoid(−2h), on days drawn in CREATININE_SEGMENTS
  each exam missing with probability `missing_rate` (one drawn exam kept when all would be).
Its volumes (S, S, S) in [0, 1] are made on demand, the same anatomy in every exam and sequence: an ellipsoidal
kidney (cortex, and a medulla inside r < 0.55 of its normalised radius r, soft edges) on a dim background, plus
K = min(Poisson(2.5·exp(−0.9h)), MAX_LESIONS) bright Gaussian lesions inside it of std S·(0.04 + 0.04·v)·U(0.8, 1.2)
and contrast (0.2 + 0.25·v)·U(0.7, 1.3), v = sigmoid(−1.5h). Each exam shifts the anatomy by N(0, (0.03·S)²) voxels
per axis; sequence s gives (background, cortex, medulla) levels, a gamma and Gaussian noise (SEQUENCE_CONTRASTS):
  volume = clip(clip(base + lesions, 0, 1)^γ + ν·ε, 0, 1).

`write_nifti_tree` writes a cohort in the published layout (_LAYOUT) and `NiftiKidneyCohort` reads that layout,
preprocessing volumes as published (`preprocess_volume`). `VolumeSource` and `PatientSource` serve either cohort;
`cohort_from_config` builds one from a config's data keys.
"""

import csv
import math
import pathlib
from typing import NamedTuple, Protocol
import zlib

import nibabel
import numpy as np

from storyjax.errors import ConfigError, DataError

EXAMS = ("D15", "D30", "M3", "M12")
EXAM_DAYS = (15, 30, 91, 365)  # days after the transplant
BASELINE_DAY = -1  # the D0 column: the day before the first post-transplant measurement
NUM_EXAMS = len(EXAMS)
LABEL_DAY = 732  # target pred_M12: (12 + 12) months · 30.5 days
LABEL_WINDOW = 61  # days either side of the label day whose creatinine measurements are averaged
CREATININE_THRESHOLD = 110.0  # µmol/L: a mean above it is the positive outcome
CREATININE_STATS = ("count", "mean", "median", "std", "min", "max")
SPLITS = ("train", "test")
# The published sequence folders, the tubular phase first: cohort sequence s is written to SEQUENCE_DIRS[s].
SEQUENCE_DIRS = ("3_WATER_AX_LAVA-Flex_tub", "1_WATER_AX_LAVA-Flex_ss_IV", "2_WATER_AX_LAVA-Flex_ART")
TUB_KEYWORDS = ("TUB", "tub", "WATER", "AX", "LAVA")
WATER_KEYWORDS = ("WATER", "AX", "LAVA")
BIOLOGICAL_CSV, TARGETS_CSV = "df_biological_data.csv", "df_targets.csv"
BIOLOGICAL_COLUMNS = ("patient", "D0", *EXAMS, "days_after_transplant", "sCreatinine")
TARGET_COLUMNS = ("patient", *(f"GFR {exam}" for exam in EXAMS), "age_donor", "trans_incomp")
# (background, cortex, medulla, gamma, noise std) of sequence s: the tubular phase lights the medulla, the early and
# arterial phases the cortex. Every map is increasing, so lesions stay bright in all of them.
SEQUENCE_CONTRASTS = ((0.10, 0.40, 0.55, 1.0, 0.03), (0.15, 0.35, 0.28, 0.8, 0.04), (0.08, 0.50, 0.25, 1.25, 0.035))
# (first day, last day, fewest, most) creatinine measurements: at least 2 between consecutive exams and 3 in the
# label window [LABEL_DAY − LABEL_WINDOW, LABEL_DAY + LABEL_WINDOW] = [671, 793]
CREATININE_SEGMENTS = (
  (0, 15, 4, 7),
  (16, 30, 3, 5),
  (31, 91, 3, 6),
  (92, 365, 4, 8),
  (366, 670, 3, 6),
  (671, 793, 3, 6),
)
MAX_LESIONS = 12
_LAYOUT = (
  f"<root>/<patient>/<exam: {'|'.join(EXAMS)}>/<sequence folder, e.g. {SEQUENCE_DIRS[0]}>/<file>.nii.gz beside "
  f"<root>/{BIOLOGICAL_CSV} and <root>/{TARGETS_CSV}"
)
_MISSING_TEXT = ("", "na", "n/a", "nan", "none")


def sequence_key(dir_name: str) -> str | None:
  """The published keyword rule: "TUB" for >= 4 hits of TUB_KEYWORDS, "WATER-<n>" (n its leading number) for >= 3
  hits of WATER_KEYWORDS, None for any other sequence folder."""
  if sum(keyword in dir_name for keyword in TUB_KEYWORDS) >= 4:
    return "TUB"
  if sum(keyword in dir_name for keyword in WATER_KEYWORDS) >= 3:
    return f"WATER-{dir_name.split('_')[0]}"
  return None


def crop_or_pad(volume: np.ndarray, size: int) -> np.ndarray:
  """(D, H, W) → (size, size, size), each axis centrally cropped or zero-padded like torchio's CropOrPad: of a
  difference of n voxels, ceil(n / 2) go at the start and floor(n / 2) at the end."""
  result = np.zeros((size, size, size), volume.dtype)
  source, target = [], []
  for length in volume.shape:
    start = (abs(length - size) + 1) // 2
    if length >= size:
      source.append(slice(start, start + size))
      target.append(slice(None))
    else:
      source.append(slice(None))
      target.append(slice(start, start + length))
  result[tuple(target)] = volume[tuple(source)]
  return result


def preprocess_volume(volume: np.ndarray, size: int) -> np.ndarray:
  """(D, H, W) raw intensities → (size, size, size) float32 in [0, 1], as published with torchio: z-score (std with
  ddof 1, as torch), clip to [−5, 5], rescale the clipped min..max to [0, 1], then `crop_or_pad` (zero padding)."""
  volume = np.asarray(volume, np.float64)
  std = volume.std(ddof=1)
  scores = np.clip((volume - volume.mean()) / std, -5.0, 5.0) if std > 0 else np.zeros_like(volume)
  low, high = scores.min(), scores.max()
  rescaled = (scores - low) / (high - low) if high > low else np.zeros_like(scores)
  return crop_or_pad(rescaled.astype(np.float32), size)


def outcome_label(days: np.ndarray, values: np.ndarray, label_day: int = LABEL_DAY) -> tuple[int, float]:
  """(label, mean): the mean creatinine of the (M,) measurements within ±LABEL_WINDOW days of `label_day` and whether
  it exceeds CREATININE_THRESHOLD; (0, nan) when no measurement falls in that window."""
  window = values[np.abs(days - label_day) <= LABEL_WINDOW]
  if not window.size:
    return 0, math.nan
  mean = float(window.mean())
  return int(mean > CREATININE_THRESHOLD), mean


def creatinine_statistics(days: np.ndarray, values: np.ndarray, exam_days, present: np.ndarray) -> np.ndarray:
  """(4, 6) float32 CREATININE_STATS of the measurements in (exam_days[k], exam_days[k + 1]] for exam k, i.e. after
  the previous exam (D0 for D15) up to this one; exam_days (5,) = (D0, D15, D30, M3, M12). Zeros for missing exams
  and empty intervals; std has ddof 1 (as pandas) and is 0 below 2 measurements."""
  stats = np.zeros((NUM_EXAMS, len(CREATININE_STATS)), np.float32)
  for exam in np.flatnonzero(present):
    window = values[(days > exam_days[exam]) & (days <= exam_days[exam + 1])]
    if window.size:
      std = window.std(ddof=1) if window.size > 1 else 0.0
      stats[exam] = (window.size, window.mean(), np.median(window), std, window.min(), window.max())
  return stats


def _patient_record(patient_id, health, donor_age, present, gfr, days, values, exam_days, label_day) -> dict:
  """The patient dict both cohorts return (see KidneyCohort.patient)."""
  label, creatinine_2y = outcome_label(days, values, label_day)
  stats = creatinine_statistics(days, values, exam_days, present)
  return {
    "patient_id": patient_id,
    "health": float(health),
    "donor_age": float(donor_age),
    "label": label,
    "creatinine_2y": creatinine_2y,
    "present": present.copy(),
    "gfr": np.where(present, gfr, np.nan).astype(np.float32),
    "creatinine_std": np.where(present, stats[:, 3], np.nan).astype(np.float32),
    "creatinine_stats": stats,
    "creatinine_days": days.copy(),
    "creatinine_values": values.copy(),
    "exam_days": np.asarray(exam_days, np.int64),
  }


class _Patient(NamedTuple):
  health: float
  donor_age: float
  present: np.ndarray  # (4,) bool
  gfr: np.ndarray  # (4,) float32, drawn for every exam
  days: np.ndarray  # (M,) int64
  values: np.ndarray  # (M,) float64, µmol/L
  centre: np.ndarray  # (3,) voxels, (D, H, W)
  radii: np.ndarray  # (3,) voxels
  lesion_offsets: np.ndarray  # (K, 3) voxels from the kidney's centre
  lesion_sizes: np.ndarray  # (K,) Gaussian std, voxels
  lesion_contrasts: np.ndarray  # (K,)


def _sigmoid(value):
  return 1.0 / (1.0 + np.exp(-value))


def _draw_patient(seed: int, split: str, index: int, size: int, missing_rate: float) -> _Patient:
  """Patient `index` of (seed, split) by the module docstring's formulae; lengths scale with `size`."""
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  health = rng.standard_normal()
  decline = max(-health, 0.0)
  donor_age = float(np.clip(50.0 - 8.0 * health + 6.0 * rng.standard_normal(), 18.0, 80.0))
  present = rng.uniform(size=NUM_EXAMS) >= missing_rate
  kept_exam = rng.integers(NUM_EXAMS)
  if not present.any():
    present[kept_exam] = True
  gfr = 55.0 + 15.0 * health - 3.0 * decline * np.arange(NUM_EXAMS) + 5.0 * rng.standard_normal(NUM_EXAMS)
  baseline = 97.0 * np.exp(-0.25 * health + 0.15 * rng.standard_normal())
  spread = 0.04 + 0.08 * _sigmoid(-2.0 * health)
  days = np.concatenate(
    [
      np.sort(rng.choice(np.arange(first, last + 1), rng.integers(fewest, most + 1), replace=False))
      for first, last, fewest, most in CREATININE_SEGMENTS
    ]
  ).astype(np.int64)
  # high just after the transplant, then settling to b; slowly rising for declining grafts
  level = baseline * (1.0 + 2.0 * np.exp(-days / 7.0)) * np.exp(0.05 * decline * days / 365.0)
  values = np.round(level * np.exp(spread * rng.standard_normal(days.size)), 1)
  centre = size / 2 + rng.uniform(-0.06, 0.06, 3) * size
  radii = rng.uniform((0.26, 0.17, 0.13), (0.32, 0.21, 0.17)) * size
  count = min(int(rng.poisson(2.5 * np.exp(-0.9 * health))), MAX_LESIONS)
  directions = rng.standard_normal((count, 3))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  lesion_offsets = directions * (0.7 * rng.uniform(size=(count, 1)) ** (1 / 3)) * radii  # uniform in the inner 70%
  severity = _sigmoid(-1.5 * health)
  lesion_sizes = size * (0.04 + 0.04 * severity) * rng.uniform(0.8, 1.2, count)
  lesion_contrasts = (0.2 + 0.25 * severity) * rng.uniform(0.7, 1.3, count)
  return _Patient(
    float(health),
    donor_age,
    present,
    np.maximum(gfr, 5.0).astype(np.float32),
    days,
    values,
    centre,
    radii,
    lesion_offsets,
    lesion_sizes,
    lesion_contrasts,
  )


def _render(patient: _Patient, shift: np.ndarray, contrast, noise: np.ndarray, size: int) -> np.ndarray:
  """(S, S, S) float32 in [0, 1]: the patient's kidney and lesions moved by `shift` (3,) voxels, in one sequence's
  `contrast` (SEQUENCE_CONTRASTS row), plus `noise` (S, S, S) standard normal draws."""
  background, cortex, medulla, gamma, noise_std = contrast
  voxel_centres = np.arange(size) + 0.5
  centre = patient.centre + shift
  along = [(voxel_centres - centre[axis]) / patient.radii[axis] for axis in range(3)]
  radius = np.sqrt(along[0][:, None, None] ** 2 + along[1][None, :, None] ** 2 + along[2][None, None, :] ** 2)
  image = background + (cortex - background) * _sigmoid(10.0 * (1.0 - radius))
  image += (medulla - cortex) * _sigmoid(12.0 * (0.55 - radius))
  if patient.lesion_sizes.size:
    # separable Gaussians: (K, S) profiles per axis, summed over lesions with one (S², K)·(K, S) product
    profiles = np.exp(
      -0.5
      * ((voxel_centres - (centre + patient.lesion_offsets)[:, :, None]) / patient.lesion_sizes[:, None, None]) ** 2
    )
    planes = (patient.lesion_contrasts[:, None] * profiles[:, 0])[:, :, None] * profiles[:, 1][:, None, :]
    image += np.tensordot(planes, profiles[:, 2], axes=([0], [0]))
  image = np.clip(image, 0.0, 1.0) ** gamma + noise_std * noise
  return np.clip(image, 0.0, 1.0).astype(np.float32)


class Cohort(Protocol):
  """What VolumeSource and PatientSource read: a KidneyCohort or a NiftiKidneyCohort."""

  volume_size: int
  num_sequences: int

  def __len__(self) -> int: ...

  def patient(self, index: int) -> dict: ...

  def volume(self, index: int, exam_index: int, sequence: int) -> np.ndarray: ...


def _check_index(index: int, count: int, what: str) -> None:
  if not 0 <= index < count:
    raise IndexError(f"{what} index {index} out of range for {count}")


class KidneyCohort:
  """The embedded procedural cohort: `num_patients` patients of split "train" or "test" (module docstring)."""

  def __init__(
    self,
    split: str,
    num_patients: int,
    volume_size: int = 32,
    missing_rate: float = 0.25,
    num_sequences: int = 2,
    seed: int = 0,
  ):
    if split not in SPLITS:
      raise ConfigError(f"unknown split {split!r}; choose one of {SPLITS}")
    if num_patients < 1:
      raise ConfigError(f"num_patients={num_patients}: a cohort needs at least 1 patient")
    if volume_size < 8:
      raise ConfigError(f"volume_size={volume_size} is too small to draw a kidney (at least 8)")
    if not 0.0 <= missing_rate < 1.0:
      raise ConfigError(f"missing_rate={missing_rate} must be in [0, 1): the probability that an exam is missing")
    if not 1 <= num_sequences <= len(SEQUENCE_CONTRASTS):
      raise ConfigError(f"num_sequences={num_sequences}: choose 1 to {len(SEQUENCE_CONTRASTS)} (SEQUENCE_CONTRASTS)")
    self.split, self.num_patients, self.volume_size = split, num_patients, volume_size
    self.missing_rate, self.num_sequences, self.seed = missing_rate, num_sequences, seed
    self._id_digits = max(4, len(str(num_patients)))

  def __len__(self) -> int:
    return self.num_patients

  def _draw(self, index: int) -> _Patient:
    _check_index(index, self.num_patients, "patient")
    return _draw_patient(self.seed, self.split, index, self.volume_size, self.missing_rate)

  def patient(self, index: int) -> dict:
    """{"patient_id": e.g. "001-0001-A-A", "health": h, "donor_age": years, "label": 0/1, "creatinine_2y": the
    label's mean creatinine, "present" (4,) bool, "gfr" (4,) float32 (nan where missing), "creatinine_std" (4,)
    float32 (std between the previous exam and this one; nan where missing), "creatinine_stats" (4, 6) float32
    (CREATININE_STATS; zeros where missing), "creatinine_days" (M,) int64, "creatinine_values" (M,) float64,
    "exam_days" (5,) int64 (D0, D15, D30, M3, M12)}."""
    drawn = self._draw(index)
    patient_id = f"{SPLITS.index(self.split) + 1:03d}-{index + 1:0{self._id_digits}d}-A-A"
    exam_days = (BASELINE_DAY, *EXAM_DAYS)
    return _patient_record(
      patient_id,
      drawn.health,
      drawn.donor_age,
      drawn.present,
      drawn.gfr,
      drawn.days,
      drawn.values,
      exam_days,
      LABEL_DAY,
    )

  def volume(self, index: int, exam_index: int, sequence: int) -> np.ndarray:
    """(S, S, S) float32 in [0, 1] of any exam, present or not: a missing exam's volume is the truth that an
    imputation should recover."""
    _check_index(exam_index, NUM_EXAMS, "exam")
    _check_index(sequence, self.num_sequences, "sequence")
    drawn = self._draw(index)
    split_index, size = SPLITS.index(self.split), self.volume_size
    shift = np.random.default_rng([self.seed, split_index, index, 1, exam_index]).normal(0.0, 0.03 * size, 3)
    noise_rng = np.random.default_rng([self.seed, split_index, index, 2, exam_index, sequence])
    noise = noise_rng.standard_normal((size, size, size), np.float32)
    return _render(drawn, shift, SEQUENCE_CONTRASTS[sequence], noise, size)


def _numbers(rows: list[dict], columns: tuple[str, ...], path: pathlib.Path) -> np.ndarray:
  """(len(rows), len(columns)) float64 of CSV cells; empty and NA cells are nan."""
  table = np.full((len(rows), len(columns)), np.nan)
  for row_index, row in enumerate(rows):
    for column_index, column in enumerate(columns):
      text = row[column] or ""
      if text.strip().lower() in _MISSING_TEXT:
        continue
      try:
        table[row_index, column_index] = float(text)
      except ValueError as error:
        raise DataError(
          f"{path}: column {column!r} of patient {row['patient']!r} holds {text!r}, not a number; fix the cell"
        ) from error
  return table


def _read_csv(path: pathlib.Path, columns: tuple[str, ...]) -> list[dict]:
  if not path.is_file():
    raise DataError(f"{path} is missing; write it with the columns {', '.join(columns)} (layout: {_LAYOUT})")
  with path.open(newline="") as file:
    reader = csv.DictReader(file)
    absent = [column for column in columns if column not in (reader.fieldnames or ())]
    if absent:
      raise DataError(f"{path} lacks the columns {absent}; it needs {', '.join(columns)}")
    return list(reader)


def _read_nifti(path: pathlib.Path) -> np.ndarray:
  """(D, H, W) float32 = the NIfTI's (z, y, x); trailing singleton axes beyond the third are dropped."""
  try:
    data = np.asarray(nibabel.load(path).get_fdata(dtype=np.float32))
  except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as error:
    raise DataError(
      f"{path} cannot be read as NIfTI ({error}); re-export it as .nii.gz or remove its folder"
    ) from error
  while data.ndim > 3 and data.shape[-1] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise DataError(
      f"{path} holds a {data.ndim}-D volume of shape {data.shape}; a sequence is one 3-D (x, y, z) volume: "
      "export a single phase"
    )
  return data.transpose(2, 1, 0)


class NiftiKidneyCohort:
  """A real cohort in the published layout (_LAYOUT), with KidneyCohort's interface ("health" is nan).

  Sequence s is the folder whose `sequence_key` is sequence_keys[s]; an exam is present when its folder holds a
  folder for every key. Creatinine statistics use each patient's own exam days (the D0..M12 columns of its first
  row; empty cells fall back to EXAM_DAYS) and the label the published rule at `target_day`.
  """

  def __init__(self, root, volume_size: int, sequence_keys: tuple[str, ...] = ("TUB",), target_day: int = LABEL_DAY):
    if volume_size < 8:
      raise ConfigError(f"volume_size={volume_size} is too small (at least 8)")
    if not sequence_keys or len(set(sequence_keys)) < len(sequence_keys):
      raise ConfigError(f"sequence_keys={sequence_keys}: name one or more distinct keys, e.g. ('TUB', 'WATER-1')")
    root = pathlib.Path(root)
    if not root.is_dir():
      raise DataError(f"{root} is not a folder; a kidney cohort is laid out as {_LAYOUT}")
    patient_dirs = sorted(path for path in root.iterdir() if path.is_dir())
    if not patient_dirs:
      raise DataError(f"{root} holds no patient folders; a kidney cohort is laid out as {_LAYOUT}")
    self.root, self.volume_size, self.target_day = root, volume_size, target_day
    self.sequence_keys, self.num_sequences = tuple(sequence_keys), len(sequence_keys)
    biological_path, targets_path = root / BIOLOGICAL_CSV, root / TARGETS_CSV
    biological = _read_csv(biological_path, BIOLOGICAL_COLUMNS)
    targets = {row["patient"]: row for row in _read_csv(targets_path, TARGET_COLUMNS)}
    series: dict[str, list[dict]] = {}
    for row in biological:
      series.setdefault(row["patient"], []).append(row)
    self._patients, self._paths = [], []
    for patient_dir in patient_dirs:
      patient_id = patient_dir.name
      if patient_id not in series or patient_id not in targets:
        missing = biological_path if patient_id not in series else targets_path
        raise DataError(f"patient folder {patient_dir} has no row in {missing}; add its rows or remove the folder")
      exam_days = _numbers(series[patient_id][:1], ("D0", *EXAMS), biological_path)[0]
      exam_days = np.rint(np.where(np.isnan(exam_days), (BASELINE_DAY, *EXAM_DAYS), exam_days)).astype(np.int64)
      days, values = _numbers(series[patient_id], ("days_after_transplant", "sCreatinine"), biological_path).T
      measured = np.isfinite(days) & np.isfinite(values)
      days, values = np.rint(days[measured]).astype(np.int64), values[measured]
      if math.isnan(outcome_label(days, values, target_day)[1]):
        raise DataError(
          f"{biological_path}: patient {patient_id!r} has no creatinine within ±{LABEL_WINDOW} days of day "
          f"{target_day}, so no label; remove the patient or choose another target_day"
        )
      *gfr, donor_age = _numbers([targets[patient_id]], (*TARGET_COLUMNS[1:5], "age_donor"), targets_path)[0]
      paths = [self._sequence_files(patient_dir / exam) for exam in EXAMS]
      present = np.array([exam_paths is not None for exam_paths in paths])
      self._patients.append((patient_id, donor_age, present, np.array(gfr, np.float32), days, values, exam_days))
      self._paths.append(paths)

  def _sequence_files(self, exam_dir: pathlib.Path) -> list[pathlib.Path] | None:
    """The NIfTI file of each of sequence_keys in `exam_dir`, or None when the exam or one of its sequences is
    missing."""
    if not exam_dir.is_dir():
      return None
    folders = {}
    for folder in sorted(path for path in exam_dir.iterdir() if path.is_dir()):
      key = sequence_key(folder.name)
      if key is None:  # a sequence the keyword rule does not select
        continue
      if key in folders:
        raise DataError(
          f"{folders[key]} and {folder} are both sequence {key}; keep one of them in {exam_dir} (or rename one)"
        )
      folders[key] = folder
    if any(key not in folders for key in self.sequence_keys):
      return None
    files = []
    for key in self.sequence_keys:
      niftis = sorted(path for path in folders[key].iterdir() if path.name.endswith((".nii", ".nii.gz")))
      if len(niftis) != 1:
        raise DataError(
          f"{folders[key]} holds {len(niftis)} .nii/.nii.gz files; a sequence folder holds exactly one volume"
        )
      files.append(niftis[0])
    return files

  def __len__(self) -> int:
    return len(self._patients)

  def patient(self, index: int) -> dict:
    """KidneyCohort.patient's dict ("health" nan) from the CSVs and the present exam folders."""
    _check_index(index, len(self), "patient")
    patient_id, donor_age, present, gfr, days, values, exam_days = self._patients[index]
    return _patient_record(patient_id, math.nan, donor_age, present, gfr, days, values, exam_days, self.target_day)

  def volume(self, index: int, exam_index: int, sequence: int) -> np.ndarray:
    """(S, S, S) float32 in [0, 1]: the exam's NIfTI, (x, y, z) → (D, H, W) = (z, y, x), by `preprocess_volume`."""
    _check_index(index, len(self), "patient")
    _check_index(exam_index, NUM_EXAMS, "exam")
    _check_index(sequence, self.num_sequences, "sequence")
    paths = self._paths[index][exam_index]
    if paths is None:
      raise DataError(
        f"patient {self._patients[index][0]} has no exam {EXAMS[exam_index]} with sequences {self.sequence_keys}; "
        "read present exams only (patient(index)['present'])"
      )
    return preprocess_volume(_read_nifti(paths[sequence]), self.volume_size)


def write_nifti_tree(cohort: Cohort, root, sequence_dirs: tuple[str, ...] = SEQUENCE_DIRS) -> pathlib.Path:
  """Writes `cohort` in the published layout (_LAYOUT): each present exam's sequence s as
  `<root>/<patient>/<exam>/<sequence_dirs[s]>/<patient>_<exam>.nii.gz` (float32, identity affine, our (D, H, W)
  stored as NIfTI (x, y, z) = (W, H, D)), and both CSVs with whole days; → root."""
  if len(sequence_dirs) < cohort.num_sequences:
    raise ConfigError(f"{len(sequence_dirs)} sequence_dirs for {cohort.num_sequences} sequences; name one per sequence")
  keys = [sequence_key(name) for name in sequence_dirs[: cohort.num_sequences]]
  if None in keys or len(set(keys)) < len(keys):
    raise ConfigError(f"sequence_dirs {sequence_dirs} give sequence keys {keys}; each must have a distinct key")
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  biological_rows, target_rows = [], []
  for index in range(len(cohort)):
    record = cohort.patient(index)
    patient_id = record["patient_id"]
    for exam_index in np.flatnonzero(record["present"]):
      exam = EXAMS[exam_index]
      for sequence in range(cohort.num_sequences):
        folder = root / patient_id / exam / sequence_dirs[sequence]
        folder.mkdir(parents=True, exist_ok=True)
        volume = cohort.volume(index, int(exam_index), sequence).astype(np.float32)
        nibabel.save(nibabel.Nifti1Image(volume.transpose(2, 1, 0), np.eye(4)), folder / f"{patient_id}_{exam}.nii.gz")
    exam_days = [int(day) for day in record["exam_days"]]
    for day, value in zip(record["creatinine_days"].tolist(), record["creatinine_values"].tolist()):
      biological_rows.append([patient_id, *exam_days, int(day), repr(float(value))])
    gfr = ["" if math.isnan(value) else repr(value) for value in record["gfr"].astype(float).tolist()]
    target_rows.append([patient_id, *gfr, repr(record["donor_age"]), 0])
  for name, columns, rows in (
    (BIOLOGICAL_CSV, BIOLOGICAL_COLUMNS, biological_rows),
    (TARGETS_CSV, TARGET_COLUMNS, target_rows),
  ):
    with (root / name).open("w", newline="") as file:
      writer = csv.writer(file)
      writer.writerow(columns)
      writer.writerows(rows)
  return root


class CohortSubset:
  """The patients `indices` of `cohort`, in that order, with the cohort's interface."""

  def __init__(self, cohort: Cohort, indices):
    self.cohort, self.indices = cohort, [int(index) for index in indices]
    self.volume_size, self.num_sequences = cohort.volume_size, cohort.num_sequences

  def __len__(self) -> int:
    return len(self.indices)

  def patient(self, index: int) -> dict:
    _check_index(index, len(self), "patient")
    return self.cohort.patient(self.indices[index])

  def volume(self, index: int, exam_index: int, sequence: int) -> np.ndarray:
    _check_index(index, len(self), "patient")
    return self.cohort.volume(self.indices[index], exam_index, sequence)


def cohort_from_config(data, split: str) -> Cohort:
  """The `split` cohort named by a config's data keys (configs/_kidney.py). With data.root "", the embedded
  KidneyCohort of data.train_patients or data.test_patients; else the NIfTI tree at data.root (its first
  data.num_sequences keys of SEQUENCE_DIRS) split by a permutation drawn from data.seed: its first test_patients
  patients are "test", the next train_patients "train"."""
  if split not in SPLITS:
    raise ConfigError(f"unknown split {split!r}; choose one of {SPLITS}")
  num_patients = {"train": data.train_patients, "test": data.test_patients}[split]
  if not data.root:
    return KidneyCohort(split, num_patients, data.volume_size, data.missing_rate, data.num_sequences, data.seed)
  if not 1 <= data.num_sequences <= len(SEQUENCE_DIRS):
    raise ConfigError(f"data.num_sequences={data.num_sequences}: choose 1 to {len(SEQUENCE_DIRS)}")
  keys = tuple(sequence_key(name) for name in SEQUENCE_DIRS[: data.num_sequences])
  cohort = NiftiKidneyCohort(data.root, data.volume_size, keys)
  if data.train_patients + data.test_patients > len(cohort) or min(data.train_patients, data.test_patients) < 1:
    raise ConfigError(
      f"data.train_patients={data.train_patients} and data.test_patients={data.test_patients}: {data.root} holds "
      f"{len(cohort)} patients; choose positive counts summing to at most {len(cohort)}"
    )
  order = np.random.default_rng(data.seed).permutation(len(cohort))
  chosen = order[: data.test_patients] if split == "test" else order[data.test_patients :][: data.train_patients]
  return CohortSubset(cohort, chosen)


class VolumeSource:
  """Grain random-access source: one example per present (patient, exam, sequence) of `cohort`, in that order.

  Item: {"volume": (S, S, S, 1) float32, "patient", "exam", "sequence": int32, "gfr", "donor_age", "creatinine_std":
  float32 (of that exam), "label": int32}.
  """

  def __init__(self, cohort: Cohort):
    self.cohort = cohort
    self._records = [cohort.patient(index) for index in range(len(cohort))]
    self._items = [
      (index, int(exam), sequence)
      for index, record in enumerate(self._records)
      for exam in np.flatnonzero(record["present"])
      for sequence in range(cohort.num_sequences)
    ]

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int) -> dict:
    _check_index(index, len(self), "example")
    patient, exam, sequence = self._items[index]
    record = self._records[patient]
    return {
      "volume": self.cohort.volume(patient, exam, sequence)[..., None],
      "patient": np.int32(patient),
      "exam": np.int32(exam),
      "sequence": np.int32(sequence),
      "gfr": np.float32(record["gfr"][exam]),
      "donor_age": np.float32(record["donor_age"]),
      "creatinine_std": np.float32(record["creatinine_std"][exam]),
      "label": np.int32(record["label"]),
    }


class PatientSource:
  """Grain random-access source: one example per patient of `cohort`, its exams in one `sequence`.

  Item: {"volumes": (4, S, S, S, 1) float32, zeros for missing exams, "present": (4,) bool, "creatinine_stats":
  (4, 6) float32, "label": int32, "patient": int32}.
  """

  def __init__(self, cohort: Cohort, sequence: int = 0):
    if not 0 <= sequence < cohort.num_sequences:
      raise ConfigError(f"sequence={sequence}: the cohort has {cohort.num_sequences} sequences")
    self.cohort, self.sequence = cohort, sequence

  def __len__(self) -> int:
    return len(self.cohort)

  def __getitem__(self, index: int) -> dict:
    record = self.cohort.patient(index)
    size = self.cohort.volume_size
    volumes = np.zeros((NUM_EXAMS, size, size, size, 1), np.float32)
    for exam in np.flatnonzero(record["present"]):
      volumes[exam, ..., 0] = self.cohort.volume(index, int(exam), self.sequence)
    return {
      "volumes": volumes,
      "present": record["present"],
      "creatinine_stats": record["creatinine_stats"],
      "label": np.int32(record["label"]),
      "patient": np.int32(index),
    }


class VolumePairSource:
  """Grain random-access source of `num_pairs` volume pairs for CosEmb's contrastive pretraining, 1 in
  `1/positive_fraction` of them (the published CustomSampler's 1 : 3) from one patient (two different (exam,
  sequence) volumes), the others from two patients; pair i is a pure function of (seed, i).

  Item: {"volume_a", "volume_b": (S, S, S, 1) float32, "same_patient", "same_exam": bool, and per side "gfr_a",
  "gfr_b", "donor_age_a", "donor_age_b": float32, "label_a", "label_b": int32}. Which pairs count as positive (same
  patient, or close values, with the curriculum) is the loss's choice (storyjax/tasks/cosemb_pretrain.py).
  """

  def __init__(self, cohort: Cohort, num_pairs: int, positive_fraction: float = 0.25, seed: int = 0):
    if num_pairs < 1 or not 0.0 < positive_fraction < 1.0:
      raise ConfigError(f"num_pairs={num_pairs} must be >= 1 and positive_fraction={positive_fraction} in (0, 1)")
    self.volumes = VolumeSource(cohort)
    self.num_pairs, self.positive_fraction, self.seed = num_pairs, positive_fraction, seed
    by_patient: dict[int, list[int]] = {}
    for item, (patient, _, _) in enumerate(self.volumes._items):
      by_patient.setdefault(patient, []).append(item)
    self._by_patient = by_patient
    self._with_pairs = [patient for patient, items in by_patient.items() if len(items) > 1]
    if not self._with_pairs or len(by_patient) < 2:
      raise ConfigError("the cohort needs two patients and one with two volumes to form pairs; use more patients")

  def __len__(self) -> int:
    return self.num_pairs

  def __getitem__(self, index: int) -> dict:
    _check_index(index, self.num_pairs, "pair")
    rng = np.random.default_rng([self.seed, 7, index])
    if rng.random() < self.positive_fraction:
      patient = self._with_pairs[rng.integers(len(self._with_pairs))]
      first, second = rng.choice(self._by_patient[patient], 2, replace=False)
    else:
      first_patient, second_patient = rng.choice(list(self._by_patient), 2, replace=False)
      first = rng.choice(self._by_patient[first_patient])
      second = rng.choice(self._by_patient[second_patient])
    first, second = self.volumes[int(first)], self.volumes[int(second)]
    pair = {"volume_a": first["volume"], "volume_b": second["volume"]}
    pair["same_patient"] = np.bool_(first["patient"] == second["patient"])
    pair["same_exam"] = np.bool_(pair["same_patient"] and first["exam"] == second["exam"])
    for name in ("gfr", "donor_age", "label"):
      pair[f"{name}_a"], pair[f"{name}_b"] = first[name], second[name]
    return pair
