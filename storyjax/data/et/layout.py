"""The released E.T. dataset layout: a Grain source, a validator / re-tagger, and an exporter of the embedded set.

  python -m storyjax.data.et --path=DIR [--retag]      # check every sample, print a summary (last line: JSON)
  python -m storyjax.data.et --export=DIR --subset=pure --train_size=100 --test_size=20   # embedded → E.T. layout

Layout (shared/spec/facts/director-et-clatr.md §1), per sample id: traj/<id>.txt (KITTI camera-to-world, ≤ 300
lines), char/<id>.npy (N, 3), char_raw/<id>.npy, intrinsics/<id>.npy (4,) float16, cam_segments/<id>.npy and
char_segments/<id>.npy (N − 1,) int, caption/<id>.txt, caption_cam/<id>.txt, optional precomputed CLIP features
caption_clip/{seq,token}/<id>.npy ((L ≤ 77, 512), (512,)) and caption_cam_clip/…, bounds/<id>.npy; split lists
{pure,mixed,full}_{train,test}_split.txt and clatr_{train,val,test}_split.txt, one id a line, no trailing newline.
"""

from collections.abc import Callable, Sequence
import pathlib

import numpy as np

from storyjax.data.et import camera, procedural, tagging
from storyjax.errors import ConfigError, DataError
from storyjax.text.clip import CONTEXT_LENGTH as CLIP_LENGTH

SUBSET_SPLITS = {
  "pure": ("train", "test"),
  "mixed": ("train", "test"),
  "full": ("train", "test"),
  "clatr": ("train", "val", "test"),
}
CAPTION_KEYS = ("caption", "caption_cam")
OPTIONAL_FOLDERS = (
  "char_raw",
  "intrinsics",
  "char_segments",
  "caption_cam",
  "caption_clip",
  "caption_cam_clip",
  "bounds",
)
_ROTATION_TOLERANCE = 1e-2  # the released poses went through float16 (about 1e-3 quantisation)
_TOKEN_TOLERANCE = 1e-6  # caption_clip/token is seq[EOT] by construction
_CHAR_RAW_OFFSET = np.array([0.5, -1.0, 3.0])  # exporter: char_raw = char + offset (the released shift is per shot)
_CLIP_BATCH = 256  # exporter: captions per clip_features call


def split_file(root, subset: str, split: str) -> pathlib.Path:
  """`{subset}_{split}_split.txt` in root; subset in pure/mixed/full (train/test) or clatr (train/val/test)."""
  if subset not in SUBSET_SPLITS or split not in SUBSET_SPLITS[subset]:
    raise ConfigError(f"E.T. has no split {subset!r}/{split!r}; subsets and their splits: {SUBSET_SPLITS}")
  return pathlib.Path(root) / f"{subset}_{split}_split.txt"


def read_split(path) -> list[str]:
  """Sample ids of a split file; empty lines (which crash the original loaders) are an error."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"E.T. split file not found: {path}")
  lines = path.read_text(encoding="utf-8").split("\n")
  empty = [number for number, line in enumerate(lines, start=1) if not line.strip()]
  if empty:
    raise DataError(
      f"{path} has empty lines {empty[:5]} (a trailing newline?); the E.T. loaders read one id a line, so remove them."
    )
  return [line.strip() for line in lines]


def load_npy(path: pathlib.Path) -> np.ndarray:
  if not path.is_file():
    raise DataError(f"missing E.T. file {path}")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as error:
    raise DataError(f"unreadable .npy file {path}: {error}") from error


def _read_caption(path: pathlib.Path) -> str:
  """One whitespace-joined line, as E.T.'s viewers read a caption."""
  if not path.is_file():
    raise DataError(f"missing E.T. file {path}")
  return " ".join(path.read_text(encoding="utf-8").split())


def _check_shape(path: pathlib.Path, array: np.ndarray, shape: tuple, meaning: str) -> None:
  if array.shape != shape:
    raise DataError(f"{path} has shape {array.shape}, expected {shape}: {meaning}")


