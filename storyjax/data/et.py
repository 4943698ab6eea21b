"""The released E.T. dataset layout: a Grain source, a validator / re-tagger, and an exporter of the embedded set.

  python -m storyjax.data.et --path=DIR [--retag]      # check every sample, print a summary (last line: JSON)
  python -m storyjax.data.et --export=DIR --subset=pure --train_size=100 --test_size=20   # embedded → E.T. layout

Layout (shared/spec/facts/director-et-clatr.md §1), per sample id: traj/<id>.txt (KITTI camera-to-world, ≤ 300
lines), char/<id>.npy (N, 3), char_raw/<id>.npy, intrinsics/<id>.npy (4,) float16, cam_segments/<id>.npy and
char_segments/<id>.npy (N − 1,) int, caption/<id>.txt, caption_cam/<id>.txt, optional precomputed CLIP features
caption_clip/{seq,token}/<id>.npy ((L ≤ 77, 512), (512,)) and caption_cam_clip/…, bounds/<id>.npy; split lists
{pure,mixed,full}_{train,test}_split.txt and clatr_{train,val,test}_split.txt, one id a line, no trailing newline.
"""
import collections
import json
import pathlib
import sys
from typing import Callable, Sequence

from absl import app, flags
import numpy as np

from storyjax.data import camera, procedural_et, tagging
from storyjax.errors import DataError, StoryjaxError

SUBSET_SPLITS = {"pure": ("train", "test"), "mixed": ("train", "test"), "full": ("train", "test"),
                 "clatr": ("train", "val", "test")}
CLIP_LENGTH = 77
CAPTION_KEYS = ("caption", "caption_cam")
OPTIONAL_FOLDERS = ("char_raw", "intrinsics", "char_segments", "caption_cam", "caption_clip", "caption_cam_clip",
                    "bounds")
_ROTATION_TOLERANCE = 1e-2  # the released poses went through float16


def split_file(root: pathlib.Path, subset: str, split: str) -> pathlib.Path:
  if subset not in SUBSET_SPLITS or split not in SUBSET_SPLITS[subset]:
    raise DataError(f"E.T. has no split {subset!r}/{split!r}; subsets and splits: {SUBSET_SPLITS}")
  return pathlib.Path(root) / f"{subset}_{split}_split.txt"


def read_split(path: pathlib.Path) -> list[str]:
  """Sample ids of a split file; empty lines (which crash the original loaders) are an error."""
  if not path.is_file():
    raise DataError(f"E.T. split file not found: {path}")
  ids = path.read_text(encoding="utf-8").split("\n")
  if any(not sample_id.strip() for sample_id in ids):
    raise DataError(f"{path} has empty lines (a trailing newline?); the E.T. loaders read one id per line.")
  return [sample_id.strip() for sample_id in ids]


def _load_npy(path: pathlib.Path) -> np.ndarray:
  if not path.is_file():
    raise DataError(f"missing E.T. file {path}")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as error:
    raise DataError(f"unreadable .npy file {path}: {error}") from error


def _read_text(path: pathlib.Path) -> str:
  if not path.is_file():
    raise DataError(f"missing E.T. file {path}")
  return " ".join(path.read_text(encoding="utf-8").split())


