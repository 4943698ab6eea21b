"""MuHPC: multimodal person clustering in three stages (thesis §2.1.1, Figure 2.2), on person tracks.

Stage 1 (faces): C1C over the tracks with a face (cannot-links between concurrent tracks) with a threshold on
  the first-neighbour distance, so the clusters stay pure (frontal and profile views of one person may stay apart).
Stage 2 (voices bridge): the stage-1 clusters are linked again, FINCH's rule on their mean voices (clusters with
  a speaking track only), keeping an edge only when both modalities concur: the voice distance is under
  `voice` and the face distance of the two clusters' mean faces under the looser `face_bridge`; repeated until
  nothing merges. Cannot-links are carried and chained joins split as in C1C.
Stage 3 (bodies and editing): a face-less track joins the cluster of its most body-similar assigned track in a
  shot at most `shot_window` shots away (same person, same clothes, nearby in the edit) when the body distance
  is under `body` and no track of that cluster is on screen with it; accepted closest first, repeated so that
  chains of face-less shots join too. The face-less tracks still left are clustered among themselves by C1C on
  bodies (same threshold); tracks with neither face nor body stay alone.

Distances are cosine distances 1 − cos. The thresholds are `MuhpcThresholds` (configs/clustering.py `muhpc`).
"""

import dataclasses

import numpy as np

from storyjax.clustering import hierarchy
from storyjax.clustering.neighbours import NeighbourSearch, normalise


@dataclasses.dataclass(frozen=True)
class MuhpcThresholds:
  face: float = 0.4
  voice: float = 0.4
  face_bridge: float = 0.85
  body: float = 0.3
  shot_window: int = 1


def _bridge_by_voice(labels, face, voice, has_voice, forbidden, thresholds, search):
  """Stage 2 on the clusters `labels` (T1,) of face tracks → merged labels (T1,)."""
  while (num := int(labels.max()) + 1) > 1:
    speaking = np.flatnonzero(np.bincount(labels[has_voice], minlength=num) > 0)
    if len(speaking) < 2:
      break
    position = np.full(num, -1)
    position[speaking] = np.arange(len(speaking))
    voice_means = hierarchy.cluster_means(voice[has_voice], position[labels[has_voice]], len(speaking))
    face_means = normalise(hierarchy.cluster_means(face, labels, num))
    speaking_forbidden = hierarchy.subset_pairs(forbidden, speaking, num)
    neighbour, distance = hierarchy.first_neighbours(voice_means, speaking_forbidden, thresholds.voice, search)
    linked = neighbour >= 0
    face_distance = 1.0 - np.sum(face_means[speaking] * face_means[speaking[np.maximum(neighbour, 0)]], axis=1)
    neighbour = np.where(linked & (face_distance <= thresholds.face_bridge), neighbour, -1)
    merged = np.arange(num)
    # Speaking clusters take their group's id past num (silent ones keep their own), then renumber.
    merged[speaking] = num + hierarchy.link_level(neighbour, distance, speaking_forbidden)
    merged = hierarchy.canonical_labels(merged)
    if merged.max() + 1 == num:
      break
    labels, forbidden = merged[labels], hierarchy.lift_pairs(forbidden, merged)
  return labels


def _attach_faceless(labels, body, has_body, shots, partners, thresholds):
  """Stage 3's attachment: labels (T,) with -1 for unassigned tracks → labels with some of them attached."""
  body = normalise(body)
  while True:
    assigned = np.flatnonzero((labels >= 0) & has_body)
    proposals = []
    for track in np.flatnonzero((labels < 0) & has_body):
      nearby = assigned[np.abs(shots[assigned] - shots[track]) <= thresholds.shot_window]
      if not len(nearby):
        continue
      distance = 1.0 - body[nearby] @ body[track]
      for candidate in np.argsort(distance, kind="stable"):
        if distance[candidate] > thresholds.body:
          break
        cluster = labels[nearby[candidate]]
        if not any(labels[partner] == cluster for partner in partners[track]):
          proposals.append((float(distance[candidate]), int(track), int(cluster)))
          break
    accepted = 0
    for _, track, cluster in sorted(proposals):
      if not any(labels[partner] == cluster for partner in partners[track]):
        labels[track] = cluster
        accepted += 1
    if not accepted:
      return labels


def muhpc(
  face: np.ndarray,
  voice: np.ndarray,
  body: np.ndarray,
  has_face: np.ndarray,
  has_voice: np.ndarray,
  has_body: np.ndarray,
  cannot_link: np.ndarray,
  shots: np.ndarray,
  *,
  thresholds: MuhpcThresholds = MuhpcThresholds(),
  search: NeighbourSearch = NeighbourSearch(),
) -> np.ndarray:
  """Person tracks → (T,) cluster labels (module docstring). face (T, Df), voice (T, Dv), body (T, Db) per-track
  features with (T,) presence masks (absent rows are ignored), cannot_link (P, 2) pairs of track rows, shots (T,)
  shot index of each track."""
  num_tracks = len(shots)
  has_face, has_voice, has_body = (np.asarray(mask, bool) for mask in (has_face, has_voice, has_body))
  for name, array, mask in (("face", face, has_face), ("voice", voice, has_voice), ("body", body, has_body)):
    if len(array) != num_tracks or mask.shape != (num_tracks,):
      raise ValueError(f"{name} features and mask must have {num_tracks} rows, got {len(array)} and {mask.shape}")
  cannot_link = np.asarray(cannot_link, np.int64).reshape(-1, 2)
  labels = np.full(num_tracks, -1, np.int64)

  face_rows = np.flatnonzero(has_face)
  if len(face_rows):
    face_pairs = hierarchy.subset_pairs(cannot_link, face_rows, num_tracks)
    stage1 = hierarchy.partitions(face[face_rows], None, face_pairs, max_distance=thresholds.face, search=search)[-1]
    forbidden = hierarchy.lift_pairs(face_pairs, stage1)
    stage2 = _bridge_by_voice(
      stage1, face[face_rows], voice[face_rows], has_voice[face_rows], forbidden, thresholds, search
    )
    labels[face_rows] = stage2

  partners = [[] for _ in range(num_tracks)]
  for a, b in cannot_link:
    partners[a].append(b)
    partners[b].append(a)
  labels = _attach_faceless(labels, body, has_body, np.asarray(shots), partners, thresholds)

  rest = np.flatnonzero((labels < 0) & has_body)
  if len(rest):
    rest_labels = hierarchy.partitions(
      body[rest],
      None,
      hierarchy.subset_pairs(cannot_link, rest, num_tracks),
      max_distance=thresholds.body,
      search=search,
    )[-1]
    labels[rest] = labels.max() + 1 + rest_labels
  alone = np.flatnonzero(labels < 0)
  labels[alone] = labels.max() + 1 + np.arange(len(alone))
  return hierarchy.canonical_labels(labels)