def _read_clip(root: pathlib.Path, caption_key: str, sample_id: str, with_token: bool) -> dict:
  """`{caption_key}_clip_seq` (L, D) float32 and, with_token, `{caption_key}_clip_token` (D,) float32."""
  folder = root / f"{caption_key}_clip"
  seq_path = folder / "seq" / f"{sample_id}.npy"
  seq = load_npy(seq_path)
  if seq.ndim != 2 or not 0 < len(seq) <= CLIP_LENGTH or seq.shape[1] == 0:
    raise DataError(
      f"{seq_path} has shape {seq.shape}, expected (L, D) with 1 <= L <= {CLIP_LENGTH}: CLIP features of tokens 0..EOT"
    )
  features = {f"{caption_key}_clip_seq": seq.astype(np.float32)}
  if with_token:
    token_path = folder / "token" / f"{sample_id}.npy"
    token = load_npy(token_path)
    _check_shape(token_path, token, seq.shape[1:], f"the EOT feature, D as in {seq_path}")
    features[f"{caption_key}_clip_token"] = token.astype(np.float32)
  return features


def read_sample(root, sample_id: str, clip_keys: Sequence[str] = ()) -> dict:
  """One sample's files, checked. Returns id; camera_pose (N, 3, 4) float64; char_pos (N, 3) float64;
  cam_segments (N − 1,) int64; caption, caption_cam (str; caption_cam = caption when the folder caption_cam/ is
  absent); per key in clip_keys `<key>_clip_seq` (L, D) and, when `<key>_clip/token/` exists, `<key>_clip_token`
  (D,). Raises DataError naming the first missing or malformed file."""
  root = pathlib.Path(root)
  traj_path = root / "traj" / f"{sample_id}.txt"
  try:
    poses = camera.read_kitti_poses(traj_path)
  except FileNotFoundError as error:
    raise DataError(f"missing E.T. file {traj_path}") from error
  except ValueError as error:  # its message names the file and line
    raise DataError(f"bad KITTI camera trajectory: {error}") from error
  rotations = poses[:, :, :3]
  deviation = np.abs(rotations @ rotations.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
  if deviation.max() > _ROTATION_TOLERANCE:
    raise DataError(
      f"{traj_path}, line {int(np.argmax(deviation)) + 1}: the rotation is not orthonormal "
      f"(|R Rᵀ − I| = {deviation.max():.3g}); expected camera-to-world [R|t] rows"
    )
  num_frames = len(poses)
  char_path = root / "char" / f"{sample_id}.npy"
  char_pos = load_npy(char_path)
  _check_shape(char_path, char_pos, (num_frames, 3), f"the character centre per frame of {traj_path}")
  segments_path = root / "cam_segments" / f"{sample_id}.npy"
  cam_segments = load_npy(segments_path)
  _check_shape(segments_path, cam_segments, (num_frames - 1,), f"one camera class per step of {traj_path}")
  if not np.issubdtype(cam_segments.dtype, np.integer):
    raise DataError(f"{segments_path} has dtype {cam_segments.dtype}, expected integer camera classes")
  caption = _read_caption(root / "caption" / f"{sample_id}.txt")
  has_caption_cam = (root / "caption_cam").is_dir()
  sample = {
    "id": sample_id,
    "camera_pose": poses,
    "char_pos": char_pos.astype(np.float64),
    "cam_segments": cam_segments.astype(np.int64),
    "caption": caption,
    "caption_cam": _read_caption(root / "caption_cam" / f"{sample_id}.txt") if has_caption_cam else caption,
  }
  for key in clip_keys:
    sample.update(_read_clip(root, key, sample_id, (root / f"{key}_clip" / "token").is_dir()))
  return sample


def _check_caption_key(caption: str) -> None:
  if caption not in CAPTION_KEYS:
    raise ConfigError(f"caption={caption!r}; choose one of {CAPTION_KEYS}.")


class ETSource:
  """Grain RandomAccessDataSource over one released E.T. split file; items are those of `EmbeddedET.__getitem__`.

  T = max_frames (longer trajectories keep their first T frames). Item: camera_traj (T, 9) float32, char_traj
  (T, 3) float32, mask (T,) bool, num_frames () int32, cam_classes (S,) int32 = the runs of cam_segments over
  the kept steps padded with PAD_CLASS to S = max_segments (S is larger for a sample with more runs, so such a
  sample does not batch with others), caption, caption_cam, id (str). When `<caption>_clip/seq/` exists (e.g.
  caption_clip/ for caption="caption"), also `<caption>_clip_seq` (77, D) float32 zero-padded,
  `<caption>_clip_mask` (77,) bool, and with `<caption>_clip/token/` `<caption>_clip_token` (D,) float32.
  Each item's files are read and checked when it is loaded; `validate` checks a whole directory.
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
    if not self.root.is_dir():
      raise DataError(f"E.T. dataset directory not found: {self.root}")
    _check_caption_key(caption)
    if max_frames < 1 or max_segments < 1:
      raise ConfigError(f"max_frames={max_frames} and max_segments={max_segments} must be >= 1.")
    self.subset, self.split, self.caption = subset, split, caption
    self.max_frames, self.max_segments = max_frames, max_segments
    self.ids = read_split(split_file(self.root, subset, split))
    # Decided once per folder, so every item has the same keys and batches.
    self._clip_keys = (caption,) if (self.root / f"{caption}_clip" / "seq").is_dir() else ()

  def __len__(self) -> int:
    return len(self.ids)

  def __repr__(self) -> str:
    return (
      f"ETSource(root={str(self.root)!r}, subset={self.subset!r}, split={self.split!r}, size={len(self)}, "
      f"max_frames={self.max_frames}, max_segments={self.max_segments}, caption={self.caption!r})"
    )

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} is out of range for {self!r}; valid indices are 0..{len(self) - 1}.")
    sample = read_sample(self.root, self.ids[index], self._clip_keys)
    features = camera.padded_features(sample["camera_pose"], sample["char_pos"], self.max_frames)
    kept_steps = sample["cam_segments"][: features["num_frames"] - 1]
    runs = tagging.run_sequence(kept_steps[kept_steps != tagging.PAD_CLASS])
    cam_classes = np.full((max(self.max_segments, len(runs)),), tagging.PAD_CLASS, np.int32)
    cam_classes[: len(runs)] = runs
    item = {
      **features,
      "cam_classes": cam_classes,
      "caption": sample["caption"],
      "caption_cam": sample["caption_cam"],
      "id": sample["id"],
    }
    for key in self._clip_keys:
      seq = sample[f"{key}_clip_seq"]
      item[f"{key}_clip_seq"] = np.zeros((CLIP_LENGTH, seq.shape[1]), np.float32)
      item[f"{key}_clip_seq"][: len(seq)] = seq
      item[f"{key}_clip_mask"] = np.arange(CLIP_LENGTH) < len(seq)
      if f"{key}_clip_token" in sample:
        item[f"{key}_clip_token"] = sample[f"{key}_clip_token"]
    return item


def _check_optional_files(root: pathlib.Path, sample: dict, folders: Sequence[str]) -> None:
  """Shapes of the files no loader needs: char_raw (N, 3), intrinsics (4,), char_segments (N − 1,), bounds (2,)."""
  num_frames = len(sample["camera_pose"])
  expected = {
    "char_raw": ((num_frames, 3), "the unshifted character centre per frame"),
    "intrinsics": ((4,), "[fx, fy, cx, cy]"),
    "char_segments": ((num_frames - 1,), "one character class per step"),
    "bounds": ((2,), "[start, end] frames in the source video"),
  }
  for folder in folders:
    if folder in expected:
      path = root / folder / f"{sample['id']}.npy"
      _check_shape(path, load_npy(path), *expected[folder])


def validate(root, retag: bool = False) -> dict:
  """Reads and checks every sample of every split file in root (once each); with retag, re-runs E.T.'s taggers.

  Returns a JSON-able summary: num_samples, num_steps, splits (samples per split file), frames (total, min, mean,
  max per sample), camera_classes (steps per class name in cam_segments), optional_folders, clip_features
  (caption keys whose features every sample has); with retag cam_tag_agreement and, when char_segments/ exists,
  char_tag_agreement: the fraction of steps whose recomputed class equals the stored one.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"E.T. dataset directory not found: {root}")
  splits = {path.name: read_split(path) for path in sorted(root.glob("*_split.txt"))}
  if not splits:
    raise DataError(f"no *_split.txt files in {root}; expected e.g. pure_train_split.txt")
  ids = sorted({sample_id for split_ids in splits.values() for sample_id in split_ids})
  folders = [name for name in OPTIONAL_FOLDERS if (root / name).is_dir()]
  clip_keys = [key for key in CAPTION_KEYS if (root / f"{key}_clip" / "seq").is_dir()]
  frames, class_steps = [], np.zeros(tagging.PAD_CLASS + 1, np.int64)
  agreement = {"cam": [0, 0], "char": [0, 0]}
  for sample_id in ids:
    sample = read_sample(root, sample_id, clip_keys)
    _check_optional_files(root, sample, folders)
    frames.append(len(sample["camera_pose"]))
    segments_path = root / "cam_segments" / f"{sample_id}.npy"
    if sample["cam_segments"].min(initial=0) < 0 or sample["cam_segments"].max(initial=0) > tagging.PAD_CLASS:
      raise DataError(f"{segments_path} holds classes outside 0..{tagging.PAD_CLASS}")
    class_steps += np.bincount(sample["cam_segments"], minlength=tagging.PAD_CLASS + 1)
    for key in clip_keys:
      token = sample.get(f"{key}_clip_token")
      if token is not None and not np.allclose(token, sample[f"{key}_clip_seq"][-1], rtol=0, atol=_TOKEN_TOLERANCE):
        raise DataError(
          f"{root / f'{key}_clip' / 'token' / f'{sample_id}.npy'} differs from the last row of "
          f"{root / f'{key}_clip' / 'seq' / f'{sample_id}.npy'} (E.T.'s token is seq[EOT])"
        )
    if retag:
      _count_agreement(agreement["cam"], tagging.tag_camera(sample["camera_pose"]), sample["cam_segments"])
      if "char_segments" in folders:
        _count_agreement(
          agreement["char"],
          tagging.tag_character(sample["char_pos"]),
          load_npy(root / "char_segments" / f"{sample_id}.npy"),
        )
  names = (*tagging.CAMERA_CLASS_NAMES, "padding")
  order = np.argsort(-class_steps, kind="stable")
  summary = {
    "num_samples": len(ids),
    "num_steps": int(np.sum(frames)) - len(ids),
    "splits": {name: len(split_ids) for name, split_ids in splits.items()},
    "frames": {
      "total": int(np.sum(frames)),
      "min": int(np.min(frames)),
      "mean": float(np.mean(frames)),
      "max": int(np.max(frames)),
    },
    "camera_classes": {names[index]: int(class_steps[index]) for index in order if class_steps[index]},
    "optional_folders": folders,
    "clip_features": clip_keys,
  }
  if retag:
    summary["cam_tag_agreement"] = agreement["cam"][0] / max(agreement["cam"][1], 1)
    if "char_segments" in folders:
      summary["char_tag_agreement"] = agreement["char"][0] / max(agreement["char"][1], 1)
  return summary


