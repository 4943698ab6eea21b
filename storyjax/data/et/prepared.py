"""The released E.T. layout prepared for training: ArrayRecord shards of finished items, read by Grain at random.

  python -m storyjax.data.et --path=et-data --prepare=et-prepared [--max_frames=300]   # once
  --config.data.source=et_prepared --config.data.path=et-prepared                       # then train on it

`prepare` reads every split file once through `ETSource` (so every file is checked as the loader checks it) and
writes each distinct sample id once: full = pure ∪ mixed and clatr re-splits full, so per-split shards would hold
the data three times. out_dir then holds records-KKKKK-of-NNNNN.array_record (one record per sample: the item dict,
serialized with flax.serialization's msgpack, zstd-compressed by ArrayRecord), `<subset>_<split>_index.npy` (the
record of each item of that split file, in its order) and metadata.json (written last, so an interrupted run leaves
no readable directory).
"""

import bisect
from collections.abc import Sequence
import datetime
import importlib.metadata
import json
import math
import pathlib

from array_record.python import array_record_module
from flax import serialization
import grain
import msgpack
import numpy as np

from storyjax.data.et import camera, procedural
from storyjax.data.et.layout import CAPTION_KEYS, SUBSET_SPLITS, ETSource, split_file
from storyjax.errors import ConfigError, DataError

FORMAT_VERSION = 1
RECORDS_PER_SHARD = 4096  # about 0.4 GB a shard with 512-wide CLIP features of both captions
METADATA = "metadata.json"
_WRITER_OPTIONS = "group_size:1,zstd:3"  # group size 1: Grain reads single records; zstd: padding costs nothing
_METADATA_KEYS = (
  "format_version",
  "max_frames",
  "max_segments",
  "caption_keys",
  "item_keys",
  "num_records",
  "shards",
  "splits",
)


def _build_command(out_dir) -> str:
  return f"`python -m storyjax.data.et --path=ET_DATA_DIR --prepare={out_dir}`"


def _storyjax_version() -> str:
  try:
    return importlib.metadata.version("storyjax")
  except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never pip-installed
    return "not installed"


def _splits(root: pathlib.Path, subsets: Sequence[str] | None) -> list[tuple[str, str]]:
  """(subset, split) pairs: every split of the given subsets, or with subsets=None every split file in root."""
  if subsets is None:
    return [
      (subset, split)
      for subset, splits in SUBSET_SPLITS.items()
      for split in splits
      if split_file(root, subset, split).is_file()
    ]
  unknown = [subset for subset in subsets if subset not in SUBSET_SPLITS]
  if unknown or not subsets:
    raise ConfigError(f"subsets={list(subsets)}; choose some of {list(SUBSET_SPLITS)}.")
  return [(subset, split) for subset in dict.fromkeys(subsets) for split in SUBSET_SPLITS[subset]]


