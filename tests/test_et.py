"""The released E.T. layout: an independent fixture writer, the loader against the embedded items, validation,
re-tagging, the exporter, errors naming files, the CLI, and Director training on the layout."""

import collections
import itertools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import director as director_config
from storyjax import train as train_lib
from storyjax.data.et import camera, procedural, tagging
from storyjax.data.et import layout as et
from storyjax.errors import ConfigError, DataError
from storyjax.text.caption_inputs import CaptionInputs

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fast_compile")  # the Director training below is mostly compilation

MAX_FRAMES, MIN_FRAMES = 64, 56
CLIP_DIM = 8


def write_fixture(
  root: pathlib.Path,
  subset: str,
  split: str,
  indices,
  max_frames: int = MAX_FRAMES,
  min_frames: int = MIN_FRAMES,
  clip: bool = True,
) -> list[str]:
  """Writes procedural samples with plain numpy as the released files are laid out (segments = generator truth);
  caption_clip/seq of sample i has 5 + i rows of seeded noise and token = its last row."""
  ids = []
  for index in indices:
    sample = procedural.generate_sample(0, subset, split, index, max_frames, min_frames)
    sample_id = sample["id"]
    ids.append(sample_id)
    for folder in ("traj", "char", "cam_segments", "caption", "caption_cam"):
      (root / folder).mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "traj" / f"{sample_id}.txt", sample["camera_pose"].reshape(-1, 12), fmt="%.6e")
    np.save(root / "char" / f"{sample_id}.npy", sample["char_pos"])
    np.save(root / "cam_segments" / f"{sample_id}.npy", sample["cam_segments"])
    (root / "caption" / f"{sample_id}.txt").write_text(sample["caption"])
    (root / "caption_cam" / f"{sample_id}.txt").write_text(sample["caption_cam"])
    if clip:
      seq = np.random.default_rng(index).normal(size=(5 + index, CLIP_DIM)).astype(np.float32)
      for kind, array in (("seq", seq), ("token", seq[-1])):
        (root / "caption_clip" / kind).mkdir(parents=True, exist_ok=True)
        np.save(root / "caption_clip" / kind / f"{sample_id}.npy", array)
  (root / f"{subset}_{split}_split.txt").write_text("\n".join(ids))
  return ids


def assert_camera_traj_close(ours, reference, camera_pose):
  """ "%.6e" keeps 7 significant digits, so each stored number is off by ≤ 5e-7 of its size; a per-frame Δt is off by
  twice the largest centre error, divided by the velocity std in the feature."""
  np.testing.assert_allclose(ours[:, :6], reference[:, :6], rtol=0, atol=1e-6)
  text_error = 5e-7 * np.abs(camera_pose[:, :, 3]).max()
  np.testing.assert_allclose(
    ours[:, 6:], reference[:, 6:], rtol=0, atol=2 * text_error / camera.CAM_VEL_STD.min() + 1e-6
  )


def assert_items_match(source, embedded, subset, split, extra_keys=()):
  """source[i] == embedded[i] for every i: same keys (plus extra_keys), dtypes and shapes; values as documented."""
  assert len(source) == len(embedded)
  for index in range(len(source)):
    ours, reference = source[index], embedded[index]
    assert set(ours) == set(reference) | set(extra_keys)
    for key, value in reference.items():
      assert np.asarray(ours[key]).dtype == np.asarray(value).dtype and np.shape(ours[key]) == np.shape(value), key
    poses = procedural.generate_sample(embedded.seed, subset, split, index, embedded.max_frames, embedded.min_frames)[
      "camera_pose"
    ]
    assert_camera_traj_close(ours["camera_traj"], reference["camera_traj"], poses)
    for key in ("char_traj", "mask", "num_frames", "cam_classes", "caption", "caption_cam", "id"):
      np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("et")
  write_fixture(root, "pure", "train", range(4))
  write_fixture(root, "pure", "test", range(2))
  return root