def read_sample(root: pathlib.Path, sample_id: str) -> dict:
  """One sample's raw arrays, checked: camera_pose (N, 3, 4), char_pos (N, 3), cam_segments (N − 1,), captions,
  and the optional CLIP features `<caption>_clip_seq` (L, D) / `<caption>_clip_token` (D,) when present."""
  root = pathlib.Path(root)
  traj_path = root / "traj" / f"{sample_id}.txt"
  try:
    poses = camera.read_kitti_poses(traj_path)
  except (FileNotFoundError, ValueError) as error:
    raise DataError(f"bad camera trajectory {traj_path}: {error}") from error
  rotations = poses[:, :, :3]
  if np.abs(rotations @ rotations.transpose(0, 2, 1) - np.eye(3)).max() > _ROTATION_TOLERANCE:
    raise DataError(f"{traj_path}: rotations are not orthonormal (expected camera-to-world [R|t] rows)")
  num_frames = len(poses)
  char_path = root / "char" / f"{sample_id}.npy"
  char_pos = _load_npy(char_path)
  if char_pos.shape != (num_frames, 3):
    raise DataError(f"{char_path} has shape {char_pos.shape}, expected ({num_frames}, 3) like {traj_path}")
  segments_path = root / "cam_segments" / f"{sample_id}.npy"
  cam_segments = _load_npy(segments_path)
  if cam_segments.shape != (num_frames - 1,):
    raise DataError(f"{segments_path} has shape {cam_segments.shape}, expected ({num_frames - 1},): one class per "
                    f"step of {traj_path}")
  sample = {"id": sample_id, "camera_pose": poses, "char_pos": char_pos.astype(np.float64),
            "cam_segments": cam_segments.astype(np.int64), "caption": _read_text(root / "caption" / f"{sample_id}.txt")}
  caption_cam_path = root / "caption_cam" / f"{sample_id}.txt"
  sample["caption_cam"] = _read_text(caption_cam_path) if caption_cam_path.is_file() else sample["caption"]
  for key in CAPTION_KEYS:
    seq_path = root / f"{key}_clip" / "seq" / f"{sample_id}.npy"
    if seq_path.is_file():
      seq = _load_npy(seq_path)
      if seq.ndim != 2 or not 0 < len(seq) <= CLIP_LENGTH:
        raise DataError(f"{seq_path} has shape {seq.shape}, expected (L ≤ {CLIP_LENGTH}, D)")
      sample[f"{key}_clip_seq"] = seq.astype(np.float32)
      token_path = root / f"{key}_clip" / "token" / f"{sample_id}.npy"
      if token_path.is_file():
        sample[f"{key}_clip_token"] = _load_npy(token_path).astype(np.float32)
  return sample


class ETSource:
  """Grain RandomAccessDataSource over a released E.T. split; items are those of `procedural_et.EmbeddedET`.

  T = max_frames (longer trajectories are cut to their first T frames). Items: camera_traj (T, 9), char_traj
  (T, 3), mask (T,), num_frames, cam_classes (the camera tag runs of the kept steps, padded with PAD_CLASS to
  max_segments; longer when a sample has more runs), caption, caption_cam, id; with precomputed CLIP features
  also caption_clip_seq (77, D) zero-padded + caption_clip_mask (77,) (and caption_cam_clip_* likewise).
  Files are read and checked per item; `validate` checks a whole directory.
  """

  def __init__(self, root, subset: str, split: str, max_frames: int = camera.MAX_FRAMES,
               max_segments: int = procedural_et.MAX_SEGMENTS["mixed"]):
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise DataError(f"E.T. dataset directory not found: {self.root}")
    self.subset, self.split, self.max_frames, self.max_segments = subset, split, max_frames, max_segments
    self.ids = read_split(split_file(self.root, subset, split))

  def __len__(self) -> int:
    return len(self.ids)

  def __repr__(self) -> str:
    return f"ETSource(root={str(self.root)!r}, subset={self.subset!r}, split={self.split!r}, size={len(self)})"

  @property
  def has_clip_features(self) -> bool:
    """Whether every sample of the split has precomputed CLIP features of its caption."""
    folder = self.root / "caption_clip" / "seq"
    return folder.is_dir() and all((folder / f"{sample_id}.npy").is_file() for sample_id in self.ids)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise ValueError(f"index {index} is out of range for {self!r}")
    sample = read_sample(self.root, self.ids[index])
    num_frames = min(len(sample["camera_pose"]), self.max_frames)
    camera_traj = np.zeros((self.max_frames, 9), np.float32)
    camera_traj[:num_frames] = camera.encode_camera(sample["camera_pose"][:num_frames])
    char_traj = np.zeros((self.max_frames, 3), np.float32)
    char_traj[:num_frames] = camera.encode_character(sample["char_pos"][:num_frames])
    steps = sample["cam_segments"][: num_frames - 1]
    runs = tagging.run_sequence(steps[steps != tagging.PAD_CLASS])
    cam_classes = np.full((max(self.max_segments, len(runs)),), tagging.PAD_CLASS, np.int32)
    cam_classes[:len(runs)] = runs
    item = {"camera_traj": camera_traj, "char_traj": char_traj, "mask": np.arange(self.max_frames) < num_frames,
            "num_frames": np.int32(num_frames), "cam_classes": cam_classes, "caption": sample["caption"],
            "caption_cam": sample["caption_cam"], "id": sample["id"]}
    for key in CAPTION_KEYS:
      if f"{key}_clip_seq" in sample:
        seq = sample[f"{key}_clip_seq"]
        item[f"{key}_clip_seq"] = np.zeros((CLIP_LENGTH, seq.shape[1]), np.float32)
        item[f"{key}_clip_seq"][:len(seq)] = seq
        item[f"{key}_clip_mask"] = np.arange(CLIP_LENGTH) < len(seq)
    return item


