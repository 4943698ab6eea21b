"""CLaTr: losses against numpy formulas, metrics against brute force, masking, training, and Director's use of it."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clatr as clatr_config
from configs import director as director_config
from storyjax import train as train_lib
from storyjax import trainer
from storyjax.data.et.sources import trajectory_source
from storyjax.errors import CheckpointError, ConfigError
from storyjax.metrics import distribution
from storyjax.metrics.clatr import clatr_score, retrieval_recall
from storyjax.models.clatr import Clatr
from storyjax.tasks import clatr as clatr_task
from storyjax.tasks import get_task, load_trained_task

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_duplicate_captions_by_ids_and_by_pooled_features():
  rng = np.random.default_rng(1)
  ids = jnp.array([[2, 5, 3, 0], [2, 5, 3, 0], [2, 6, 3, 0]])
  np.testing.assert_array_equal(clatr_task.duplicate_captions(ids, ids > 0), [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
  features = jnp.asarray(rng.normal(size=(3, 4, 8)), jnp.float32)
  features = features.at[1, 2].set(features[0, 1] * 3.0)  # same direction at the pooled position
  mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], bool)
  assert np.asarray(clatr_task.duplicate_captions(features, mask))[0, 1]
  assert not np.asarray(clatr_task.duplicate_captions(features, mask))[0, 2]


def test_clatr_score_and_retrieval_against_brute_force():
  rng = np.random.default_rng(2)
  text, traj = rng.normal(size=(2, 30, 6))
  cos = np.sum(text * traj, 1) / np.linalg.norm(text, axis=1) / np.linalg.norm(traj, axis=1)
  assert clatr_score(text, traj) == pytest.approx(max(0.0, 100 * cos.mean()))
  assert clatr_score(text, text) == pytest.approx(100.0)
  assert clatr_score(text, -text) == 0.0  # clamped after averaging
  positives = rng.random((30, 30)) < 0.1
  positives[np.arange(30), np.arange(30)] = True
  results = retrieval_recall(text, traj, ks=(1, 5), positives=positives)
  similarity = (text / np.linalg.norm(text, axis=1, keepdims=True)) @ (
    traj / np.linalg.norm(traj, axis=1, keepdims=True)
  ).T
  for k in (1, 5):
    top = np.argsort(-similarity, axis=1)[:, :k]
    assert results[f"R@{k}"] == pytest.approx(np.mean([positives[i, top[i]].any() for i in range(30)]))
  chance = retrieval_recall(text, traj, ks=(1,))["R@1_chance"]
  assert chance == pytest.approx(1 / 30)
  assert retrieval_recall(traj, traj, ks=(1,))["R@1"] == 1.0


def test_trajectory_means_ignore_padding():
  model = Clatr(num_frames=10, width=16, num_layers=1, num_heads=2, mlp_dim=32, vocab_size=20)
  rng = np.random.default_rng(3)
  camera_traj = rng.normal(size=(2, 10, 9)).astype(np.float32)
  mask = np.arange(10)[None] < np.array([[10], [6]])
  caption, caption_mask = np.ones((2, 4), np.int32), np.ones((2, 4), bool)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), camera_traj, mask, caption, caption_mask)
  encode = jax.jit(lambda traj: model.apply(params, traj, mask, method=Clatr.encode_trajectory))
  mean, logvar = encode(camera_traj)
  assert mean.shape == logvar.shape == (2, 16)
  changed = np.where(mask[..., None], camera_traj, 50.0).astype(np.float32)
  np.testing.assert_allclose(encode(changed)[0], mean, atol=1e-5)
  assert not np.allclose(encode(camera_traj + 1.0)[0], mean, atol=1e-3)  # the valid frames do matter
  decoded = model.apply(params, mean, mask, method=Clatr.decode)
  assert decoded.shape == (2, 10, 9) and np.all(np.asarray(decoded)[1, 6:] == 0)


def test_frozen_text_means_ignore_padded_tokens():
  model = Clatr(num_frames=10, width=16, num_layers=1, num_heads=2, mlp_dim=32, text_encoder="clip")
  rng = np.random.default_rng(4)
  features = rng.normal(size=(2, 5, 12)).astype(np.float32)  # (B, L, Dt) frozen caption features
  caption_mask = np.arange(5)[None] < np.array([[5], [3]])
  params = jax.jit(model.init)(
    jax.random.PRNGKey(0), np.zeros((2, 10, 9), np.float32), np.ones((2, 10), bool), features, caption_mask
  )
  encode = jax.jit(lambda caption: model.apply(params, caption, caption_mask, method=Clatr.encode_text)[0])
  changed = np.where(caption_mask[..., None], features, -7.0).astype(np.float32)
  np.testing.assert_allclose(encode(changed), encode(features), atol=1e-5)
  with pytest.raises(ValueError, match=r"\(B, L, Dt\)"):
    model.apply(params, np.zeros((2, 5), np.int32), caption_mask, method=Clatr.encode_text)


@pytest.fixture(scope="module")
def clatr_run(runs_dir):
  config = clatr_config.get_config("smoke")
  config.total_steps = 40
  config.checkpoint_every = 40
  config.mesh.update({"data": 1})
  workdir = runs_dir / "clatr"
  train_lib.train(config, workdir)
  return workdir


def test_training_lowers_the_loss_and_features_load(clatr_run):
  records = [json.loads(line) for line in (clatr_run / "metrics.jsonl").read_text().splitlines()]
  losses = [record["loss"] for record in records]
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
  assert {"reconstruction", "kl", "latent", "contrastive"} <= set(records[-1])
  features = _load_features(clatr_run)
  test = trajectory_source(clatr_config.get_config("smoke").data, "test")
  examples = [test[i] for i in range(3)]
  traj = features.trajectory_features(
    np.stack([e["camera_traj"] for e in examples]), np.stack([e["mask"] for e in examples])
  )
  text = features.text_features([e["caption"] for e in examples])
  assert traj.shape == text.shape == (3, 32) and np.all(np.isfinite(traj))
  with pytest.raises(ConfigError, match=r"T=64 .*\(1, 10, 9\)"):
    features.trajectory_features(np.zeros((1, 10, 9)), np.ones((1, 10), bool))


def test_evaluation_agrees_with_the_feature_loader(clatr_run):
  features = _load_features(clatr_run)
  results = features.task.evaluate(features.variables, clatr_run)
  test = features.task.source("test")
  examples = [test[i] for i in range(results["num_samples"])]
  assert results["num_samples"] == 16
  traj = features.trajectory_features(
    np.stack([e["camera_traj"] for e in examples]), np.stack([e["mask"] for e in examples])
  )
  text = features.text_features([e["caption_cam"] for e in examples])
  captions = np.array([e["caption_cam"] for e in examples])
  same_caption = captions[:, None] == captions[None]
  expected = retrieval_recall(text, traj, positives=same_caption)
  for key in ("R@1", "R@5", "R@10"):
    assert results[f"text_to_traj_{key}"] == pytest.approx(expected[key]), key
  # one random candidate is a positive with probability (same-caption count) / N
  assert results["text_to_traj_R@1_chance"] == pytest.approx(np.mean(same_caption.sum(1) / 16))
  cosine = np.sum(text * traj, 1) / np.linalg.norm(text, axis=1) / np.linalg.norm(traj, axis=1)
  assert results["positive_cosine"] == pytest.approx(cosine.mean(), abs=1e-4)
  assert results["reconstruction_mae"] > 0 and results["distinct_captions"] == len(set(captions))
  motions = [tuple(e["cam_classes"]) for e in examples]
  same_motion = np.array([[a == b for b in motions] for a in motions])
  expected = retrieval_recall(traj, text, ks=(5,), positives=same_motion)
  assert results["traj_to_text_class_R@5"] == pytest.approx(expected["R@5"])
  assert results["traj_to_text_class_R@5_chance"] == pytest.approx(expected["R@5_chance"])


def test_load_clatr_errors(tmp_path):
  config = director_config.get_config("smoke")
  config.eval.clatr_workdir = str(tmp_path)
  director = get_task(config)
  with pytest.raises(CheckpointError, match="missing .*config.json.*configs/clatr.py"):
    director._load_clatr()
  (tmp_path / "config.json").write_text(clatr_config.get_config("smoke").to_json())
  with pytest.raises(CheckpointError, match="no checkpoint.*configs/clatr.py"):
    director._load_clatr()
  (tmp_path / "config.json").write_text(director_config.get_config("smoke").to_json())
  with pytest.raises(CheckpointError, match="'director' run, not 'clatr'"):
    load_trained_task(tmp_path, "clatr")
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(CheckpointError, match="not valid JSON"):
    load_trained_task(tmp_path, "clatr")


def _load_features(workdir):
  task, variables = load_trained_task(workdir, "clatr")
  return task.feature_extractor(variables)


def _untrained_director(config):
  setup = trainer.TrainSetup(get_task(config), config)
  return setup, setup.variables(setup.init_state())


def test_director_evaluation_reports_clatr_metrics(runs_dir, clatr_run):
  config = director_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.eval.update({"clatr_workdir": str(clatr_run), "num_reference": 16, "num_samples": 8})
  config.data.test_size = 8
  setup, variables = _untrained_director(config)  # the metrics' plumbing is what is tested here
  results = setup.task.evaluate(variables, runs_dir / "director_with_clatr")
  for key in (
    "fd_clatr",
    "precision",
    "recall",
    "density",
    "coverage",
    "clatr_score",
    "fd_clatr_reference",
    "clatr_score_reference",
  ):
    assert np.isfinite(results[key]), key
  assert 0 <= results["precision"] <= 1 and 0 <= results["coverage"] <= 1 and results["fd_clatr"] >= 0


def test_director_evaluation_published_quirks_cover_the_reference_row(runs_dir, clatr_run):
  """eval.prdc_published_quirks scores the real test trajectories the same way as the generated ones."""
  num = 20  # the published P/R/D/C needs equal sizes and chunks (of ceil(N / 5)) larger than k = 3
  config = director_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.eval.update(
    {"clatr_workdir": str(clatr_run), "num_reference": num, "num_samples": num, "prdc_published_quirks": True}
  )
  config.data.test_size = num
  setup, variables = _untrained_director(config)
  results = setup.task.evaluate(variables, runs_dir / "director_published_quirks")
  encoder = _load_features(clatr_run)
  features = lambda examples: encoder.trajectory_features(
    np.stack([example["camera_traj"] for example in examples]), np.stack([example["mask"] for example in examples])
  )
  test, train = setup.task.source("test"), setup.task.source("train")
  expected = distribution.prdc(
    features([train[index] for index in range(num)]),
    features([test[index] for index in range(num)]),
    k=3,
    published_quirks=True,
  )
  for key, value in expected.items():
    assert results[f"{key}_reference"] == pytest.approx(value), key