def test_items_equal_the_embedded_ones(fixture_root):
  source = et.ETSource(fixture_root, "pure", "train", max_frames=MAX_FRAMES)
  embedded = procedural.EmbeddedET("pure", "train", 4, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES)
  assert_items_match(
    source, embedded, "pure", "train", extra_keys=("caption_clip_seq", "caption_clip_mask", "caption_clip_token")
  )
  for index in range(4):
    item, length = source[index], 5 + index
    seq = np.random.default_rng(index).normal(size=(length, CLIP_DIM)).astype(np.float32)
    np.testing.assert_array_equal(item["caption_clip_seq"], np.pad(seq, ((0, 77 - length), (0, 0))))
    np.testing.assert_array_equal(item["caption_clip_mask"], np.arange(77) < length)
    np.testing.assert_array_equal(item["caption_clip_token"], seq[-1])
  camera_only = et.ETSource(fixture_root, "pure", "train", max_frames=MAX_FRAMES, caption="caption_cam")
  assert not any("clip" in key for key in camera_only[0])


def _run_classes(steps) -> list[int]:
  return [int(label) for label, _ in itertools.groupby(steps)]


def test_truncation_keeps_the_runs_of_the_kept_steps(tmp_path):
  """A mixed sample cut inside its first or second camera segment keeps one or two runs; max_segments=1 cannot
  shorten a sample's runs."""
  write_fixture(tmp_path, "mixed", "train", range(1), max_frames=150, min_frames=150, clip=False)
  sample = procedural.generate_sample(0, "mixed", "train", 0, 150, 150)
  segments = sample["cam_segments"]
  second_start = int(np.flatnonzero(np.diff(segments))[0]) + 1
  max_frames = second_start + 5
  item = et.ETSource(tmp_path, "mixed", "train", max_frames=max_frames)[0]
  embedded = procedural.EmbeddedET("mixed", "train", 1, max_frames=150, min_frames=150)[0]
  assert item["num_frames"] == max_frames and item["mask"].all()
  assert_camera_traj_close(item["camera_traj"], embedded["camera_traj"][:max_frames], sample["camera_pose"])
  np.testing.assert_array_equal(item["char_traj"], embedded["char_traj"][:max_frames])
  np.testing.assert_array_equal(item["cam_classes"], [*_run_classes(segments[: max_frames - 1]), 27])
  first_only = et.ETSource(tmp_path, "mixed", "train", max_frames=second_start - 5)[0]
  np.testing.assert_array_equal(first_only["cam_classes"], [segments[0], 27, 27])
  full = et.ETSource(tmp_path, "mixed", "train", max_frames=150, max_segments=1)[0]
  np.testing.assert_array_equal(full["cam_classes"], _run_classes(segments))
  assert len(full["cam_classes"]) == len(sample["cam_classes"]) > 1


def test_validate_summary_and_retag(fixture_root):
  samples = [
    procedural.generate_sample(0, "pure", split, i, MAX_FRAMES, MIN_FRAMES)
    for split, count in (("train", 4), ("test", 2))
    for i in range(count)
  ]
  frames = [len(sample["camera_pose"]) for sample in samples]
  summary = et.validate(fixture_root, retag=True)
  assert summary["num_samples"] == 6 and summary["num_steps"] == sum(frames) - 6
  assert summary["splits"] == {"pure_test_split.txt": 2, "pure_train_split.txt": 4}
  assert summary["frames"] == {"total": sum(frames), "min": min(frames), "mean": np.mean(frames), "max": max(frames)}
  expected = collections.Counter(tagging.CAMERA_CLASS_NAMES[c] for sample in samples for c in sample["cam_segments"])
  assert summary["camera_classes"] == dict(expected)
  assert summary["optional_folders"] == ["caption_cam", "caption_clip"] and summary["clip_features"] == ["caption"]
  # A pure sample's one generated segment survives E.T.'s tagger step for step.
  assert summary["cam_tag_agreement"] == 1.0 and "char_tag_agreement" not in summary
  assert "cam_tag_agreement" not in et.validate(fixture_root)


def fake_clip_features(captions):
  """Stands in for CLIP: (N, 77, 4) features seeded by the caption's length, mask True on 2 + words tokens."""
  lengths = np.array([len(caption.split()) + 2 for caption in captions])
  features = np.stack([np.random.default_rng(len(caption)).normal(size=(77, 4)) for caption in captions])
  return features.astype(np.float32), np.arange(77) < lengths[:, None]


