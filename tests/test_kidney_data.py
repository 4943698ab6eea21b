"""The kidney-transplant cohorts (CosEmb/MEDIMP data): the procedural cohort's determinism, shapes, missingness,
labels and health signal against inline recomputations; preprocessing against a plain numpy expectation; the
NIfTI tree written and read back; the sequence keyword rule and the loader's errors."""

import ml_collections
import nibabel
import numpy as np
import pytest

from storyjax.data.medical.kidney import (
  EXAMS,
  SEQUENCE_DIRS,
  KidneyCohort,
  NiftiKidneyCohort,
  PatientSource,
  VolumeSource,
  cohort_from_config,
  crop_or_pad,
  preprocess_volume,
  sequence_key,
  write_nifti_tree,
)
from storyjax.errors import ConfigError, DataError

SIZE = 16


@pytest.fixture(scope="module")
def large_cohort():
  """400 patients' records (no volumes) at the default missing rate."""
  cohort = KidneyCohort("train", 400, volume_size=SIZE)
  return [cohort.patient(index) for index in range(len(cohort))]


def ranks(values: np.ndarray) -> np.ndarray:
  return np.argsort(np.argsort(values)).astype(float)


def spearman(first: np.ndarray, second: np.ndarray) -> float:
  return float(np.corrcoef(ranks(first), ranks(second))[0, 1])


def assert_records_equal(first: dict, second: dict, skip=()) -> None:
  assert first.keys() == second.keys()
  for key in first.keys() - set(skip):
    np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_same_arguments_same_patients_and_volumes_splits_differ():
  first, second = KidneyCohort("train", 3, SIZE, seed=5), KidneyCohort("train", 3, SIZE, seed=5)
  test_split = KidneyCohort("test", 3, SIZE, seed=5)
  for index in range(3):
    assert_records_equal(first.patient(index), second.patient(index))
    for exam in range(len(EXAMS)):
      for sequence in range(2):
        np.testing.assert_array_equal(first.volume(index, exam, sequence), second.volume(index, exam, sequence))
    assert first.patient(index)["health"] != test_split.patient(index)["health"]
    assert first.patient(index)["patient_id"] != test_split.patient(index)["patient_id"]
    assert not np.allclose(first.volume(index, 0, 0), test_split.volume(index, 0, 0))
  assert first.patient(0)["health"] != KidneyCohort("train", 3, SIZE, seed=6).patient(0)["health"]
  # the anatomy is shared: two exams of one patient correlate more than two patients' exams do
  cohort = KidneyCohort("train", 12, SIZE, seed=5)
  correlation = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]
  same = np.mean([correlation(cohort.volume(index, 0, 0), cohort.volume(index, 1, 0)) for index in range(12)])
  other = np.mean(
    [correlation(cohort.volume(index, 0, 0), cohort.volume((index + 1) % 12, 0, 0)) for index in range(12)]
  )
  assert same > other + 0.05


def test_records_and_sources_shapes_dtypes_ranges():
  cohort = KidneyCohort("train", 5, SIZE, missing_rate=0.4, num_sequences=2, seed=1)
  record = cohort.patient(0)
  assert record["patient_id"] == "001-0001-A-A" and KidneyCohort("test", 1, SIZE).patient(0)["patient_id"][:4] == "002-"
  assert record["present"].dtype == bool and record["present"].shape == (4,)
  for key in ("gfr", "creatinine_std"):
    assert record[key].dtype == np.float32 and record[key].shape == (4,)
    assert np.array_equal(np.isnan(record[key]), ~record["present"])
  assert record["creatinine_stats"].dtype == np.float32 and record["creatinine_stats"].shape == (4, 6)
  assert not record["creatinine_stats"][~record["present"]].any()
  assert 18 <= record["donor_age"] <= 80 and record["label"] in (0, 1)
  volume = cohort.volume(0, 0, 1)
  assert volume.shape == (SIZE, SIZE, SIZE) and volume.dtype == np.float32
  assert volume.min() >= 0.0 and volume.max() <= 1.0

  volumes = VolumeSource(cohort)
  records = [cohort.patient(index) for index in range(5)]
  assert len(volumes) == 2 * sum(int(record["present"].sum()) for record in records)
  item = volumes[len(volumes) - 1]
  dtypes = {"patient": np.int32, "exam": np.int32, "sequence": np.int32, "label": np.int32}
  dtypes |= {"gfr": np.float32, "donor_age": np.float32, "creatinine_std": np.float32}
  assert item.keys() == dtypes.keys() | {"volume"}
  for key, dtype in dtypes.items():
    assert item[key].dtype == dtype, key
  assert item["volume"].shape == (SIZE, SIZE, SIZE, 1) and item["volume"].dtype == np.float32
  patient, exam = int(item["patient"]), int(item["exam"])
  assert records[patient]["present"][exam] and item["gfr"] == records[patient]["gfr"][exam]
  np.testing.assert_array_equal(item["volume"][..., 0], cohort.volume(patient, exam, int(item["sequence"])))

  patients = PatientSource(cohort, sequence=1)
  assert len(patients) == 5
  missing_patient = next(index for index, record in enumerate(records) if not record["present"].all())
  example = patients[missing_patient]
  assert example["volumes"].shape == (4, SIZE, SIZE, SIZE, 1) and example["volumes"].dtype == np.float32
  assert example["label"].dtype == np.int32 and example["patient"] == missing_patient
  for exam in range(4):
    if example["present"][exam]:
      np.testing.assert_array_equal(example["volumes"][exam, ..., 0], cohort.volume(missing_patient, exam, 1))
    else:
      assert not example["volumes"][exam].any()
  with pytest.raises(ConfigError, match="sequence=2"):
    PatientSource(cohort, sequence=2)


