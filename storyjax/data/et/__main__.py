"""The E.T. dataset CLI: `python -m storyjax.data.et --path=DIR [--retag]` or `--export=DIR` (see layout.py)."""
import json

from absl import flags

from storyjax import cli
from storyjax.data.et import camera, procedural
from storyjax.data.et.layout import export_embedded, validate
from storyjax.errors import ConfigError


def _define_flags() -> None:
  """Flags of the CLI only: importing this module (as every training run does) defines none."""
  flags.DEFINE_string("path", None, "An E.T. dataset directory to validate.")
  flags.DEFINE_bool("retag", False, "With --path: recompute the tags from traj/ and char/ and compare.")
  flags.DEFINE_string("export", None, "Write the embedded procedural data in the E.T. layout here.")
  flags.DEFINE_enum("subset", "pure", list(procedural.SUBSETS), "With --export: the procedural subset.")
  flags.DEFINE_integer("train_size", 100, "With --export: train samples.")
  flags.DEFINE_integer("test_size", 20, "With --export: test samples.")
  flags.DEFINE_integer("seed", 0, "With --export: the procedural seed.")
  flags.DEFINE_integer("max_frames", camera.MAX_FRAMES, "With --export: frames per sample at most.")


_EXPORT_FLAGS = ("subset", "train_size", "test_size", "seed", "max_frames")


def _print_summary(path: str, summary: dict) -> None:
  print(f"{summary['num_samples']} samples, {summary['num_steps']} steps in {path}")
  for name, count in summary["splits"].items():
    print(f"  {name}: {count}")
  frames = summary["frames"]
  print(f"frames: {frames['total']} in all, {frames['min']}–{frames['max']} per sample (mean {frames['mean']:.1f})")
  classes = summary["camera_classes"]
  print("camera classes (steps): " + ", ".join(f"{name} {count}" for name, count in classes.items()))
  print(f"optional folders: {', '.join(summary['optional_folders']) or 'none'}; precomputed CLIP features: "
        f"{', '.join(summary['clip_features']) or 'none'}")
  for key in ("cam_tag_agreement", "char_tag_agreement"):
    if key in summary:
      print(f"{key.split('_')[0]} tags recomputed from the trajectories agree with the stored ones on "
            f"{100 * summary[key]:.2f}% of the steps")


def main() -> None:
  args = flags.FLAGS
  if (args.path is None) == (args.export is None):
    raise ConfigError("give exactly one of --path=DIR (validate) or --export=DIR (write the embedded data)")
  if args.export:
    if args.retag:
      raise ConfigError("--retag goes with --path=DIR, not --export")
    written = export_embedded(args.export, args.subset, {"train": args.train_size, "test": args.test_size},
                              seed=args.seed, max_frames=args.max_frames)
    summary = {"exported": args.export, "splits": {name: len(ids) for name, ids in written.items()}}
    print(f"wrote {args.export}: " + ", ".join(f"{name} {count}" for name, count in summary["splits"].items()))
  else:
    given = [name for name in _EXPORT_FLAGS if args[name].present]
    if given:
      raise ConfigError(f"--{', --'.join(given)} go with --export=DIR, not --path")
    summary = validate(args.path, retag=args.retag)
    _print_summary(args.path, summary)
  print(json.dumps(summary))


if __name__ == "__main__":
  _define_flags()
  cli.run_program(main)