def validate(root, retag: bool = False) -> dict:
  """Reads and checks every sample of every split file in `root`; with retag, re-runs E.T.'s taggers.

  Returns the summary: samples per split file, frame counts, camera-class histogram of cam_segments, optional
  folders present, and with retag cam_tag_agreement / char_tag_agreement (fraction of steps whose recomputed
  class equals the stored one).
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"E.T. dataset directory not found: {root}")
  splits = {path.name: read_split(path) for path in sorted(root.glob("*_split.txt"))}
  if not splits:
    raise DataError(f"no *_split.txt files in {root}; expected e.g. pure_train_split.txt")
  ids = sorted({sample_id for split_ids in splits.values() for sample_id in split_ids})
  frames, histogram = [], collections.Counter()
  agreement = {"cam": [0, 0], "char": [0, 0]}
  for sample_id in ids:
    sample = read_sample(root, sample_id)
    frames.append(len(sample["camera_pose"]))
    histogram.update(tagging.CAMERA_CLASS_NAMES[c] for c in sample["cam_segments"] if c != tagging.PAD_CLASS)
    for key in CAPTION_KEYS:
      if f"{key}_clip_token" in sample and not np.allclose(sample[f"{key}_clip_token"],
                                                           sample[f"{key}_clip_seq"][-1], atol=1e-4):
        raise DataError(f"{root / f'{key}_clip' / 'token' / f'{sample_id}.npy'} differs from the last row of its "
                        f"seq file (E.T.'s token feature is seq[EOT])")
    if retag:
      _count_agreement(agreement["cam"], tagging.tag_camera(sample["camera_pose"]), sample["cam_segments"])
      char_segments_path = root / "char_segments" / f"{sample_id}.npy"
      if char_segments_path.is_file():
        _count_agreement(agreement["char"], tagging.tag_character(sample["char_pos"]), _load_npy(char_segments_path))
  summary = {"num_samples": len(ids), "splits": {name: len(split_ids) for name, split_ids in splits.items()},
             "frames": {"total": int(np.sum(frames)), "min": int(np.min(frames)), "mean": float(np.mean(frames)),
                        "max": int(np.max(frames))},
             "camera_classes": dict(histogram.most_common()),
             "optional_folders": [name for name in OPTIONAL_FOLDERS if (root / name).is_dir()]}
  if retag:
    summary["num_steps"] = agreement["cam"][1]
    summary["cam_tag_agreement"] = agreement["cam"][0] / max(agreement["cam"][1], 1)
    if agreement["char"][1]:
      summary["char_tag_agreement"] = agreement["char"][0] / agreement["char"][1]
  return summary


def _count_agreement(counts: list[int], recomputed: np.ndarray, stored: np.ndarray) -> None:
  if len(stored) != len(recomputed):
    raise DataError(f"stored segments have {len(stored)} steps, the trajectory {len(recomputed)}")
  counts[0] += int(np.sum(recomputed == stored))
  counts[1] += len(stored)


def export_embedded(root, subset: str, split_sizes: dict[str, int], seed: int = 0,
                    max_frames: int = camera.MAX_FRAMES, min_frames: int | None = None,
                    clip_features: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
  """Writes embedded procedural samples in the released layout; returns {split file name: ids}.

  Writes `{subset}_{split}_split.txt` for the given splits, `full_*` with the same ids, and `clatr_*` (train =
  train, val = the first tenth of test, test = the rest). clip_features: captions → (features (N, L, D), mask
  (N, L)), e.g. `storyjax.text.clip.ClipTextFeatures(path).encode`; writes caption_clip/ and caption_cam_clip/.
  The id of a procedural sample is random, so an id drawn twice in one export is an error.
  """
  root = pathlib.Path(root)
  for folder in ("traj", "char", "char_raw", "intrinsics", "cam_segments", "char_segments", "caption",
                 "caption_cam", "bounds"):
    (root / folder).mkdir(parents=True, exist_ok=True)
  written, seen = {}, set()
  for split, size in split_sizes.items():
    ids = []
    for index in range(size):
      sample = procedural_et.generate_sample(seed, subset, split, index, max_frames, min_frames)
      sample_id = sample["id"]
      if sample_id in seen:
        raise DataError(f"procedural sample id {sample_id} drawn twice; export fewer samples or another seed")
      seen.add(sample_id)
      ids.append(sample_id)
      num_frames = len(sample["camera_pose"])
      camera.write_kitti_poses(root / "traj" / f"{sample_id}.txt", sample["camera_pose"])
      np.save(root / "char" / f"{sample_id}.npy", sample["char_pos"])
      np.save(root / "char_raw" / f"{sample_id}.npy", sample["char_pos"] + np.array([0.5, -1.0, 3.0]))
      np.save(root / "intrinsics" / f"{sample_id}.npy", sample["intrinsics"].astype(np.float16))
      # As released, the segments are E.T.'s tagger output (not the classes the generator drew).
      np.save(root / "cam_segments" / f"{sample_id}.npy", tagging.tag_camera(sample["camera_pose"]))
      np.save(root / "char_segments" / f"{sample_id}.npy", tagging.tag_character(sample["char_pos"]))
      np.save(root / "bounds" / f"{sample_id}.npy", np.array([index * 1000, index * 1000 + num_frames - 1]))
      for key in CAPTION_KEYS:
        (root / key / f"{sample_id}.txt").write_text(sample[key], encoding="utf-8")
        if clip_features is not None:
          features, mask = clip_features([sample[key]])
          length = int(np.asarray(mask)[0].sum())
          for kind, array in (("seq", np.asarray(features)[0, :length]), ("token", np.asarray(features)[0, length - 1])):
            (root / f"{key}_clip" / kind).mkdir(parents=True, exist_ok=True)
            np.save(root / f"{key}_clip" / kind / f"{sample_id}.npy", array.astype(np.float32))
    written[f"{subset}_{split}_split.txt"] = ids
  train, test = written.get(f"{subset}_train_split.txt", []), written.get(f"{subset}_test_split.txt", [])
  num_val = len(test) // 10
  written.update({"full_train_split.txt": train, "full_test_split.txt": test, "clatr_train_split.txt": train,
                  "clatr_val_split.txt": test[:num_val], "clatr_test_split.txt": test[num_val:]})
  for name, ids in written.items():
    if ids:
      (root / name).write_text("\n".join(ids), encoding="utf-8")
  return written


def _define_flags() -> None:
  """Flags of the CLI only: importing this module (as every training run does) defines none."""
  flags.DEFINE_string("path", None, "An E.T. dataset directory to validate.")
  flags.DEFINE_bool("retag", False, "With --path: recompute the tags from traj/ and char/ and compare.")
  flags.DEFINE_string("export", None, "Write the embedded procedural data in the E.T. layout here.")
  flags.DEFINE_enum("subset", "pure", ["pure", "mixed"], "With --export: the procedural subset.")
  flags.DEFINE_integer("train_size", 100, "With --export: train samples.")
  flags.DEFINE_integer("test_size", 20, "With --export: test samples.")
  flags.DEFINE_integer("max_frames", camera.MAX_FRAMES, "With --export: frames per sample at most.")


def main(argv) -> None:
  args = flags.FLAGS
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    if (args.path is None) == (args.export is None):
      raise DataError("give exactly one of --path=DIR (validate) or --export=DIR (write the embedded data)")
    if args.export:
      written = export_embedded(args.export, args.subset, {"train": args.train_size, "test": args.test_size},
                                max_frames=args.max_frames)
      summary = {"exported": args.export, "splits": {name: len(ids) for name, ids in written.items()}}
    else:
      summary = validate(args.path, retag=args.retag)
      print(f"{summary['num_samples']} samples in {args.path}")
      for name, count in summary["splits"].items():
        print(f"  {name}: {count}")
      frames = summary["frames"]
      print(f"frames: {frames['total']} in all, {frames['min']}–{frames['max']} per sample (mean {frames['mean']:.1f})")
      print("camera classes (steps): " + ", ".join(f"{name} {count}" for name, count in
                                                   summary["camera_classes"].items()))
      print(f"optional folders: {', '.join(summary['optional_folders']) or 'none'}")
    print(json.dumps(summary))
  except StoryjaxError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
