"""Time and peak memory of first-neighbour clustering at growing sizes, printed as one JSON object.

  python benchmarks/clustering.py                                  # 10k, 100k and 1M points, FINCH and C1C
  python benchmarks/clustering.py --sizes=2000 --methods=finch     # a quick check

Each size runs in its own process (so its peak resident memory is its own): `dim`-dimensional points in
size / points_per_identity Gaussian blobs (known identities); for C1C, tracks of `track_length` consecutive points of
one identity and, per track, `cannot_links_per_track` cannot-links to tracks of other identities. Reported per
size and method: the whole hierarchy's wall time (`seconds`, including the few compilations), the first level's
neighbour search timed again once compiled (`search_seconds`), the peak resident memory of the process
(`peak_rss_mb`, above the process's footprint after importing jax and storyjax) next to
the input's size (`input_mb`), the number of levels, and NMI of the partition closest to the true number of
identities. The search's recall@1 (the approximate search's first neighbour equals the exact one)
is measured on `recall_queries` random points. `growth` gives, between consecutive sizes, the exponent e of
time ∝ size^e (1 = linear).
"""

import itertools
import json
import math
import resource
import subprocess
import sys
import time

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["10000", "100000", "1000000"], "numbers of points")
flags.DEFINE_list("methods", ["finch", "c1c"], "finch (unconstrained) and/or c1c (tracks + cannot-links)")
flags.DEFINE_integer("dim", 64, "feature dimension")
flags.DEFINE_integer("points_per_identity", 200, "points per blob")
flags.DEFINE_integer("track_length", 10, "points per track (C1C)")
flags.DEFINE_integer("cannot_links_per_track", 2, "cannot-links drawn per track (C1C)")
flags.DEFINE_integer("recall_queries", 2000, "points whose approximate first neighbour is checked exactly")
flags.DEFINE_string("search", "auto", "neighbour search: auto | exact | approximate")
flags.DEFINE_integer("one_size", 0, "internal: run one size in this process")


def blobs(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(size, dim) points sorted by identity, and their (size,) identities."""
  num_identities = max(2, size // FLAGS.points_per_identity)
  centres = rng.normal(size=(num_identities, FLAGS.dim)).astype(np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  identities = np.sort(rng.integers(0, num_identities, size))
  noise = rng.normal(scale=0.3 / math.sqrt(FLAGS.dim), size=(size, FLAGS.dim)).astype(np.float32)
  return centres[identities] + noise, identities


def tracks(identities: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Consecutive runs of track_length points of one identity → (size,) track ids and (P, 2) cannot-links."""
  boundaries = (np.arange(len(identities)) % FLAGS.track_length == 0) | np.r_[True, identities[1:] != identities[:-1]]
  track_ids = np.cumsum(boundaries) - 1
  track_identity = identities[boundaries]
  num_tracks = len(track_identity)
  first = np.repeat(np.arange(num_tracks), FLAGS.cannot_links_per_track)
  second = rng.integers(0, num_tracks, len(first))
  keep = track_identity[first] != track_identity[second]
  return track_ids, np.stack([first[keep], second[keep]], axis=1)


def run_one(size: int) -> dict:
  from storyjax.clustering import c1c_partitions, neighbours
  from storyjax.clustering.neighbours import NeighbourSearch
  from storyjax.metrics import nmi

  baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the interpreter, jax and storyjax
  rng = np.random.default_rng(0)
  points, identities = blobs(size, rng)
  search = NeighbourSearch(method=FLAGS.search)
  report = {"size": size, "input_mb": points.nbytes / 2**20, "exact_search": search.uses_exact(size)}
  for method in FLAGS.methods:
    track_ids, cannot_link = tracks(identities, rng) if method == "c1c" else (None, None)
    start = time.perf_counter()
    levels = c1c_partitions(points, track_ids, cannot_link, search=search)
    seconds = time.perf_counter() - start
    counts = [int(level.max()) + 1 for level in levels]
    closest = min(range(len(levels)), key=lambda i: abs(counts[i] - identities.max() - 1))
    report[method] = {
      "seconds": seconds,
      "levels": counts,
      "nmi_closest_level": nmi(identities, levels[closest]),
    }
  start = time.perf_counter()
  _, found = neighbours.top_neighbours(points, 1, search)
  report["search_seconds"] = time.perf_counter() - start
  queries = rng.choice(size, min(FLAGS.recall_queries, size), replace=False)
  _, exact = neighbours.top_neighbours(points, 1, NeighbourSearch(method="exact"), query_rows=queries)
  report["recall_at_1"] = float(np.mean(found[queries, 0] == exact[:, 0]))
  report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline_mb
  return report


def main(argv):
  del argv
  if FLAGS.one_size:
    print(json.dumps(run_one(FLAGS.one_size)))
    return
  passed = [arg for arg in sys.argv[1:] if not arg.startswith("--sizes")]
  runs = []
  for size in map(int, FLAGS.sizes):
    output = subprocess.run(
      [sys.executable, __file__, f"--one_size={size}", *passed], check=True, capture_output=True, text=True
    ).stdout
    runs.append(json.loads(output.strip().splitlines()[-1]))
  growth = {}
  for small, large in itertools.pairwise(runs):
    ratio = math.log(large["size"] / small["size"])
    key = f"{small['size']}->{large['size']}"
    growth[key] = {
      method: math.log(large[method]["seconds"] / small[method]["seconds"]) / ratio for method in FLAGS.methods
    }
    growth[key]["peak_rss"] = math.log(large["peak_rss_mb"] / small["peak_rss_mb"]) / ratio
  import jax

  print(json.dumps({"backend": jax.default_backend(), "dim": FLAGS.dim, "runs": runs, "growth": growth}))


if __name__ == "__main__":
  app.run(main)
