"""The laeo task end to end (every config key read, exact resume with BatchNorm and plateau state), its augmentation,
class balancing, and the social analysis (storyjax/social.py) against brute-force references."""

import json

import jax
import numpy as np
import pytest
from test_configs import KeyReads, exercise, leaf_keys

from storyjax import social
from storyjax import train as train_lib
from storyjax.data.laeo import augment
from storyjax.data.pipeline import ClassBalancedSource, SubsetSource
from storyjax.errors import ConfigError

from conftest import train_crashing_at_step

pytestmark = pytest.mark.usefixtures("fast_compile")

LAEO_CONFIGS = ("laeo",)


def smoke_config():
  from configs import laeo

  config = laeo.get_config("smoke")
  config.mesh.update({"data": 1})
  return config


def logged(workdir):
  return {record["step"]: record for record in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def key_run(runs_dir):
  """A smoke run of configs/laeo.py with KeyReads inside (train with quick evaluations, full evaluation with the
  social analysis) → (its workdir, the keys nothing read)."""
  config = smoke_config()
  workdir = runs_dir / "keys_laeo"
  with pytest.MonkeyPatch.context() as patch:
    reads = KeyReads(patch, config)
    exercise(config, workdir)
  return workdir, sorted(leaf_keys(config) - reads.read)


@pytest.mark.slow
def test_every_key_is_read_and_the_evaluation_reports_everything(key_run):
  workdir, unread = key_run
  assert unread == []
  records = logged(workdir)
  assert {"eval/ap", "eval/accuracy", "eval/auc"} <= set(records[1])
  assert np.isfinite(records[2]["loss"]) and records[2]["lr"] > 0
  assert (workdir / "social_graph.png").stat().st_size > 1000


@pytest.mark.slow
def test_resumes_exactly_with_batch_norm_and_plateau_state(runs_dir, key_run):
  """The key run (2 steps, a quick evaluation after each) against a crash in step 2 and a restart from step 1's
  checkpoint: BatchNorm statistics and the plateau schedule's state (smoke: patience 1) come back exactly."""
  reference = logged(key_run[0])
  config = smoke_config()
  config.update({"total_steps": 2, "checkpoint_every": 1, "eval_every": 1})
  config.eval.at_end = False
  workdir = runs_dir / "laeo_crashed"
  train_crashing_at_step(config, workdir, crash_step=2)
  train_lib.train(config, workdir)
  resumed = logged(workdir)
  for metric in ("loss", "grad_norm", "lr", "eval/ap"):
    assert resumed[2][metric] == reference[2][metric], metric


def test_augmentation_mirrors_the_scene_crops_exchanged_with_the_map_channels():
  rng = np.random.default_rng(0)
  head_left, head_right, head_map = (rng.uniform(0, 1, (8, 3, 64, 64, 3)).astype(np.float32) for _ in range(3))
  left, right, maps = augment.augment_pair(
    jax.random.key(0), head_left, head_right, head_map, shift=0, zoom=0.0, brightness=(1.0, 1.0), channel_shift=0.0
  )
  flipped = 0
  for index in range(8):
    if np.allclose(left[index], head_left[index], atol=1e-5):
      np.testing.assert_allclose(right[index], head_right[index], atol=1e-5)
      np.testing.assert_array_equal(maps[index], head_map[index])
    else:
      flipped += 1
      np.testing.assert_allclose(left[index], head_right[index, :, :, ::-1], atol=1e-5)  # mirrored and exchanged
      np.testing.assert_allclose(right[index], head_left[index, :, :, ::-1], atol=1e-5)
      np.testing.assert_array_equal(maps[index], head_map[index, :, :, ::-1][..., [1, 0, 2]])
  assert 0 < flipped < 8
  # Photometric jitter stays in [0, 1] and is shared by all frames and both heads of an example.
  left, right, _ = augment.augment_pair(
    jax.random.key(1), np.full_like(head_left, 0.5), np.full_like(head_right, 0.5), head_map, 2, 0.04, (0.5, 1.4), 0.35
  )
  centre = np.asarray(left)[:, :, 32, 32]
  assert np.all((centre >= 0) & (centre <= 1))
  np.testing.assert_allclose(centre, np.broadcast_to(centre[:, :1], centre.shape), atol=1e-6)
  np.testing.assert_allclose(np.asarray(right)[:, :, 32, 32], centre, atol=1e-6)
  assert np.ptp(centre[:, 0, 0]) > 0.05


def test_class_balanced_source_repeats_the_minority_class():
  source = [{"index": index} for index in range(10)]
  labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  balanced = ClassBalancedSource(source, labels)
  indices = [balanced[index]["index"] for index in range(len(balanced))]
  assert len(balanced) == 16
  assert sum(labels[indices]) == 8 and set(np.flatnonzero(labels == 0)) == {i for i in indices if labels[i] == 0}
  with pytest.raises(ConfigError, match="only one class"):
    ClassBalancedSource(source, np.zeros(10))
  subset = SubsetSource(source, [3, 1])
  assert [subset[0]["index"], subset[1]["index"]] == [3, 1] and len(subset) == 2


# --- Social analysis ---------------------------------------------------------------------------------------------


def constant_track(identity, start, length, x):
  """A track whose crop at shot frame f is filled with f/100, at horizontal position x."""
  crops = np.broadcast_to(((start + np.arange(length)) / 100.0)[:, None, None, None], (length, 64, 64, 3))
  boxes = np.tile([x, 40, x + 20, 60], (length, 1)).astype(float)
  return social.HeadTrack(identity, start, crops.astype(np.float32), boxes)


def mean_left_frame(batch):
  """A stand-in model: the mean over the window of the left crop's value (so each window's score is known)."""
  return batch["head_left"].mean(axis=(1, 2, 3, 4))


def test_score_shot_enumerates_overlapping_pairs_and_windows():
  tracks = [
    constant_track(7, 0, 30, x=20),
    constant_track(8, 5, 20, x=120),  # frames 5–24
    constant_track(9, 26, 4, x=200),  # overlaps track 0 by 4 frames only, never track 1
  ]
  scores = social.score_shot(mean_left_frame, tracks, (180, 320), window=10)
  assert sorted(scores) == [(0, 1), (0, 2)]
  pair = scores[0, 1]
  np.testing.assert_array_equal(pair.frames, np.arange(5, 25))
  assert len(pair.window_scores) == 20 - 10 + 1
  # Track 0 is on the left: window w covers frames 5+w … 14+w, its score the mean of those frames / 100.
  expected_windows = np.array([np.mean(np.arange(5 + w, 15 + w)) / 100 for w in range(11)])
  np.testing.assert_allclose(pair.window_scores, expected_windows, rtol=1e-6)
  expected_frames = [np.mean([expected_windows[w] for w in range(11) if w <= f - 5 < w + 10]) for f in range(5, 25)]
  np.testing.assert_allclose(pair.frame_scores, expected_frames, rtol=1e-6)
  # A 4-frame intersection is padded to one window: 3 copies of the first frame before, 3 of the last after.
  short = scores[0, 2]
  assert len(short.window_scores) == 1
  np.testing.assert_allclose(short.window_scores, [np.mean([26] * 4 + [27, 28] + [29] * 4) / 100], rtol=1e-6)


def test_pair_windows_map_marks_left_right_and_the_others():
  tracks = [constant_track(1, 0, 12, x=200), constant_track(2, 0, 12, x=20), constant_track(3, 0, 12, x=110)]
  inputs, frames = social.pair_windows(tracks, 0, 1, (180, 320), window=10)
  assert inputs["head_map"].shape == (3, 10, 64, 64, 3) and frames.shape == (3, 10)
  head_map = inputs["head_map"][0, 0]
  columns = [np.argmax(head_map[..., channel].sum(0)) for channel in range(3)]
  assert columns[0] < columns[2] < columns[1]  # track 1 (x = 20) is the left head, track 2 between them
  np.testing.assert_allclose(inputs["head_left"][0, :, 0, 0, 0], np.arange(10) / 100, rtol=1e-6)


def test_average_laeo_coexistence_and_friendness():
  tracks = [constant_track(0, 0, 40, x=20), constant_track(1, 10, 20, x=120), constant_track(2, 0, 40, x=220)]
  scores = social.score_shot(mean_left_frame, tracks, (180, 320), window=10)
  statistics = social.shot_statistics(tracks, scores)
  assert statistics.coexistence_ratio == {(0, 1): 0.5, (0, 2): 1.0, (1, 2): 0.5}
  np.testing.assert_allclose(statistics.average_laeo[0, 1], scores[0, 1].frame_scores.mean())
  assert statistics.pair_score[0, 2] == pytest.approx(scores[0, 2].window_scores.max())
  other_shot = social.ShotStatistics({(0, 1): 0.9}, {(0, 1): 1.0}, {(0, 1): 0.95})
  friendness = social.friendness([statistics, other_shot])
  assert friendness[0, 1] == pytest.approx((statistics.average_laeo[0, 1] + 0.9) / 2)
  assert friendness[1, 2] == pytest.approx(statistics.average_laeo[1, 2])
