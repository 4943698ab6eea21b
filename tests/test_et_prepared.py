"""The prepared E.T. form: every item of every split equals ETSource's (keys, order, types, dtypes, values), for
each caption key, with and without CLIP features; trajectory_source, Grain and pickling; errors naming the file;
the CLI and the benchmark script."""

import json
import pickle
import shutil
import subprocess
import sys

from array_record.python import array_record_module
import ml_collections
import numpy as np
import pytest

from storyjax.data import pipeline
from storyjax.data.et import layout as et
from storyjax.data.et import prepared
from storyjax.data.et.sources import trajectory_source
from storyjax.errors import ConfigError, DataError

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fast_compile")

MAX_FRAMES, MIN_FRAMES = 64, 56
SPLIT_SIZES = {"pure": {"train": 5, "test": 3}, "mixed": {"train": 2, "test": 2}}
EXPORT_FRAMES = {"pure": (MAX_FRAMES, MIN_FRAMES), "mixed": (90, 81)}  # mixed items are cut to MAX_FRAMES
NUM_RECORDS = 12  # pure ∪ mixed; full and clatr re-split them
BUILD_HINT = "python -m storyjax.data.et --path=ET_DATA_DIR --prepare="


def fake_clip_features(captions):
  """Stands in for CLIP: (N, 77, 4) features seeded by the caption's length, mask True on 2 + words tokens."""
  lengths = np.array([len(caption.split()) + 2 for caption in captions])
  features = np.stack([np.random.default_rng(len(caption)).normal(size=(77, 4)) for caption in captions])
  return features.astype(np.float32), np.arange(77) < lengths[:, None]


def assert_identical(ours: dict, reference: dict) -> None:
  """Same keys in the same order, same Python/numpy types, dtypes, shapes and values; arrays writable."""
  assert list(ours) == list(reference)
  for key, value in reference.items():
    assert type(ours[key]) is type(value), key
    if isinstance(value, (np.ndarray, np.generic)):
      assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
      np.testing.assert_array_equal(ours[key], value, err_msg=key)
    else:
      assert ours[key] == value, key
    if isinstance(value, np.ndarray):
      assert ours[key].flags.writeable, key


def assert_sources_identical(ours, reference) -> None:
  assert len(ours) == len(reference)
  for index in range(len(reference)):
    assert_identical(ours[index], reference[index])


def split_pairs(root):
  return [
    (subset, split)
    for subset, splits in et.SUBSET_SPLITS.items()
    for split in splits
    if et.split_file(root, subset, split).is_file()
  ]


@pytest.fixture(scope="module")
def layout_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("et_layout")
  for subset, sizes in SPLIT_SIZES.items():
    max_frames, min_frames = EXPORT_FRAMES[subset]
    et.export_embedded(
      root, subset, sizes, max_frames=max_frames, min_frames=min_frames, clip_features=fake_clip_features
    )
  return root