def test_exporter_round_trip(tmp_path):
  written = et.export_embedded(
    tmp_path,
    "pure",
    {"train": 3, "test": 2},
    max_frames=MAX_FRAMES,
    min_frames=MIN_FRAMES,
    clip_features=fake_clip_features,
  )
  for split, size in (("train", 3), ("test", 2)):
    embedded = procedural.EmbeddedET("pure", split, size, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES)
    assert_items_match(
      et.ETSource(tmp_path, "pure", split, max_frames=MAX_FRAMES),
      embedded,
      "pure",
      split,
      extra_keys=("caption_clip_seq", "caption_clip_mask", "caption_clip_token"),
    )
  sample = procedural.generate_sample(0, "pure", "train", 0, MAX_FRAMES, MIN_FRAMES)
  sample_id = sample["id"]
  assert (tmp_path / "pure_train_split.txt").read_text().split("\n")[0] == sample_id
  intrinsics = np.load(tmp_path / "intrinsics" / f"{sample_id}.npy")
  assert intrinsics.dtype == np.float16 and np.array_equal(intrinsics, sample["intrinsics"].astype(np.float16))
  char_raw = np.load(tmp_path / "char_raw" / f"{sample_id}.npy")
  np.testing.assert_allclose(char_raw - char_raw[0], sample["char_pos"], atol=1e-12)
  for folder in ("cam_segments", "char_segments"):
    segments = np.load(tmp_path / folder / f"{sample_id}.npy")
    assert segments.dtype == np.int64 and segments.shape == (len(sample["char_pos"]) - 1,)
  assert (tmp_path / "caption_cam" / f"{sample_id}.txt").read_text() == sample["caption_cam"]
  features, mask = fake_clip_features([sample["caption_cam"]])
  seq = np.load(tmp_path / "caption_cam_clip" / "seq" / f"{sample_id}.npy")
  np.testing.assert_array_equal(seq, features[0, : mask.sum()])
  np.testing.assert_array_equal(np.load(tmp_path / "caption_cam_clip" / "token" / f"{sample_id}.npy"), seq[-1])
  camera_only = et.ETSource(tmp_path, "pure", "train", max_frames=MAX_FRAMES, caption="caption_cam")[0]
  np.testing.assert_array_equal(camera_only["caption_cam_clip_seq"][: len(seq)], seq)

  # A mixed export into the same directory: full = pure ∪ mixed, clatr val = the first tenth of full test.
  et.export_embedded(tmp_path, "mixed", {"train": 1, "test": 1}, max_frames=90, clip_features=fake_clip_features)
  mixed_ids = [procedural.generate_sample(0, "mixed", split, 0, 90)["id"] for split in ("train", "test")]
  assert_items_match(
    et.ETSource(tmp_path, "mixed", "train", max_frames=90),
    procedural.EmbeddedET("mixed", "train", 1, max_frames=90),
    "mixed",
    "train",
    extra_keys=("caption_clip_seq", "caption_clip_mask", "caption_clip_token"),
  )
  full_train = written["pure_train_split.txt"] + mixed_ids[:1]
  full_test = written["pure_test_split.txt"] + mixed_ids[1:]
  splits = {path.name: path.read_text() for path in tmp_path.glob("*_split.txt")}
  assert not any(text.endswith("\n") for text in splits.values())
  assert splits["full_train_split.txt"].split("\n") == splits["clatr_train_split.txt"].split("\n") == full_train
  assert splits["full_test_split.txt"].split("\n") == full_test
  assert splits["clatr_val_split.txt"].split("\n") == full_test[:1]
  assert splits["clatr_test_split.txt"].split("\n") == full_test[1:]
  assert len(et.ETSource(tmp_path, "clatr", "val")) == 1
  assert et.validate(tmp_path)["num_samples"] == 7


