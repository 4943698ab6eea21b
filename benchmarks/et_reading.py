"""Random-access read rate of the released E.T. layout (ETSource) and its prepared form (PreparedETSource).

  python benchmarks/et_reading.py --num_samples=500

Exports --num_samples embedded samples (pure, train) in the released layout, with seeded random stand-ins for
the precomputed CLIP features of both captions (--clip_dim wide, 0 for none), prepares them, then reads every item
of each source in one random order, --repeats times, in this one thread. Prints one JSON object: items per second
for both (median over repeats), their ratio, the preparation time and the sizes on disk.
"""

import json
import pathlib
import statistics
import tempfile
import time

from absl import app, flags
import numpy as np

from storyjax.data.et import camera, layout, prepared

_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 500, "Embedded samples to export and read.")
_MAX_FRAMES = flags.DEFINE_integer("max_frames", camera.MAX_FRAMES, "Frames per sample at most, and per item.")
_CLIP_DIM = flags.DEFINE_integer("clip_dim", 512, "Width of the stand-in CLIP features (E.T.'s: 512); 0: none.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes over each source; the median is reported.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where to write the layout and the prepared form (default: temp).")


def clip_stand_in(captions):
  """Captions (N,) → seeded features (N, 77, clip_dim) float32 and a mask over the 2 + words tokens."""
  lengths = np.array([min(len(caption.split()) + 2, 77) for caption in captions])
  rng = np.random.default_rng(len(captions))
  features = rng.normal(size=(len(captions), 77, _CLIP_DIM.value)).astype(np.float32)
  return features, np.arange(77) < lengths[:, None]


def items_per_sec(source, order: np.ndarray) -> float:
  rates = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for index in order:
      source[int(index)]
    rates.append(len(order) / (time.perf_counter() - start))
  return statistics.median(rates)


def directory_bytes(path: pathlib.Path) -> int:
  return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def run(workdir: pathlib.Path) -> dict:
  layout_dir, prepared_dir = workdir / "layout", workdir / "prepared"
  layout.export_embedded(
    layout_dir,
    "pure",
    {"train": _NUM_SAMPLES.value},
    max_frames=_MAX_FRAMES.value,
    clip_features=clip_stand_in if _CLIP_DIM.value else None,
  )
  start = time.perf_counter()
  prepared.prepare(layout_dir, prepared_dir, max_frames=_MAX_FRAMES.value)
  prepare_sec = time.perf_counter() - start
  et_source = layout.ETSource(layout_dir, "pure", "train", max_frames=_MAX_FRAMES.value)
  prepared_source = prepared.PreparedETSource(prepared_dir, "pure", "train", max_frames=_MAX_FRAMES.value)
  order = np.random.default_rng(0).permutation(len(et_source))
  et_rate, prepared_rate = items_per_sec(et_source, order), items_per_sec(prepared_source, order)
  return {
    "num_samples": len(et_source),
    "max_frames": _MAX_FRAMES.value,
    "clip_dim": _CLIP_DIM.value,
    "et_items_per_sec": et_rate,
    "prepared_items_per_sec": prepared_rate,
    "prepared_over_et": prepared_rate / et_rate,
    "prepare_sec": prepare_sec,
    "layout_mb": directory_bytes(layout_dir) / 2**20,
    "prepared_mb": directory_bytes(prepared_dir) / 2**20,
  }


def main(argv):
  del argv
  if _WORKDIR.value:
    report = run(pathlib.Path(_WORKDIR.value))
  else:
    with tempfile.TemporaryDirectory() as workdir:
      report = run(pathlib.Path(workdir))
  print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)