def _count_agreement(counts: list[int], recomputed: np.ndarray, stored: np.ndarray) -> None:
  counts[0] += int(np.sum(recomputed == stored))
  counts[1] += len(stored)


def _write_clip_features(
  root: pathlib.Path, caption_key: str, sample_ids: Sequence[str], captions: Sequence[str], clip_features: Callable
) -> None:
  """`{caption_key}_clip/seq/<id>.npy` (L_i, D) and `token/<id>.npy` (D,) from clip_features(captions)."""
  for folder in ("seq", "token"):
    (root / f"{caption_key}_clip" / folder).mkdir(parents=True, exist_ok=True)
  for start in range(0, len(captions), _CLIP_BATCH):
    batch = list(captions[start : start + _CLIP_BATCH])
    features, mask = clip_features(batch)
    features, mask = np.asarray(features, np.float32), np.asarray(mask, bool)
    if features.ndim != 3 or mask.shape != features.shape[:2] or len(features) != len(batch):
      raise DataError(
        f"clip_features returned features {features.shape} and mask {mask.shape} for "
        f"{len(batch)} captions; expected (N, L, D) and (N, L)"
      )
    lengths = mask.sum(axis=1)
    if np.any(mask != (np.arange(mask.shape[1]) < lengths[:, None])) or lengths.min() < 1:
      raise DataError("clip_features' mask must be True on a non-empty prefix of each row (tokens 0..EOT)")
    for sample_id, feature, length in zip(sample_ids[start : start + _CLIP_BATCH], features, lengths):
      np.save(root / f"{caption_key}_clip" / "seq" / f"{sample_id}.npy", feature[:length])
      np.save(root / f"{caption_key}_clip" / "token" / f"{sample_id}.npy", feature[length - 1])