@pytest.fixture(scope="module")
def prepared_root(layout_root, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("et_prepared")  # empty, as prepare wants it
  prepared.prepare(layout_root, out_dir, max_frames=MAX_FRAMES, records_per_shard=3)
  return out_dir


def test_items_equal_etsource_for_every_split_and_caption(layout_root, prepared_root):
  pairs = split_pairs(layout_root)
  assert len(pairs) == 9  # pure, mixed, full: train/test; clatr: train/val/test
  for subset, split in pairs:
    for caption in et.CAPTION_KEYS:
      ours = prepared.PreparedETSource(prepared_root, subset, split, max_frames=MAX_FRAMES, caption=caption)
      reference = et.ETSource(layout_root, subset, split, max_frames=MAX_FRAMES, caption=caption)
      assert f"{caption}_clip_seq" in reference[0]
      assert_sources_identical(ours, reference)
  metadata = json.loads((prepared_root / "metadata.json").read_text())
  assert metadata["num_records"] == NUM_RECORDS and metadata["source"] == str(layout_root.resolve())
  assert [shard["records"] for shard in metadata["shards"]] == [3, 3, 3, 3]
  assert sorted(path.name for path in prepared_root.glob("*.array_record")) == [
    f"records-{shard:05d}-of-00004.array_record" for shard in range(4)
  ]
  assert metadata["splits"]["full_train"]["size"] == 7 and metadata["splits"]["clatr_val"]["size"] == 1
  assert (metadata["max_frames"], metadata["caption_keys"]) == (MAX_FRAMES, list(et.CAPTION_KEYS))
  # Each sample is stored once: full_train's records are pure_train's followed by mixed_train's.
  index = {name: np.load(prepared_root / split["index"]) for name, split in metadata["splits"].items()}
  np.testing.assert_array_equal(index["full_train"], [0, 1, 2, 3, 4, 8, 9])
  np.testing.assert_array_equal(index["clatr_train"], index["full_train"])


def test_without_clip_features_truncated_and_one_caption(tmp_path):
  layout_root = tmp_path / "layout"
  et.export_embedded(layout_root, "pure", {"train": 3, "test": 1}, max_frames=MAX_FRAMES, min_frames=MIN_FRAMES)
  metadata = prepared.prepare(
    layout_root, tmp_path / "prepared", subsets=["pure"], max_frames=40, caption_keys=["caption_cam"]
  )
  assert sorted(metadata["splits"]) == ["pure_test", "pure_train"] and metadata["num_records"] == 4
  for split in ("train", "test"):
    ours = prepared.PreparedETSource(tmp_path / "prepared", "pure", split, max_frames=40, caption="caption_cam")
    reference = et.ETSource(layout_root, "pure", split, max_frames=40, caption="caption_cam")
    assert reference[0]["num_frames"] == 40 and not any("clip" in key for key in reference[0])
    assert_sources_identical(ours, reference)
  with pytest.raises(ConfigError, match=r"caption='caption', but .*prepared with caption keys \['caption_cam'\]"):
    prepared.PreparedETSource(tmp_path / "prepared", "pure", "train", max_frames=40)
  with pytest.raises(ConfigError, match=r"holds no split 'full'/'train'.*\['pure_test', 'pure_train'\]"):
    prepared.PreparedETSource(tmp_path / "prepared", "full", "train", max_frames=40, caption="caption_cam")


def test_prepare_refuses(layout_root, prepared_root, tmp_path):
  with pytest.raises(DataError, match=f"{prepared_root} exists and is not an empty directory"):
    prepared.prepare(layout_root, prepared_root)
  with pytest.raises(DataError, match="E.T. dataset directory not found: .*missing"):
    prepared.prepare(tmp_path / "missing", tmp_path / "out")
  with pytest.raises(ConfigError, match=r"subsets=\['val'\]"):
    prepared.prepare(layout_root, tmp_path / "out", subsets=["val"])
  with pytest.raises(ConfigError, match="records_per_shard=0"):
    prepared.prepare(layout_root, tmp_path / "out", records_per_shard=0)
  with pytest.raises(ConfigError, match="caption='text'"):
    prepared.prepare(layout_root, tmp_path / "out", caption_keys=["text"])
  et.export_embedded(tmp_path / "pure_only", "pure", {"train": 1}, max_frames=MAX_FRAMES)
  with pytest.raises(DataError, match="split file not found: .*mixed_train_split.txt"):
    prepared.prepare(tmp_path / "pure_only", tmp_path / "out", subsets=["mixed"])


def test_trajectory_source_grain_and_pickle(layout_root, prepared_root):
  data = ml_collections.ConfigDict(
    {
      "source": "et_prepared",
      "path": str(prepared_root),
      "subset": "mixed",
      "max_frames": MAX_FRAMES,
      "caption": "caption_cam",
    }
  )
  source = trajectory_source(data, "test")
  assert isinstance(source, prepared.PreparedETSource) and isinstance(source, pipeline.RandomAccessSource)
  reference = et.ETSource(layout_root, "mixed", "test", max_frames=MAX_FRAMES, caption="caption_cam")
  assert_sources_identical(source, reference)
  assert_sources_identical(pickle.loads(pickle.dumps(source)), reference)  # as Grain's worker processes get it
  keys = ("camera_traj", "caption_cam_clip_seq")
  batches = pipeline.make_train_iterator(
    source, lambda item: {key: item[key] for key in keys}, 4, seed=0, num_threads=2, process_index=0, process_count=1
  )
  batch = next(batches)
  assert batch["camera_traj"].shape == (4, MAX_FRAMES, 9) and batch["caption_cam_clip_seq"].shape == (4, 77, 4)
  rows = {reference[i]["camera_traj"].tobytes() for i in range(len(reference))}
  assert {row.tobytes() for row in batch["camera_traj"]} <= rows
  data.path = ""
  with pytest.raises(ConfigError, match="data.source='et_prepared' needs --config.data.path=DIR"):
    trajectory_source(data, "train")


def _rewrite_shard(path, records):
  path.unlink()
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
  for record in records:
    writer.write(record)
  writer.close()


def _flip_bytes(path, start, count):
  data = bytearray(path.read_bytes())
  data[start : start + count] = bytes(255 - byte for byte in data[start : start + count])
  path.write_bytes(bytes(data))


def _edit_metadata(root, **changes):
  metadata = json.loads((root / "metadata.json").read_text())
  (root / "metadata.json").write_text(json.dumps({**metadata, **changes}))


SHARD_0, SHARD_1 = "records-00000-of-00004.array_record", "records-00001-of-00004.array_record"


@pytest.mark.parametrize(
  "damage, error, message",
  [
    (lambda root: shutil.rmtree(root), DataError, "prepared E.T. directory not found: {root}; build it with `{hint}"),
    (lambda root: (root / "metadata.json").unlink(), DataError, "{root}/metadata.json not found: .*`{hint}{root}`"),
    (lambda root: (root / "metadata.json").write_text("{"), DataError, "{root}/metadata.json is not valid JSON"),
    (lambda root: _edit_metadata(root, format_version=0), DataError, "metadata.json has format version 0"),
    (lambda root: (root / "metadata.json").write_text("{}"), DataError, r"metadata.json lacks \['format_version'"),
    (lambda root: (root / SHARD_1).unlink(), DataError, "missing shard {root}/" + SHARD_1 + "; prepare again"),
    (
      lambda root: (root / SHARD_1).write_bytes(b"\0" * 100),
      DataError,
      "shard {root}/" + SHARD_1 + " is not a readable ArrayRecord file, metadata.json says 3 records",
    ),
    (
      lambda root: _rewrite_shard(root / SHARD_1, [b""] * 2),
      DataError,
      "shard {root}/" + SHARD_1 + " holds 2 records, metadata.json says 3",
    ),
    (lambda root: (root / "pure_train_index.npy").unlink(), DataError, "missing split index {root}/pure_train_index"),
    (
      lambda root: np.save(root / "pure_train_index.npy", np.arange(4)),
      DataError,
      r"split index {root}/pure_train_index.npy has shape \(4,\)",
    ),
    (
      lambda root: np.save(root / "pure_train_index.npy", np.arange(5) + 10),
      DataError,
      r"pure_train_index.npy .* record numbers in \[0, 12\)",
    ),
    (lambda root: None, ConfigError, "max_frames=100, but {root} was prepared with max_frames=64"),
  ],
)
def test_open_errors_name_the_file(prepared_root, tmp_path, damage, error, message):
  root = tmp_path / "prepared"
  shutil.copytree(prepared_root, root)
  damage(root)
  max_frames = 100 if error is ConfigError else MAX_FRAMES
  with pytest.raises(error, match=message.format(root=root, hint=BUILD_HINT)):
    prepared.PreparedETSource(root, "pure", "train", max_frames=max_frames)


def test_corrupt_records_name_the_shard_and_index(layout_root, prepared_root, tmp_path):
  root = tmp_path / "prepared"
  shutil.copytree(prepared_root, root)
  # Records 0..2 of the first shard are pure/train items 0..2; flipping bytes inside the first chunk breaks
  # record 0's checksum only.
  _flip_bytes(root / SHARD_0, 200, 16)
  source = prepared.PreparedETSource(root, "pure", "train", max_frames=MAX_FRAMES)
  with pytest.raises(
    DataError,
    match=f"corrupt record 0 of shard {root}/{SHARD_0} \\(pure/train item 0\\): RuntimeError: .*hash mismatch",
  ):
    source[0]
  assert_identical(source[1], et.ETSource(layout_root, "pure", "train", max_frames=MAX_FRAMES)[1])
  # A readable container holding bytes that are not an item: pure/test item 0 is record 5 = shard 1, position 2.
  _rewrite_shard(root / SHARD_1, [b"\x01", b"not msgpack", b"\x93\x01\x02"])
  test = prepared.PreparedETSource(root, "pure", "test", max_frames=MAX_FRAMES)
  with pytest.raises(DataError, match=f"corrupt record 2 of shard {root}/{SHARD_1} \\(pure/test item 0\\)"):
    test[0]
  with pytest.raises(IndexError, match="index 3 is out of range"):
    test[3]


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "storyjax.data.et", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
  )


