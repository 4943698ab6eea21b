"""Clusters the people of episodes and scores it: `python -m storyjax.cluster --config=configs/clustering.py`.

For every episode (the embedded synthetic ones, or per-track feature files: storyjax/data/people.py) each method of
`config.methods` labels the tracks:
  finch_face, c1c_face    face clustering of the tracks with a face, from their face detections (a track takes its
                          detections' majority label under FINCH; C1C must-links them)
  finch_body, c1c_body    person clustering of every track by its body (the Re-ID-style baselines)
  c1c_face_body           person clustering by C1C on [face, body] (face part zero where the face is missing)
  muhpc                   MuHPC's three stages (storyjax/clustering/muhpc.py)
The baselines stop at the true number of identities of the tracks they cluster (`baselines.num_clusters =
"identities"`, the usual face-clustering protocol) or at `baselines.max_distance` ("threshold"); MuHPC always
uses its own thresholds. Scores are per episode, then averaged (thesis §2.1.1): NMI and WCP over the tracks each
method clusters, and for the person methods also over the tracks with a face (`face_`, comparable to the
face methods) and over the face-less tracks only (`faceless_`). Also counted: cannot-linked pairs
of tracks that share a cluster (always 0). Writes WORKDIR/results.json and WORKDIR/labels/<episode>.csv; the last
line printed is the JSON of the averages.
"""

import csv
import json
import pathlib

import ml_collections
import numpy as np

from storyjax.base_config import check_values
from storyjax.cli import run_cli
from storyjax.clustering import MuhpcThresholds, NeighbourSearch, c1c, hierarchy, muhpc
from storyjax.clustering.neighbours import normalise
from storyjax.data import people
from storyjax.errors import ConfigError
from storyjax.metrics import nmi, weighted_cluster_purity

FACE_METHODS = ("finch_face", "c1c_face")
PERSON_METHODS = ("finch_body", "c1c_body", "c1c_face_body", "muhpc")
SOURCES = ("synthetic", "files")


def _settings(config: ml_collections.ConfigDict):
  """Reads and checks every key once: (methods, search, thresholds, baseline rule, max distance)."""
  check_values(config)
  methods = tuple(method.strip() for method in config.methods.split(",") if method.strip())
  unknown = sorted(set(methods) - set(FACE_METHODS + PERSON_METHODS))
  if unknown or not methods:
    raise ConfigError(f"methods {unknown or '()'}: choose from {FACE_METHODS + PERSON_METHODS}")
  if config.baselines.num_clusters not in ("identities", "threshold"):
    raise ConfigError(
      f"baselines.num_clusters must be 'identities' or 'threshold', got {config.baselines.num_clusters!r}"
    )
  try:
    search = NeighbourSearch(**config.search.to_dict())
    thresholds = MuhpcThresholds(**config.muhpc.to_dict())
  except (TypeError, ValueError) as error:
    raise ConfigError(f"search / muhpc: {error}") from error
  return methods, search, thresholds, config.baselines.num_clusters, float(config.baselines.max_distance)


def episode_spec(config: ml_collections.ConfigDict) -> people.EpisodeSpec:
  """The synthetic episodes' EpisodeSpec from config.data."""
  data = config.data
  return people.EpisodeSpec(
    num_identities=data.num_identities,
    num_scenes=data.num_scenes,
    missing_face_rate=data.missing_face_rate,
    speaking_rate=data.speaking_rate,
    offscreen_voice_rate=data.offscreen_voice_rate,
  )


def load_episodes(config: ml_collections.ConfigDict) -> list[people.Episode]:
  data, root = config.data, config.data.root
  if data.source not in SOURCES:
    raise ConfigError(f"data.source must be one of {SOURCES}, got {data.source!r}")
  spec = episode_spec(config)
  if data.source == "synthetic":
    return people.sample_episodes(data.num_episodes, data.seed, spec)
  if not root:
    raise ConfigError("data.source='files' needs data.root, the folder of episode folders")
  return people.load_episodes(pathlib.Path(root))


def _majority(labels: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
  """Per-row labels (N,) of rows in groups (N,) → (num_groups,) each group's most frequent label (ties: lowest)."""
  pairs, counts = np.unique(np.stack([groups, labels], axis=1), axis=0, return_counts=True)
  pairs = pairs[np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))]
  first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
  best = np.full(num_groups, -1, np.int64)
  best[pairs[first, 0]] = pairs[first, 1]
  return best