def _write_split(path: pathlib.Path, ids: Sequence[str]) -> None:
  """One id a line without a trailing newline; an empty list writes no file (the loaders cannot read one)."""
  if ids:
    path.write_text("\n".join(ids), encoding="utf-8")


def export_embedded(
  root,
  subset: str,
  split_sizes: dict[str, int],
  seed: int = 0,
  max_frames: int = camera.MAX_FRAMES,
  min_frames: int | None = None,
  clip_features: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, list[str]]:
  """Writes `procedural.generate_sample(seed, subset, split, i)`, i < split_sizes[split], in the released layout.

  cam_segments/ and char_segments/ hold E.T.'s tagger output on the written trajectories (as released; the
  generator's classes survive it), char_raw = char + a fixed offset, bounds = [0, N − 1]. Split files:
  `{subset}_{split}`; then, over the pure and mixed split files now in root, full_{train,test} = pure ∪ mixed,
  clatr_train = full_train, clatr_val = the first tenth of full_test (at least one id), clatr_test = the rest.
  clip_features: captions (N,) → (features (N, L, D), mask (N, L)), e.g. `ClipTextFeatures(path).encode`; it
  writes caption_clip/ and caption_cam_clip/. An id drawn twice, in this export or in the other subset's split
  files, is an error (its files would be overwritten). Returns {split file name: ids} for the files written.
  """
  if subset not in procedural.SUBSETS:
    raise ConfigError(f"export subset={subset!r}; choose one of {procedural.SUBSETS}.")
  unknown = sorted(set(split_sizes) - set(procedural.SPLITS))
  if unknown or any(size < 0 for size in split_sizes.values()):
    raise ConfigError(f"split_sizes={split_sizes}: keys must be in {procedural.SPLITS}, sizes >= 0.")
  root = pathlib.Path(root)
  for folder in (
    "traj",
    "char",
    "char_raw",
    "intrinsics",
    "cam_segments",
    "char_segments",
    "caption",
    "caption_cam",
    "bounds",
  ):
    (root / folder).mkdir(parents=True, exist_ok=True)
  taken = {
    sample_id: path.name
    for other in procedural.SUBSETS
    if other != subset
    for split in procedural.SPLITS
    if (path := split_file(root, other, split)).is_file()
    for sample_id in read_split(path)
  }
  written = {}
  for split, size in split_sizes.items():
    ids, captions = [], {key: [] for key in CAPTION_KEYS}
    for index in range(size):
      try:
        sample = procedural.generate_sample(seed, subset, split, index, max_frames, min_frames)
      except ValueError as error:  # frame range
        raise ConfigError(f"export: {error}") from error
      sample_id = sample["id"]
      if sample_id in taken:
        raise DataError(
          f"procedural sample {subset}/{split}/{index} has id {sample_id}, already in "
          f"{taken[sample_id]}; export with another seed"
        )
      taken[sample_id] = f"this export ({subset}/{split})"
      ids.append(sample_id)
      camera.write_kitti_poses(root / "traj" / f"{sample_id}.txt", sample["camera_pose"])
      np.save(root / "char" / f"{sample_id}.npy", sample["char_pos"])
      np.save(root / "char_raw" / f"{sample_id}.npy", sample["char_pos"] + _CHAR_RAW_OFFSET)
      np.save(root / "intrinsics" / f"{sample_id}.npy", sample["intrinsics"].astype(np.float16))
      np.save(root / "cam_segments" / f"{sample_id}.npy", tagging.tag_camera(sample["camera_pose"]))
      np.save(root / "char_segments" / f"{sample_id}.npy", tagging.tag_character(sample["char_pos"]))
      np.save(root / "bounds" / f"{sample_id}.npy", np.array([0, len(sample["camera_pose"]) - 1], np.int64))
      for key in CAPTION_KEYS:
        (root / key / f"{sample_id}.txt").write_text(sample[key], encoding="utf-8")
        captions[key].append(sample[key])
    if clip_features is not None:
      for key in CAPTION_KEYS:
        _write_clip_features(root, key, ids, captions[key], clip_features)
    written[split_file(root, subset, split).name] = ids
    _write_split(split_file(root, subset, split), ids)
  for split in procedural.SPLITS:
    full = [
      sample_id
      for name in procedural.SUBSETS
      if (path := split_file(root, name, split)).is_file()
      for sample_id in read_split(path)
    ]
    written[f"full_{split}_split.txt"] = full
  full_test = written["full_test_split.txt"]
  num_val = max(1, len(full_test) // 10) if len(full_test) > 1 else 0
  written.update(
    {
      "clatr_train_split.txt": written["full_train_split.txt"],
      "clatr_val_split.txt": full_test[:num_val],
      "clatr_test_split.txt": full_test[num_val:],
    }
  )
  for name, ids in written.items():
    if name.startswith(("full_", "clatr_")):
      _write_split(root / name, ids)
  return {name: ids for name, ids in written.items() if ids}