def test_cli(layout_root, tmp_path):
  out_dir = tmp_path / "prepared"
  result = _cli(
    f"--path={layout_root}",
    f"--prepare={out_dir}",
    f"--max_frames={MAX_FRAMES}",
    "--subsets=pure",
    "--records_per_shard=5",
  )
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout.splitlines()[-1])
  assert summary == {
    "prepared": str(out_dir),
    "source": str(layout_root),
    "num_records": 8,
    "num_shards": 2,
    "max_frames": MAX_FRAMES,
    "caption_keys": list(et.CAPTION_KEYS),
    "splits": {"pure_train": 5, "pure_test": 3},
  }
  assert_sources_identical(
    prepared.PreparedETSource(out_dir, "pure", "test", max_frames=MAX_FRAMES),
    et.ETSource(layout_root, "pure", "test", max_frames=MAX_FRAMES),
  )


def test_benchmark_prints_both_rates(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "benchmarks/et_reading.py",
      "--num_samples=3",
      "--max_frames=64",
      "--clip_dim=8",
      "--repeats=1",
      f"--workdir={tmp_path}",
    ],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.splitlines()[-1])
  assert report["num_samples"] == 3 and report["et_items_per_sec"] > 0 and report["prepared_items_per_sec"] > 0
  assert report["prepared_over_et"] == pytest.approx(report["prepared_items_per_sec"] / report["et_items_per_sec"])