def cluster_episode(episode: people.Episode, methods, search, thresholds, rule, max_distance) -> dict:
  """method → (T,) labels (-1 for tracks the method does not cluster)."""
  face_rows = np.flatnonzero(episode.has_face)
  face_pairs = hierarchy.subset_pairs(episode.cannot_link, face_rows, len(episode.shots))
  body_rows = np.flatnonzero(episode.has_body)
  body_pairs = hierarchy.subset_pairs(episode.cannot_link, body_rows, len(episode.shots))

  def count(rows):
    return len(np.unique(episode.identities[rows])) if rule == "identities" else None

  distance = max_distance if rule == "threshold" else None
  results = {}
  for method in methods:
    labels = np.full(len(episode.shots), -1, np.int64)
    if method in FACE_METHODS and len(face_rows):
      position = np.full(len(episode.shots), -1)
      position[face_rows] = np.arange(len(face_rows))
      detection_tracks = position[episode.face_detection_tracks]
      # FINCH clusters the detections one by one; C1C must-links each track's and keeps the cannot-links.
      tracks, pairs = (None, None) if method == "finch_face" else (detection_tracks, face_pairs)
      rows = c1c(episode.face_detections, tracks, pairs, count(face_rows), max_distance=distance, search=search)
      labels[face_rows] = _majority(rows, detection_tracks, len(face_rows))
    elif method in ("finch_body", "c1c_body", "c1c_face_body") and len(body_rows):
      features = episode.body[body_rows]
      if method == "c1c_face_body":
        features = np.concatenate([normalise(episode.face[body_rows]), normalise(features)], axis=1)
      pairs = None if method == "finch_body" else body_pairs
      labels[body_rows] = c1c(
        features, np.arange(len(body_rows)), pairs, count(body_rows), max_distance=distance, search=search
      )
    elif method == "muhpc":
      labels = muhpc(
        episode.face,
        episode.voice,
        episode.body,
        episode.has_face,
        episode.has_voice,
        episode.has_body,
        episode.cannot_link,
        episode.shots,
        thresholds=thresholds,
        search=search,
      )
    results[method] = labels
  return results


def score(episode: people.Episode, labels: np.ndarray, method: str) -> dict:
  """NMI / WCP of one method's labels on one episode, plus its cannot-link violations."""
  clustered = labels >= 0
  both = episode.cannot_link[(labels[episode.cannot_link] >= 0).all(axis=1)]
  scores = {"cannot_link_violations": int(np.sum(labels[both[:, 0]] == labels[both[:, 1]]))}
  subsets = {"": clustered}
  if method in PERSON_METHODS:
    subsets.update({"face_": clustered & episode.has_face, "faceless_": clustered & ~episode.has_face})
  for prefix, mask in subsets.items():
    if mask.any() and (episode.identities[mask] >= 0).all():
      scores[prefix + "nmi"] = nmi(episode.identities[mask], labels[mask])
      scores[prefix + "wcp"] = weighted_cluster_purity(episode.identities[mask], labels[mask])
  return scores


def write_labels(path: pathlib.Path, episode: people.Episode, labels: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["track", "identity", *labels])
    for row, track in enumerate(episode.track_ids):
      writer.writerow([track, episode.identities[row], *(labels[method][row] for method in labels)])


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  settings = _settings(config)
  episodes = load_episodes(config)
  per_episode = {}
  for episode in episodes:
    labels = cluster_episode(episode, *settings)
    per_episode[episode.name] = {method: score(episode, labels[method], method) for method in labels}
    if config.write_labels:
      write_labels(pathlib.Path(workdir) / "labels" / f"{episode.name}.csv", episode, labels)
  averages = {}
  for method in settings[0]:
    names = sorted({name for scores in per_episode.values() for name in scores[method]})
    averages[method] = {
      name: float(np.mean([scores[method][name] for scores in per_episode.values() if name in scores[method]]))
      for name in names
    }
  results = {"config": config.name, "episodes": len(episodes), "methods": averages, "per_episode": per_episode}
  pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
  (pathlib.Path(workdir) / "results.json").write_text(json.dumps(results, indent=2))
  print(json.dumps({"episodes": len(episodes), "methods": averages}))
  return results


if __name__ == "__main__":
  run_cli(run)