def test_missing_exams_follow_the_rate_and_never_all(large_cohort):
  present = np.array([record["present"] for record in large_cohort])
  assert abs((~present).mean() - 0.25) < 0.035  # 1600 exams: 3.2 standard errors
  assert present.any(axis=1).all()
  mostly_missing = KidneyCohort("test", 200, SIZE, missing_rate=0.9)
  counts = np.array([mostly_missing.patient(index)["present"].sum() for index in range(200)])
  assert counts.min() >= 1 and (counts == 1).mean() > 0.5
  assert all(KidneyCohort("train", 20, SIZE, missing_rate=0.0).patient(index)["present"].all() for index in range(20))


def test_labels_follow_the_published_rule_and_health(large_cohort):
  health = np.array([record["health"] for record in large_cohort])
  labels = np.array([record["label"] for record in large_cohort])
  for record in large_cohort:
    days, values = record["creatinine_days"], record["creatinine_values"]
    in_window = [value for day, value in zip(days, values) if 732 - 61 <= day <= 732 + 61]
    assert len(in_window) >= 3
    assert record["creatinine_2y"] == pytest.approx(sum(in_window) / len(in_window))
    assert record["label"] == int(sum(in_window) / len(in_window) > 110)
  assert 0.30 <= labels.mean() <= 0.45
  positive, negative = -health[labels == 1], -health[labels == 0]
  auc = (positive[:, None] > negative[None, :]).mean() + 0.5 * (positive[:, None] == negative[None, :]).mean()
  assert auc > 0.75
  gfr = np.array([np.nanmean(record["gfr"]) for record in large_cohort])
  assert spearman(gfr, health) > 0.7
  # relative spread before M12 (D15's interval is dominated by the post-transplant fall)
  m12 = [record for record in large_cohort if record["present"][3]]
  relative_spread = np.array([record["creatinine_std"][3] / record["creatinine_stats"][3, 1] for record in m12])
  m12_health = np.array([record["health"] for record in m12])
  assert np.median(relative_spread[m12_health < -1]) > 1.5 * np.median(relative_spread[m12_health > 1])