def test_retag_agreement_on_the_export(tmp_path):
  et.export_embedded(tmp_path, "pure", {"train": 3, "test": 1}, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES)
  summary = et.validate(tmp_path, retag=True)
  assert summary["cam_tag_agreement"] == 1.0 and summary["char_tag_agreement"] == 1.0
  assert summary["optional_folders"] == ["char_raw", "intrinsics", "char_segments", "caption_cam", "bounds"]
  sample_id = (tmp_path / "pure_train_split.txt").read_text().split("\n")[0]
  segments = np.load(tmp_path / "cam_segments" / f"{sample_id}.npy")
  segments[:10] = (segments[:10] + 1) % 27
  np.save(tmp_path / "cam_segments" / f"{sample_id}.npy", segments)
  corrupted = et.validate(tmp_path, retag=True)
  assert corrupted["cam_tag_agreement"] == pytest.approx(1 - 10 / summary["num_steps"], abs=1e-12)
  assert corrupted["char_tag_agreement"] == 1.0


def test_export_refuses_duplicate_ids(tmp_path, monkeypatch):
  first_id = procedural.generate_sample(0, "pure", "train", 0, MAX_FRAMES)["id"]
  (tmp_path / "mixed_test_split.txt").write_text(first_id)
  with pytest.raises(DataError, match=f"{first_id}, already in mixed_test_split.txt"):
    et.export_embedded(tmp_path, "pure", {"train": 1}, max_frames=MAX_FRAMES)
  generate = procedural.generate_sample
  monkeypatch.setattr(procedural, "generate_sample", lambda *args: {**generate(*args), "id": "same"})
  with pytest.raises(DataError, match="already in this export"):
    et.export_embedded(tmp_path / "other", "pure", {"train": 2}, max_frames=MAX_FRAMES)
  with pytest.raises(ConfigError, match="split_sizes"):
    et.export_embedded(tmp_path, "pure", {"val": 1})


def _save(path, array):
  np.save(path, array)


def _rescaled_traj(root, sample_id):
  poses = np.loadtxt(root / "traj" / f"{sample_id}.txt").reshape(-1, 3, 4)
  poses[3, :, :3] *= 1.1
  np.savetxt(root / "traj" / f"{sample_id}.txt", poses.reshape(-1, 12), fmt="%.6e")


@pytest.mark.parametrize(
  "damage, message",
  [
    (lambda root, i: (root / "traj" / f"{i}.txt").unlink(), "missing E.T. file .*traj/{}.txt"),
    (lambda root, i: (root / "traj" / f"{i}.txt").write_text("1 2 3\n"), "traj/{}.txt, line 1: expected 12"),
    (_rescaled_traj, "traj/{}.txt, line 4: the rotation is not orthonormal"),
    (lambda root, i: (root / "char" / f"{i}.npy").unlink(), "missing E.T. file .*char/{}.npy"),
    (lambda root, i: _save(root / "char" / f"{i}.npy", np.zeros((MIN_FRAMES, 2))), r"char/{}.npy has shape \(56, 2\)"),
    (lambda root, i: _save(root / "char" / f"{i}.npy", np.zeros((3, 3))), r"char/{}.npy has shape \(3, 3\)"),
    (lambda root, i: _save(root / "cam_segments" / f"{i}.npy", np.zeros(2, np.int64)), "cam_segments/{}.npy"),
    (lambda root, i: _save(root / "cam_segments" / f"{i}.npy", np.zeros(55)), "cam_segments/{}.npy has dtype float"),
    (lambda root, i: (root / "caption" / f"{i}.txt").unlink(), "missing E.T. file .*caption/{}.txt"),
    (lambda root, i: (root / "caption_cam" / f"{i}.txt").unlink(), "missing E.T. file .*caption_cam/{}.txt"),
    (lambda root, i: _save(root / "caption_clip" / "seq" / f"{i}.npy", np.zeros((80, 8))), "caption_clip/seq/{}.npy"),
    (lambda root, i: _save(root / "caption_clip" / "seq" / f"{i}.npy", np.zeros(8)), "caption_clip/seq/{}.npy"),
    (lambda root, i: (root / "caption_clip" / "seq" / f"{i}.npy").unlink(), "missing .*caption_clip/seq/{}.npy"),
    (lambda root, i: _save(root / "caption_clip" / "token" / f"{i}.npy", np.zeros(7)), "caption_clip/token/{}.npy"),
    (lambda root, i: (root / "pure_train_split.txt").write_text(f"{i}\n"), r"_train_split.txt has empty lines \[2\]"),
    (lambda root, i: (root / "pure_train_split.txt").write_text(f"{i}\n\n{i}"), "pure_train_split.txt has empty"),
    (lambda root, i: (root / "pure_train_split.txt").unlink(), "split file not found: .*pure_train_split.txt"),
  ],
)
def test_errors_name_the_file(tmp_path, damage, message):
  sample_id = write_fixture(tmp_path, "pure", "train", range(1), min_frames=MIN_FRAMES, max_frames=MIN_FRAMES)[0]
  damage(tmp_path, sample_id)
  pattern = message.format(sample_id)
  with pytest.raises(DataError, match=pattern):
    et.ETSource(tmp_path, "pure", "train", max_frames=MAX_FRAMES)[0]
  if list(tmp_path.glob("*_split.txt")):
    with pytest.raises(DataError, match=pattern):
      et.validate(tmp_path)