def prepare(
  root,
  out_dir,
  subsets: Sequence[str] | None = None,
  max_frames: int = camera.MAX_FRAMES,
  max_segments: int = procedural.MAX_SEGMENTS["mixed"],
  caption_keys: Sequence[str] = CAPTION_KEYS,
  records_per_shard: int = RECORDS_PER_SHARD,
) -> dict:
  """Writes the prepared form of the E.T. layout in root to the new (or empty) directory out_dir.

  Each record is `ETSource(root, subset, split, max_frames, max_segments, caption=key)[i]` merged over
  caption_keys (they differ only in their `<key>_clip_*` features). subsets=None prepares every split file in
  root. Returns the metadata written to out_dir/metadata.json.
  """
  root, out_dir = pathlib.Path(root), pathlib.Path(out_dir)
  if records_per_shard < 1:
    raise ConfigError(f"records_per_shard={records_per_shard} must be >= 1.")
  if not caption_keys:
    raise ConfigError(f"caption_keys={list(caption_keys)}; give some of {CAPTION_KEYS}.")
  if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
    raise DataError(f"{out_dir} exists and is not an empty directory; prepare into a new one (or delete it).")
  if not root.is_dir():
    raise DataError(f"E.T. dataset directory not found: {root}")
  pairs = _splits(root, subsets)
  if not pairs:
    raise DataError(f"no *_split.txt files in {root}; expected e.g. pure_train_split.txt")
  caption_keys = list(dict.fromkeys(caption_keys))
  sources = {
    pair: [ETSource(root, *pair, max_frames=max_frames, max_segments=max_segments, caption=key) for key in caption_keys]
    for pair in pairs
  }
  record_of = {}  # sample id → record, in order of first appearance
  for pair_sources in sources.values():
    for sample_id in pair_sources[0].ids:
      record_of.setdefault(sample_id, len(record_of))
  num_shards = math.ceil(len(record_of) / records_per_shard)
  shards = [
    {
      "name": f"records-{shard:05d}-of-{num_shards:05d}.array_record",
      "records": min(records_per_shard, len(record_of) - shard * records_per_shard),
    }
    for shard in range(num_shards)
  ]
  out_dir.mkdir(parents=True, exist_ok=True)
  item_keys, readers, writer, written = {}, [], None, 0
  for pair_sources in sources.values():
    for index, sample_id in enumerate(pair_sources[0].ids):
      if record_of[sample_id] != written:  # written already, from an earlier split
        continue
      if not item_keys:
        # ETSource fixes an item's keys once per directory: a caption key whose first item adds no features
        # adds none to any item, and need not be read again.
        items = [source[index] for source in pair_sources]
        item_keys = {key: list(item) for key, item in zip(caption_keys, items)}
        readers = [
          0,
          *(
            position
            for position in range(1, len(caption_keys))
            if set(item_keys[caption_keys[position]]) - set(item_keys[caption_keys[0]])
          ),
        ]
      else:
        items = [pair_sources[position][index] for position in readers]
      record = {key: value for item in items for key, value in item.items()}
      if written % records_per_shard == 0:
        if writer is not None:
          writer.close()
        writer = array_record_module.ArrayRecordWriter(
          str(out_dir / shards[written // records_per_shard]["name"]), _WRITER_OPTIONS
        )
      writer.write(serialization.msgpack_serialize(record))
      written += 1
  writer.close()
  splits = {}
  for (subset, split), pair_sources in sources.items():
    name = f"{subset}_{split}"
    np.save(out_dir / f"{name}_index.npy", np.array([record_of[i] for i in pair_sources[0].ids], np.int64))
    splits[name] = {"size": len(pair_sources[0]), "index": f"{name}_index.npy"}
  metadata = {
    "format": "storyjax prepared E.T.",
    "format_version": FORMAT_VERSION,
    "storyjax_version": _storyjax_version(),
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "source": str(root.resolve()),
    "max_frames": max_frames,
    "max_segments": max_segments,
    "caption_keys": caption_keys,
    "item_keys": item_keys,
    "serialization": "flax.serialization.msgpack_serialize of the item dict",
    "num_records": len(record_of),
    "shards": shards,
    "splits": splits,
  }
  (out_dir / METADATA).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
  return metadata


def read_metadata(root) -> dict:
  """root/metadata.json, checked for the keys and format version this module reads."""
  root = pathlib.Path(root)
  path = root / METADATA
  if not root.is_dir():
    raise DataError(f"prepared E.T. directory not found: {root}; build it with {_build_command(root)}")
  if not path.is_file():
    raise DataError(
      f"{path} not found: {root} is not prepared E.T. data (or its preparation did not finish); "
      f"build it with {_build_command(root)}"
    )
  try:
    metadata = json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError) as error:
    raise DataError(f"{path} is not valid JSON ({error}); prepare again with {_build_command(root)}") from error
  missing = [key for key in _METADATA_KEYS if not isinstance(metadata, dict) or key not in metadata]
  if missing:
    raise DataError(f"{path} lacks {missing}; prepare again with {_build_command(root)}")
  if metadata["format_version"] != FORMAT_VERSION:
    raise DataError(
      f"{path} has format version {metadata['format_version']}, this storyjax reads "
      f"{FORMAT_VERSION}; prepare again with {_build_command(root)}"
    )
  return metadata


class PreparedETSource:
  """Grain RandomAccessDataSource over one split of `prepare`'s output: item i equals (keys, order, dtypes,
  values) `ETSource(layout, subset, split, max_frames, max_segments, caption)[i]` of the layout it was built from.

  Opening checks metadata.json, the split's index and every shard's record count; max_frames, max_segments and
  caption must be values the data was prepared with (ConfigError otherwise).
  """

  def __init__(
    self,
    root,
    subset: str,
    split: str,
    max_frames: int = camera.MAX_FRAMES,
    max_segments: int = procedural.MAX_SEGMENTS["mixed"],
    caption: str = "caption",
  ):
    self.root = pathlib.Path(root)
    metadata = read_metadata(self.root)
    self.subset, self.split, self.caption = subset, split, caption
    self.max_frames, self.max_segments = max_frames, max_segments
    name = f"{subset}_{split}"
    if name not in metadata["splits"]:
      raise ConfigError(
        f"{self.root} holds no split {subset!r}/{split!r}; it was prepared with "
        f"{sorted(metadata['splits'])} (prepare again with --subsets={subset})"
      )
    for setting, value in (("max_frames", max_frames), ("max_segments", max_segments)):
      if value != metadata[setting]:
        raise ConfigError(
          f"{setting}={value}, but {self.root} was prepared with {setting}={metadata[setting]}; "
          f"use {setting}={metadata[setting]} or prepare again with {setting}={value}"
        )
    if caption not in metadata["caption_keys"]:
      raise ConfigError(
        f"caption={caption!r}, but {self.root} was prepared with caption keys "
        f"{metadata['caption_keys']}; prepare again with --caption_keys={caption}"
      )
    self._keys = metadata["item_keys"][caption]
    self._shard_paths = [self.root / shard["name"] for shard in metadata["shards"]]
    for path, shard in zip(self._shard_paths, metadata["shards"]):
      _check_shard(path, shard["records"], self.root)
    self._shard_ends = list(np.cumsum([shard["records"] for shard in metadata["shards"]]))
    self._index = _read_index(
      self.root / metadata["splits"][name]["index"],
      metadata["splits"][name]["size"],
      metadata["num_records"],
      self.root,
    )
    self._records = grain.sources.ArrayRecordDataSource([str(path) for path in self._shard_paths])

  def __len__(self) -> int:
    return len(self._index)

  def __repr__(self) -> str:
    return (
      f"PreparedETSource(root={str(self.root)!r}, subset={self.subset!r}, split={self.split!r}, "
      f"size={len(self)}, max_frames={self.max_frames}, max_segments={self.max_segments}, "
      f"caption={self.caption!r})"
    )

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} is out of range for {self!r}; valid indices are 0..{len(self) - 1}.")
    record = int(self._index[index])
    try:
      values = serialization.msgpack_restore(self._records[record])
      # msgpack_restore's arrays are read-only views of the record; ETSource's (and so ours) are writable.
      return {key: np.array(values[key]) if isinstance(values[key], np.ndarray) else values[key] for key in self._keys}
    except (RuntimeError, ValueError, TypeError, KeyError, msgpack.UnpackException) as error:
      shard = bisect.bisect_right(self._shard_ends, record)
      position = record - (self._shard_ends[shard - 1] if shard else 0)
      raise DataError(
        f"corrupt record {position} of shard {self._shard_paths[shard]} ({self.subset}/{self.split} "
        f"item {index}): {type(error).__name__}: {error}; prepare again with "
        f"{_build_command(self.root)}"
      ) from error


