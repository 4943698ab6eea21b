"""`python -m storyjax.cluster`: every key of configs/clustering.py is read, the methods rank as published on the
embedded episodes, episode files give the same labels as the episodes they were written from, bad configs fail."""

import csv
import json

import pytest
from test_configs import KeyReads, leaf_keys

from configs import clustering as clustering_config
from storyjax import cluster
from storyjax.data import people
from storyjax.errors import ConfigError

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  """The smoke config run once with every key read recorded → (results, workdir, unread keys)."""
  workdir = tmp_path_factory.mktemp("clustering")
  config = clustering_config.get_config("smoke")
  with pytest.MonkeyPatch.context() as patch:
    reads = KeyReads(patch, config)
    results = cluster.run(config, workdir)
  return results, workdir, sorted(leaf_keys(config) - reads.read)


def test_every_key_is_read_and_every_method_is_scored(smoke_run):
  results, workdir, unread = smoke_run
  assert unread == []
  assert results["episodes"] == 2
  for method, scores in results["methods"].items():
    assert (scores["cannot_link_violations"] == 0) == (not method.startswith("finch")), method
    assert 0 < scores["nmi"] <= 1 and 0 < scores["wcp"] <= 1, method
    assert ("faceless_nmi" in scores) == (method in cluster.PERSON_METHODS)
  assert json.loads((workdir / "results.json").read_text())["methods"] == results["methods"]
  rows = list(csv.DictReader((workdir / "labels" / "synthetic_000.csv").open()))
  assert set(rows[0]) == {"track", "identity", *cluster.FACE_METHODS, *cluster.PERSON_METHODS}
  assert len(rows) == len(
    people.sample_episodes(1, 0, cluster.episode_spec(clustering_config.get_config("smoke")))[0].shots
  )


def test_constraints_and_modalities_pay_off_on_the_embedded_episodes(tmp_path):
  """The README's claims on 3 default episodes: C1C beats FINCH on faces, MuHPC beats every C1C person baseline,
  on all tracks and on the face-less ones."""
  config = clustering_config.get_config()
  config.data.num_episodes, config.write_labels = 3, False
  scores = cluster.run(config, tmp_path)["methods"]
  for metric in ("nmi", "wcp"):
    assert scores["c1c_face"][metric] > scores["finch_face"][metric] + 0.05, metric
    for baseline in ("finch_body", "c1c_body", "c1c_face_body"):
      for subset in ("", "faceless_"):
        assert scores["muhpc"][subset + metric] > scores[baseline][subset + metric] + 0.05, (baseline, subset, metric)


def test_episode_files_give_the_labels_of_the_episodes_they_hold(smoke_run, tmp_path):
  _, workdir, _ = smoke_run
  config = clustering_config.get_config("smoke")
  for episode in people.sample_episodes(config.data.num_episodes, config.data.seed, cluster.episode_spec(config)):
    people.save_episode(episode, tmp_path / "episodes" / episode.name)
  config.data.update({"source": "files", "root": str(tmp_path / "episodes")})
  cluster.run(config, tmp_path / "run")
  for name in ("synthetic_000", "synthetic_001"):
    assert (tmp_path / "run" / "labels" / f"{name}.csv").read_text() == (workdir / "labels" / f"{name}.csv").read_text()


@pytest.mark.parametrize(
  ("key", "value", "message"),
  [
    ("methods", "c1c_face,kmeans", "kmeans"),
    ("baselines.num_clusters", "oracle", "baselines.num_clusters"),
    ("search.method", "fast", "fast"),
    ("data.source", "web", "data.source"),
    ("data.source", "files", "data.root"),
  ],
)
def test_bad_config_values_raise_a_config_error_naming_them(key, value, message, tmp_path):
  config = clustering_config.get_config("smoke")
  section, _, leaf = key.rpartition(".")
  (config[section] if section else config)[leaf] = value
  with pytest.raises(ConfigError, match=message):
    cluster.run(config, tmp_path)