@pytest.mark.parametrize(
  "damage, message",
  [
    (
      lambda root, i: _save(root / "caption_clip" / "token" / f"{i}.npy", np.ones(CLIP_DIM, np.float32)),
      "caption_clip/token/{0}.npy differs from the last row of .*caption_clip/seq/{0}.npy",
    ),
    (lambda root, i: _save(root / "intrinsics" / f"{i}.npy", np.ones(3, np.float16)), "intrinsics/{}.npy"),
    (lambda root, i: _save(root / "cam_segments" / f"{i}.npy", np.full(MIN_FRAMES - 1, 30)), "cam_segments/{}.npy"),
  ],
)
def test_validate_checks_more_than_the_loader(tmp_path, damage, message):
  sample_id = write_fixture(tmp_path, "pure", "train", range(1), min_frames=MIN_FRAMES, max_frames=MIN_FRAMES)[0]
  (tmp_path / "intrinsics").mkdir()
  np.save(tmp_path / "intrinsics" / f"{sample_id}.npy", np.ones(4, np.float16))
  et.validate(tmp_path)
  damage(tmp_path, sample_id)
  with pytest.raises(DataError, match=message.format(sample_id)):
    et.validate(tmp_path)


def test_missing_directory_and_unknown_split(tmp_path):
  with pytest.raises(DataError, match="not found: /nonexistent"):
    et.ETSource("/nonexistent", "pure", "train")
  with pytest.raises(DataError, match="no \\*_split.txt files"):
    et.validate(tmp_path)
  with pytest.raises(ConfigError, match="no split 'pure'/'val'"):
    et.ETSource(tmp_path, "pure", "val")
  with pytest.raises(ConfigError, match="caption='text'"):
    et.ETSource(tmp_path, "pure", "train", caption="text")


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "storyjax.data.et", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
  )


def test_cli(tmp_path):
  exported = _cli(f"--export={tmp_path}", "--train_size=2", "--test_size=1", "--max_frames=64")
  assert exported.returncode == 0, exported.stderr
  assert json.loads(exported.stdout.splitlines()[-1])["splits"]["pure_train_split.txt"] == 2
  validated = _cli(f"--path={tmp_path}", "--retag")
  assert validated.returncode == 0, validated.stderr
  summary = json.loads(validated.stdout.splitlines()[-1])
  assert summary["num_samples"] == 3 and summary["cam_tag_agreement"] == 1.0 and summary["num_steps"] > 0


def test_precomputed_clip_features_need_no_clip_weights(runs_dir, fixture_root):
  """CaptionInputs takes the item's `<caption>_clip_*` features as they are, and Director trains on the layout with
  text_encoder=clip and no CLIP checkpoint (clip_path empty)."""
  item = et.ETSource(fixture_root, "pure", "train", max_frames=MAX_FRAMES)[1]
  features, mask = CaptionInputs("clip", 77, caption_key="caption")(item)
  np.testing.assert_array_equal(features, item["caption_clip_seq"])
  np.testing.assert_array_equal(mask, item["caption_clip_mask"])
  config = director_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.batch_size, config.total_steps = 4, 2
  config.data.update({"source": "et", "path": str(fixture_root), "subset": "pure"})
  config.model.text_encoder = "clip"
  train_lib.train(config, runs_dir / "et_director")
  assert len((runs_dir / "et_director" / "metrics.jsonl").read_text().splitlines()) == 2