def _check_shard(path: pathlib.Path, num_records: int, root: pathlib.Path) -> None:
  if not path.is_file():
    raise DataError(f"missing shard {path}; prepare again with {_build_command(root)}")
  reader = array_record_module.ArrayRecordReader(str(path))
  found = None
  if reader.ok():  # closing a reader that failed to open raises its error again
    found = reader.num_records()
    reader.close()
  if found != num_records:
    state = "is not a readable ArrayRecord file" if found is None else f"holds {found} records"
    raise DataError(
      f"shard {path} {state}, metadata.json says {num_records} records (truncated or overwritten?); "
      f"prepare again with {_build_command(root)}"
    )


def _read_index(path: pathlib.Path, size: int, num_records: int, root: pathlib.Path) -> np.ndarray:
  """The split's record numbers, (size,) int64 in [0, num_records)."""
  if not path.is_file():
    raise DataError(f"missing split index {path}; prepare again with {_build_command(root)}")
  try:
    index = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as error:
    raise DataError(f"unreadable split index {path}: {error}; prepare again with {_build_command(root)}") from error
  if (
    index.shape != (size,)
    or not np.issubdtype(index.dtype, np.integer)
    or (size and not 0 <= index.min() <= index.max() < num_records)
  ):
    raise DataError(
      f"split index {path} has shape {index.shape} and dtype {index.dtype}, expected ({size},) "
      f"record numbers in [0, {num_records}); prepare again with {_build_command(root)}"
    )
  return index