def test_creatinine_statistics_between_consecutive_exams(large_cohort):
  bounds = (-1, 15, 30, 91, 365)
  for record in large_cohort[:20]:
    days, values = record["creatinine_days"], record["creatinine_values"]
    for exam in range(4):
      if not record["present"][exam]:
        continue
      window = [value for day, value in zip(days, values) if bounds[exam] < day <= bounds[exam + 1]]
      mean = sum(window) / len(window)
      std = (sum((value - mean) ** 2 for value in window) / (len(window) - 1)) ** 0.5
      middle = sorted(window)[(len(window) - 1) // 2 : len(window) // 2 + 1]
      expected = [len(window), mean, sum(middle) / len(middle), std, min(window), max(window)]
      np.testing.assert_allclose(record["creatinine_stats"][exam], expected, rtol=1e-6)
      assert record["creatinine_std"][exam] == record["creatinine_stats"][exam, 3]


def test_volumes_carry_the_health_signal():
  cohort = KidneyCohort("train", 120, SIZE, num_sequences=2)
  health = np.array([cohort.patient(index)["health"] for index in range(120)])
  for sequence in range(2):
    bright = np.array([(cohort.volume(index, 3, sequence) > 0.7).mean() for index in range(120)])
    assert spearman(bright, health) < -0.5, sequence


def expected_preprocessing(volume: np.ndarray) -> np.ndarray:
  scores = np.clip((volume - volume.mean()) / volume.std(ddof=1), -5, 5)
  return (scores - scores.min()) / (scores.max() - scores.min())


def test_preprocessing_matches_numpy_and_centres_like_torchio():
  rng = np.random.default_rng(0)
  volume = rng.normal(3.0, 2.0, size=(5, 11, 8))
  volume[0, 0, 0] = 500.0  # z-score far above 5: clipped, then the maximum
  rescaled = expected_preprocessing(volume)
  assert rescaled[0, 0, 0] == 1.0 and np.sort(rescaled.ravel())[-2] < 0.6
  # 5 → 8 pads 2 before and 1 after; 11 → 8 crops 2 at the start and 1 at the end (torchio: ceil, floor)
  expected = np.zeros((8, 8, 8))
  expected[2:7] = rescaled[:, 2:10, :]
  np.testing.assert_allclose(preprocess_volume(volume, 8), expected, atol=1e-6)
  odd = rng.normal(size=(6, 13, 9))
  expected = np.zeros((8, 8, 8))
  expected[1:7] = odd[:, 3:11, 1:9]
  np.testing.assert_array_equal(crop_or_pad(odd, 8), expected)
  np.testing.assert_array_equal(crop_or_pad(odd, 6)[:, :, :], odd[:, 4:10, 2:8])
  assert preprocess_volume(volume, 8).dtype == np.float32
  assert not preprocess_volume(np.full((4, 4, 4), 7.0), 8).any()


def test_sequence_keyword_rule():
  assert [sequence_key(name) for name in sorted(SEQUENCE_DIRS)] == ["WATER-1", "WATER-2", "TUB"]
  assert sequence_key("7_WATER_AX_LAVA-Flex_TUB_late") == "TUB"
  assert sequence_key("4_T2_COR") is None and sequence_key("5_WATER_AX_T1") is None


def test_nifti_tree_round_trip(tmp_path):
  cohort = KidneyCohort("train", 6, SIZE, missing_rate=0.3, num_sequences=2, seed=3)
  root = write_nifti_tree(cohort, tmp_path / "cohort")
  records = [cohort.patient(index) for index in range(6)]
  assert not all(record["present"].all() for record in records)
  first_present = int(np.flatnonzero(records[0]["present"])[0])
  folder = root / records[0]["patient_id"] / EXAMS[first_present] / SEQUENCE_DIRS[0]
  (path,) = folder.iterdir()
  stored = nibabel.load(path).get_fdata(dtype=np.float32)
  np.testing.assert_array_equal(stored, cohort.volume(0, first_present, 0).transpose(2, 1, 0))  # (x, y, z) = (W, H, D)

  real = NiftiKidneyCohort(root, SIZE, sequence_keys=("TUB", "WATER-1"))
  assert len(real) == 6 and real.num_sequences == 2
  for index, record in enumerate(records):
    read = real.patient(index)
    assert np.isnan(read["health"])
    assert_records_equal(read, record, skip=("health",))
    for exam in np.flatnonzero(record["present"]):
      for sequence in range(2):
        expected = preprocess_volume(cohort.volume(index, int(exam), sequence), SIZE)
        np.testing.assert_allclose(real.volume(index, int(exam), sequence), expected, atol=1e-6)
  cropped = NiftiKidneyCohort(root, 12)  # the tubular phase alone, cropped
  np.testing.assert_allclose(
    cropped.volume(0, first_present, 0), preprocess_volume(cohort.volume(0, first_present, 0), 12), atol=1e-6
  )
  missing_exam = next(
    (index, int(np.flatnonzero(~r["present"])[0])) for index, r in enumerate(records) if not r["present"].all()
  )
  with pytest.raises(DataError, match="has no exam"):
    real.volume(*missing_exam, 0)

  volumes, real_volumes = VolumeSource(cohort), VolumeSource(real)
  assert len(volumes) == len(real_volumes)
  item, real_item = volumes[3], real_volumes[3]
  assert real_item.keys() == item.keys()
  for key in item.keys() - {"volume"}:
    np.testing.assert_array_equal(real_item[key], item[key], err_msg=key)
    assert real_item[key].dtype == item[key].dtype, key
  np.testing.assert_allclose(real_item["volume"][..., 0], preprocess_volume(item["volume"][..., 0], SIZE), atol=1e-6)
  patient = PatientSource(real, sequence=1)[missing_exam[0]]
  np.testing.assert_array_equal(patient["present"], records[missing_exam[0]]["present"])
  assert not patient["volumes"][missing_exam[1]].any()


def test_cohort_from_config(tmp_path):
  keys = {"root": "", "train_patients": 4, "test_patients": 2, "volume_size": 8, "missing_rate": 0.0}
  data = ml_collections.ConfigDict(keys | {"num_sequences": 1, "seed": 2})
  embedded = cohort_from_config(data, "test")
  assert isinstance(embedded, KidneyCohort) and len(embedded) == 2 and embedded.seed == 2
  real_cohort = KidneyCohort("train", 6, 8, missing_rate=0.0, num_sequences=1)
  data.root = str(write_nifti_tree(real_cohort, tmp_path / "real"))
  train, test = cohort_from_config(data, "train"), cohort_from_config(data, "test")
  ids = [cohort.patient(index)["patient_id"] for cohort in (train, test) for index in range(len(cohort))]
  assert len(train) == 4 and len(test) == 2 and len(set(ids)) == 6
  index = [real_cohort.patient(index)["patient_id"] for index in range(6)].index(ids[0])
  np.testing.assert_allclose(train.volume(0, 0, 0), preprocess_volume(real_cohort.volume(index, 0, 0), 8), atol=1e-6)
  data.test_patients = 3
  with pytest.raises(ConfigError, match="summing to at most 6"):
    cohort_from_config(data, "train")


def write_small_tree(tmp_path):
  return write_nifti_tree(KidneyCohort("test", 2, 8, missing_rate=0.0, num_sequences=1), tmp_path / "small")


def test_loader_errors(tmp_path):
  with pytest.raises(DataError, match="absent is not a folder"):
    NiftiKidneyCohort(tmp_path / "absent", SIZE)
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="holds no patient folders"):
    NiftiKidneyCohort(tmp_path / "empty", SIZE)

  root = write_small_tree(tmp_path)
  targets = (root / "df_targets.csv").read_text()
  (root / "df_targets.csv").unlink()
  with pytest.raises(DataError, match="df_targets.csv is missing; write it with the columns patient, GFR D15"):
    NiftiKidneyCohort(root, SIZE)
  (root / "df_targets.csv").write_text(targets)
  biological = (root / "df_biological_data.csv").read_text()
  (root / "df_biological_data.csv").write_text(biological.replace("sCreatinine", "creatinine"))
  with pytest.raises(DataError, match=r"df_biological_data.csv lacks the columns \['sCreatinine'\]"):
    NiftiKidneyCohort(root, SIZE)
  (root / "df_biological_data.csv").write_text(biological)
  (root / "002-9999-A-A").mkdir()
  with pytest.raises(DataError, match="002-9999-A-A has no row in .*df_biological_data.csv"):
    NiftiKidneyCohort(root, SIZE)
  (root / "002-9999-A-A").rmdir()

  exam_dir = root / "002-0001-A-A" / "D15"
  (path,) = (exam_dir / SEQUENCE_DIRS[0]).iterdir()
  path.write_bytes(b"not a nifti file")
  with pytest.raises(DataError, match="cannot be read as NIfTI"):
    NiftiKidneyCohort(root, SIZE).volume(0, 0, 0)
  nibabel.save(nibabel.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), path)
  with pytest.raises(DataError, match=r"holds a 4-D volume of shape \(8, 8, 8, 2\)"):
    NiftiKidneyCohort(root, SIZE).volume(0, 0, 0)
  (exam_dir / "4_T2_COR").mkdir()
  (exam_dir / "5_T2_COR").mkdir()  # unselected sequences may repeat
  assert NiftiKidneyCohort(root, SIZE).patient(0)["present"].all()
  (exam_dir / "9_WATER_AX_LAVA-Flex_tub_copy").mkdir()
  with pytest.raises(DataError, match="are both sequence TUB"):
    NiftiKidneyCohort(root, SIZE)


@pytest.mark.parametrize(
  ("arguments", "message"),
  [
    ({"num_patients": 0}, "num_patients=0"),
    ({"missing_rate": 1.0}, "missing_rate=1.0"),
    ({"missing_rate": -0.1}, "missing_rate=-0.1"),
    ({"volume_size": 4}, "volume_size=4"),
    ({"split": "val"}, "unknown split"),
    ({"num_sequences": 4}, "num_sequences=4"),
  ],
)
def test_bad_cohort_arguments(arguments, message):
  with pytest.raises(ConfigError, match=message):
    KidneyCohort(**({"split": "train", "num_patients": 2} | arguments))
