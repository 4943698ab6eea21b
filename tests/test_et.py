"""The released E.T. layout: an independent fixture writer, the loader against the embedded items, validation,
re-tagging, the exporter, errors naming files, and Director / CLaTr training on it."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import clatr as clatr_config, director as director_config
from storyjax import train as train_lib
from storyjax.data import et, procedural_et
from storyjax.errors import DataError

from conftest import REPO_ROOT

MAX_FRAMES, MIN_FRAMES = 64, 56


def write_fixture(root: pathlib.Path, subset: str, split: str, indices, clip_dim: int | None = None) -> list[str]:
  """Writes procedural samples with plain numpy exactly as the released files are laid out."""
  ids = []
  for index in indices:
    sample = procedural_et.generate_sample(0, subset, split, index, MAX_FRAMES, MIN_FRAMES)
    sample_id = sample["id"]
    ids.append(sample_id)
    for folder in ("traj", "char", "cam_segments", "caption", "caption_cam"):
      (root / folder).mkdir(parents=True, exist_ok=True)
    np.savetxt(root / "traj" / f"{sample_id}.txt", sample["camera_pose"].reshape(-1, 12), fmt="%.6e")
    np.save(root / "char" / f"{sample_id}.npy", sample["char_pos"])
    np.save(root / "cam_segments" / f"{sample_id}.npy", sample["cam_segments"])
    (root / "caption" / f"{sample_id}.txt").write_text(sample["caption"])
    (root / "caption_cam" / f"{sample_id}.txt").write_text(sample["caption_cam"])
    if clip_dim:
      length = 5 + index
      seq = np.random.default_rng(index).normal(size=(length, clip_dim)).astype(np.float32)
      for kind, array in (("seq", seq), ("token", seq[-1])):
        (root / "caption_clip" / kind).mkdir(parents=True, exist_ok=True)
        np.save(root / "caption_clip" / kind / f"{sample_id}.npy", array)
  (root / f"{subset}_{split}_split.txt").write_text("\n".join(ids))
  return ids


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("et")
  write_fixture(root, "pure", "train", range(4), clip_dim=8)
  write_fixture(root, "pure", "test", range(2), clip_dim=8)
  return root


def test_items_equal_the_embedded_ones(fixture_root):
  source = et.ETSource(fixture_root, "pure", "train", max_frames=MAX_FRAMES)
  embedded = procedural_et.EmbeddedET("pure", "train", 4, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES)
  assert len(source) == 4 and source.has_clip_features
  for index in range(4):
    ours, reference = source[index], embedded[index]
    assert set(reference) <= set(ours)
    np.testing.assert_allclose(ours["camera_traj"], reference["camera_traj"], atol=2e-4)  # "%.6e" text
    np.testing.assert_allclose(ours["char_traj"], reference["char_traj"], atol=1e-5)
    for key in ("mask", "num_frames", "cam_classes", "caption", "caption_cam", "id"):
      np.testing.assert_array_equal(ours[key], reference[key])
    length = 5 + index
    assert ours["caption_clip_seq"].shape == (77, 8) and ours["caption_clip_mask"].sum() == length
    assert np.all(ours["caption_clip_seq"][length:] == 0)


def test_frames_beyond_max_frames_are_cut(fixture_root):
  source = et.ETSource(fixture_root, "pure", "train", max_frames=40)
  item = source[0]
  assert item["camera_traj"].shape == (40, 9) and item["num_frames"] == 40 and item["mask"].all()


def test_validate_and_retag(fixture_root, tmp_path):
  summary = et.validate(fixture_root, retag=True)
  assert summary["num_samples"] == 6
  assert summary["splits"] == {"pure_test_split.txt": 2, "pure_train_split.txt": 4}
  frames = [len(procedural_et.generate_sample(0, "pure", split, i, MAX_FRAMES, MIN_FRAMES)["camera_pose"])
            for split, count in (("train", 4), ("test", 2)) for i in range(count)]
  assert summary["frames"]["total"] == sum(frames) and summary["frames"]["max"] == max(frames)
  assert sum(summary["camera_classes"].values()) == sum(frames) - 6
  # Our generator's segments survive E.T.'s smoothing and merging except within a few steps of a boundary.
  assert 0.97 < summary["cam_tag_agreement"] <= 1.0

  exported = tmp_path / "exported"
  et.export_embedded(exported, "pure", {"train": 3, "test": 2}, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES)
  exported_summary = et.validate(exported, retag=True)
  assert exported_summary["cam_tag_agreement"] == 1.0 and exported_summary["char_tag_agreement"] == 1.0
  assert not (exported / "pure_train_split.txt").read_text().endswith("\n")
  sample_id = (exported / "pure_train_split.txt").read_text().split("\n")[0]
  assert np.load(exported / "intrinsics" / f"{sample_id}.npy").dtype == np.float16
  segments = np.load(exported / "cam_segments" / f"{sample_id}.npy")
  segments[: len(segments) // 2] = (segments[0] + 1) % 27
  np.save(exported / "cam_segments" / f"{sample_id}.npy", segments)
  assert et.validate(exported, retag=True)["cam_tag_agreement"] < 1.0


@pytest.mark.parametrize("damage, message", [
    (lambda root, i: (root / "traj" / f"{i}.txt").write_text("1 2 3\n"), "traj/{}.txt"),
    (lambda root, i: (root / "char" / f"{i}.npy").unlink(), "char/{}.npy"),
    (lambda root, i: np.save(root / "char" / f"{i}.npy", np.zeros((3, 3))), "char/{}.npy"),
    (lambda root, i: np.save(root / "cam_segments" / f"{i}.npy", np.zeros(2, np.int64)), "cam_segments/{}.npy"),
    (lambda root, i: (root / "caption" / f"{i}.txt").unlink(), "caption/{}.txt"),
    (lambda root, i: np.save(root / "caption_clip" / "seq" / f"{i}.npy", np.zeros((80, 8))), "caption_clip/seq"),
    (lambda root, i: (root / "pure_train_split.txt").write_text(f"{i}\n"), "pure_train_split.txt"),
])
def test_errors_name_the_file(tmp_path, damage, message):
  ids = write_fixture(tmp_path, "pure", "train", range(1), clip_dim=8)
  damage(tmp_path, ids[0])
  with pytest.raises(DataError, match=message.format(ids[0]).replace(".", r"\.")):
    et.ETSource(tmp_path, "pure", "train", max_frames=MAX_FRAMES)[0]


def test_missing_directory_and_split():
  with pytest.raises(DataError, match="not found: /nonexistent"):
    et.ETSource("/nonexistent", "pure", "train")
  with pytest.raises(DataError, match="no split"):
    et.split_file(pathlib.Path("."), "pure", "val")


def test_cli_prints_json_last(fixture_root):
  result = subprocess.run([sys.executable, "-m", "storyjax.data.et", f"--path={fixture_root}", "--retag"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary["num_samples"] == 6 and "cam_tag_agreement" in summary
  result = subprocess.run([sys.executable, "-m", "storyjax.data.et", "--path=/nonexistent"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: E.T. dataset")


def test_director_and_clatr_train_on_the_layout(runs_dir, fixture_root):
  """Precomputed CLIP features present: `text_encoder=clip` trains with no CLIP weights at all."""
  for name, config in (("director", director_config.get_config("smoke")), ("clatr", clatr_config.get_config("smoke"))):
    config.mesh.update({"data": 1})
    config.batch_size = 4
    config.total_steps = 2
    config.data.update({"source": "et", "path": str(fixture_root), "subset": "pure"})
    config.model.text_encoder = "clip"
    if name == "clatr":
      config.data.caption = "caption"
    train_lib.train(config, runs_dir / f"et_{name}")
    assert len((runs_dir / f"et_{name}" / "metrics.jsonl").read_text().splitlines()) == 2
