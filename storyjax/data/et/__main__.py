"""The E.T. dataset CLI: `python -m storyjax.data.et --path=DIR [--retag]`, `--path=DIR --prepare=OUT` (see
prepared.py) or `--export=DIR` (see layout.py)."""

import json

from absl import flags

from storyjax import program
from storyjax.data.et import camera, procedural
from storyjax.data.et.layout import CAPTION_KEYS, SUBSET_SPLITS, export_embedded, validate
from storyjax.data.et.prepared import RECORDS_PER_SHARD, prepare
from storyjax.errors import ConfigError


def _define_flags() -> None:
  """Flags of the CLI only: importing this module (as every training run does) defines none."""
  flags.DEFINE_string("path", None, "An E.T. dataset directory to validate (or, with --prepare, to prepare).")
  flags.DEFINE_bool("retag", False, "With --path: recompute the tags from traj/ and char/ and compare.")
  flags.DEFINE_string("prepare", None, "With --path: write its prepared (ArrayRecord) form to this new directory.")
  flags.DEFINE_list("subsets", None, f"With --prepare: some of {list(SUBSET_SPLITS)} (default: every split file).")
  flags.DEFINE_list("caption_keys", list(CAPTION_KEYS), "With --prepare: the captions whose CLIP features to keep.")
  flags.DEFINE_integer(
    "records_per_shard", RECORDS_PER_SHARD, "With --prepare: samples per ArrayRecord shard.", lower_bound=1
  )
  flags.DEFINE_string("export", None, "Write the embedded procedural data in the E.T. layout here.")
  flags.DEFINE_enum("subset", "pure", list(procedural.SUBSETS), "With --export: the procedural subset.")
  flags.DEFINE_integer("train_size", 100, "With --export: train samples.", lower_bound=1)
  flags.DEFINE_integer("test_size", 20, "With --export: test samples.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "With --export: the procedural seed.")
  flags.DEFINE_integer(
    "max_frames",
    camera.MAX_FRAMES,
    "With --export: frames per sample at most; with --prepare: frames per item (data.max_frames).",
    lower_bound=1,
  )


_VALIDATE, _PREPARE, _EXPORT = "--path=DIR", "--path=DIR --prepare=OUT", "--export=DIR"
_FLAG_USES = {
  "retag": (_VALIDATE,),
  "subsets": (_PREPARE,),
  "caption_keys": (_PREPARE,),
  "records_per_shard": (_PREPARE,),
  "max_frames": (_EXPORT, _PREPARE),
  "subset": (_EXPORT,),
  "train_size": (_EXPORT,),
  "test_size": (_EXPORT,),
  "seed": (_EXPORT,),
}


def _print_summary(path: str, summary: dict) -> None:
  print(f"{summary['num_samples']} samples, {summary['num_steps']} steps in {path}")
  for name, count in summary["splits"].items():
    print(f"  {name}: {count}")
  frames = summary["frames"]
  print(f"frames: {frames['total']} in all, {frames['min']}–{frames['max']} per sample (mean {frames['mean']:.1f})")
  classes = summary["camera_classes"]
  print("camera classes (steps): " + ", ".join(f"{name} {count}" for name, count in classes.items()))
  print(
    f"optional folders: {', '.join(summary['optional_folders']) or 'none'}; precomputed CLIP features: "
    f"{', '.join(summary['clip_features']) or 'none'}"
  )
  for key in ("cam_tag_agreement", "char_tag_agreement"):
    if key in summary:
      print(
        f"{key.split('_')[0]} tags recomputed from the trajectories agree with the stored ones on "
        f"{100 * summary[key]:.2f}% of the steps"
      )


def main() -> None:
  args = flags.FLAGS
  if (args.path is None) == (args.export is None):
    raise ConfigError(
      "give exactly one of --path=DIR (validate, or with --prepare=OUT prepare) or --export=DIR "
      "(write the embedded data)"
    )
  if args.export and args.prepare:
    raise ConfigError("--prepare=OUT goes with --path=DIR (the E.T. data to prepare), not --export")
  usage = _EXPORT if args.export else _PREPARE if args.prepare else _VALIDATE
  misplaced = [name for name, uses in _FLAG_USES.items() if args[name].present and usage not in uses]
  if misplaced:
    raise ConfigError(
      "; ".join(f"--{name} goes with {' or '.join(_FLAG_USES[name])}" for name in misplaced) + f", not {usage}"
    )
  if args.export:
    written = export_embedded(
      args.export,
      args.subset,
      {"train": args.train_size, "test": args.test_size},
      seed=args.seed,
      max_frames=args.max_frames,
    )
    summary = {"exported": args.export, "splits": {name: len(ids) for name, ids in written.items()}}
    print(f"wrote {args.export}: " + ", ".join(f"{name} {count}" for name, count in summary["splits"].items()))
  elif args.prepare:
    metadata = prepare(
      args.path,
      args.prepare,
      subsets=args.subsets,
      max_frames=args.max_frames,
      caption_keys=args.caption_keys,
      records_per_shard=args.records_per_shard,
    )
    summary = {
      "prepared": args.prepare,
      "source": args.path,
      "num_records": metadata["num_records"],
      "num_shards": len(metadata["shards"]),
      "max_frames": metadata["max_frames"],
      "caption_keys": metadata["caption_keys"],
      "splits": {name: split["size"] for name, split in metadata["splits"].items()},
    }
    print(
      f"wrote {args.prepare}: {summary['num_records']} samples in {summary['num_shards']} shards; "
      + ", ".join(f"{name} {count}" for name, count in summary["splits"].items())
    )
  else:
    summary = validate(args.path, retag=args.retag)
    _print_summary(args.path, summary)
  print(json.dumps(summary))


if __name__ == "__main__":
  _define_flags()
  program.run_program(main)
