"""People clustering (thesis §2.1.1): FINCH-style, C1C and MuHPC on the embedded synthetic episodes by default.

  python -m storyjax.cluster --config=configs/clustering.py                       # → runs/clustering
  python -m storyjax.cluster --config=configs/clustering.py --config.data.source=files --config.data.root=EPISODES
  python -m storyjax.cluster --config=configs/clustering.py --config.baselines.num_clusters=threshold

data       source "synthetic" (num_episodes episodes from seed; the other keys are their EpisodeSpec, see
           storyjax/data/people.py) | "files" (root: a folder of episode folders, tracks.csv + features.npz).
methods    comma-separated, of finch_face, c1c_face, finch_body, c1c_body, c1c_face_body, muhpc
           (storyjax/cluster.py).
baselines  the partition the FINCH / C1C baselines return: num_clusters "identities" (the true number of
           identities of the clustered tracks) or "threshold" (stop merging at cosine distance max_distance).
muhpc      MuHPC's thresholds (cosine distances) and the editing window of stage 3 (storyjax/clustering/muhpc.py).
search     the first-neighbour search (storyjax/clustering/neighbours.py): method auto | exact | approximate.
write_labels  WORKDIR/labels/<episode>.csv with every method's label per track.
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  if variant not in (None, "smoke"):
    raise ValueError(f"unknown variant {variant!r} of configs/clustering.py: use none or 'smoke'")
  config = ml_collections.ConfigDict()
  config.name = "clustering" if variant is None else f"clustering_{variant}"
  config.data = ml_collections.ConfigDict(
    {
      "source": "synthetic",
      "root": "",
      "num_episodes": 2 if variant == "smoke" else 20,
      "seed": 0,
      "num_identities": 10,
      "num_scenes": 4 if variant == "smoke" else 12,
      "missing_face_rate": 0.3,
      "speaking_rate": 0.5,
      "offscreen_voice_rate": 0.1,
    }
  )
  config.methods = "finch_face,c1c_face,finch_body,c1c_body,c1c_face_body,muhpc"
  config.baselines = ml_collections.ConfigDict({"num_clusters": "identities", "max_distance": 0.5})
  config.muhpc = ml_collections.ConfigDict(
    {"face": 0.4, "voice": 0.4, "face_bridge": 0.85, "body": 0.3, "shot_window": 1}
  )
  config.search = ml_collections.ConfigDict(
    {"method": "auto", "exact_max_points": 20_000, "block_size": 1024, "leaf_size": 1024, "num_trees": 4, "seed": 0}
  )
  config.write_labels = True
  return config
