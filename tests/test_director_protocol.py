"""Director's eval.protocol: "published" against a loop over DIRECTOR's released steps, "storyjax" as before.

The generator and the CLaTr encoder are numpy stubs, so only the protocol around them is tested: which split is
generated for which metric, which ground truth each generation meets, the chunks, the ×σ_data on CLaTr inputs.
"""

import math
import zlib

import jax
import numpy as np
import pytest

from configs import director as director_config
from storyjax.errors import ConfigError
from storyjax.metrics import clatr as clatr_metrics
from storyjax.metrics import distribution
from storyjax.tasks import get_task

FEATURES = 6  # stub CLaTr feature size
NUM_SAMPLES = 20  # eval.num_samples and data.test_size: P/R/D/C's 5 chunks of 4 are larger than k = 3
PROJECTION = np.random.default_rng(0).normal(size=(18, FEATURES))
TEXT_DIRECTION = np.array([0.0, 0.0, -1.0, -1.0, 0.0, 0.0])  # one the stub trajectory features tend to share


def _generated(camera_traj, mask):
  """Stub generation (T, 9) of one example: a distortion of its own ground truth, zero on padded frames."""
  wobble = np.sin(np.arange(camera_traj.shape[0]) / 3.0)[:, None]
  return (0.5 * np.asarray(camera_traj, np.float64) + wobble) * np.asarray(mask)[:, None]


def _trajectory_feature(camera_traj, mask):
  """Stub CLaTr mean (D,) of one trajectory (T, 9): nonlinear, so a ×σ_data on its input changes directions."""
  valid = np.asarray(camera_traj, np.float64)[np.asarray(mask, bool)]
  return np.tanh(np.concatenate([valid.mean(0), (valid**2).mean(0)]) @ PROJECTION)


def _text_feature(caption):
  """Stub CLaTr text mean (D,): one shared direction plus caption-specific noise."""
  return TEXT_DIRECTION + 0.5 * np.random.default_rng(zlib.crc32(caption.encode())).normal(size=FEATURES)


class StubEncoder:
  def trajectory_features(self, camera_traj, mask):
    return np.stack([_trajectory_feature(traj, valid) for traj, valid in zip(camera_traj, mask)])

  def text_features(self, captions):
    return np.stack([_text_feature(caption) for caption in captions])


def _key_id(rng) -> tuple:
  return tuple(np.asarray(jax.random.key_data(rng)).tolist())


def _stub_task(tmp_path, **eval_overrides):
  """The smoke Director task with the stub generator and encoder; returns (task, the noise keys drawn)."""
  config = director_config.get_config("smoke")
  config.eval.update(
    {
      "num_samples": NUM_SAMPLES,
      "num_reference": NUM_SAMPLES,
      "batch_size": 6,
      "num_plots": 0,
      "clatr_workdir": str(tmp_path),
    }
  )
  config.eval.update(eval_overrides)
  config.data.test_size = NUM_SAMPLES
  (tmp_path / "config.json").write_text("{}")
  task = get_task(config)
  keys = []

  def generate(variables, batch, rng, guidance_weight):
    keys.append(_key_id(rng))
    return np.stack([_generated(traj, mask) for traj, mask in zip(np.asarray(batch["camera_traj"]), batch["mask"])])

  task._generate = generate
  task._load_clatr = StubEncoder
  return task, keys


# ---- DIRECTOR's released evaluation, written out as loops ---------------------------------------------------------
def _released_fd(real, fake):
  """src/metrics/modules/fcd.py: float64 sums, covariance with the n − 1 divisor, Σ √eig(Σ1 Σ2)."""

  def fit(features):
    count = len(features)
    mean = sum(features) / count
    outer_sum = sum(np.outer(row, row) for row in features)
    return mean, (outer_sum - count * np.outer(mean, mean)) / (count - 1)

  (mean_real, cov_real), (mean_fake, cov_fake) = fit(real), fit(fake)
  sqrt_eigvals = np.sqrt(np.linalg.eigvals(cov_real @ cov_fake).astype(complex)).real
  return float(np.sum((mean_real - mean_fake) ** 2) + np.trace(cov_real) + np.trace(cov_fake) - 2 * sqrt_eigvals.sum())


def _released_prdc(generated, reference, k=3, chunks=5):
  """src/metrics/modules/prdc.py as src/metrics/callback.py calls it, update(pred, ref): real = generated."""
  size = math.ceil(len(generated) / chunks)  # torch.chunk
  scores = []
  for start in range(0, len(generated), size):
    real, fake = generated[start : start + size], reference[start : start + size]
    dist = [[math.dist(r, f) for f in fake] for r in real]

    def radius(points, i):  # the (k+1)-th smallest distance, the point itself included
      return sorted(math.dist(points[i], other) for other in points)[k]

    real_radius = [radius(real, i) for i in range(len(real))]
    fake_radius = [radius(fake, i) for i in range(len(fake))]
    rows, cols = range(len(real)), range(len(fake))
    scores.append(
      {
        "precision": np.mean([any(dist[i][j] < real_radius[i] for i in rows) for j in cols]),
        # fake_nn_dist.unsqueeze(1) against (N_real, N_fake) distances: fake radius i for real row i
        "recall": np.mean([any(dist[i][j] < fake_radius[i] for j in cols) for i in rows]),
        "density": np.mean([sum(dist[i][j] < real_radius[i] for i in rows) for j in cols]) / k,
        "coverage": np.mean([min(dist[i]) < real_radius[i] for i in rows]),
      }
    )
  return {name: float(np.mean([score[name] for score in scores])) for name in scores[0]}


def _released_clatr_score(traj_feats, text_feats):
  """src/metrics/modules/clatr_score.py: max(0, mean 100 · cos), each row unit-normalised."""
  cosines = [t @ c / np.linalg.norm(t) / np.linalg.norm(c) for t, c in zip(traj_feats, text_feats)]
  return max(0.0, float(np.mean([100 * cosine for cosine in cosines])))


def _released_pass(source, num_samples, sigma_data):
  """src/training/diffuser.py test_step over the first examples of a split: `data *= sigma_data` before sampling
  and encoding, so each example's ground truth and its own generation both reach CLaTr ×σ_data.

  Returns the generated, real and text features, lists of (D,)."""
  generated_feats, real_feats, text_feats = [], [], []
  for index in range(min(num_samples, len(source))):
    example = source[index]
    traj, mask = example["camera_traj"], example["mask"]
    generated_feats.append(_trajectory_feature(sigma_data * _generated(traj, mask), mask))
    real_feats.append(_trajectory_feature(sigma_data * np.asarray(traj, np.float64), mask))
    text_feats.append(_text_feature(example["caption"]))
  return generated_feats, real_feats, text_feats


def _released_protocol(task, num_samples, sigma_data):
  """src/evaluate.py: FD and P/R/D/C kept from the pass over the train split, CLaTr-Score from the test split's."""
  generated, real, _ = _released_pass(task.source("train"), num_samples, sigma_data)
  test_generated, _, test_text = _released_pass(task.source("test"), num_samples, sigma_data)
  return {
    "fd_clatr": _released_fd(generated, real),
    **_released_prdc(generated, real),
    "clatr_score": _released_clatr_score(test_generated, test_text),
  }


# ---- tests ----------------------------------------------------------------------------------------------------------
def test_published_protocol_matches_the_released_loop(tmp_path):
  task, keys = _stub_task(tmp_path, protocol="published")
  results = task.evaluate(None, tmp_path)
  expected = _released_protocol(task, NUM_SAMPLES, task.config.diffusion.sigma_data)
  assert 0 < expected["precision"] < 1 and 0 < expected["coverage"] < 1 and expected["clatr_score"] > 0, expected
  for name, value in expected.items():
    assert results[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
  assert results["num_train_samples"] == NUM_SAMPLES and results["num_samples"] == NUM_SAMPLES
  assert "fd_clatr_reference" not in results and "num_reference" not in results
  assert len(keys) == 4 + 4 and len(set(keys)) == len(keys)  # test and train batches of 6, 6, 6, 2: no key reused
  storyjax, _ = _stub_task(tmp_path)
  tag_keys = ("tag_accuracy", "reference_tag_accuracy", "tag_step_accuracy", "tag_accuracy_chance")
  assert {key: results[key] for key in tag_keys} == {key: storyjax.evaluate(None, tmp_path)[key] for key in tag_keys}


@pytest.mark.parametrize("quirks", [False, True])
def test_storyjax_protocol_is_unchanged(tmp_path, quirks):
  """The default: test generations against the first eval.num_reference train examples, no ×σ_data, same noise."""
  assert director_config.get_config().eval.protocol == "storyjax"
  task, keys = _stub_task(tmp_path, prdc_published_quirks=quirks)
  results = task.evaluate(None, tmp_path)
  encoder, train, test = StubEncoder(), task.source("train"), task.source("test")
  features = lambda examples, trajs: encoder.trajectory_features(trajs, [example["mask"] for example in examples])
  reference = [train[index] for index in range(NUM_SAMPLES)]
  examples = [test[index] for index in range(len(test))]
  reference_feats = features(reference, [example["camera_traj"] for example in reference])
  text_feats = encoder.text_features([example["caption"] for example in examples])
  for suffix, trajs in (
    ("", [_generated(example["camera_traj"], example["mask"]) for example in examples]),
    ("_reference", [example["camera_traj"] for example in examples]),
  ):
    traj_feats = features(examples, trajs)
    expected = {
      "fd_clatr": distribution.frechet_distance(reference_feats, traj_feats),
      **distribution.prdc(reference_feats, traj_feats, k=3, published_quirks=quirks),
      "clatr_score": clatr_metrics.clatr_score(text_feats, traj_feats),
    }
    assert {name: results[name + suffix] for name in expected} == expected, suffix
  assert results["protocol"] == "storyjax" and results["num_reference"] == NUM_SAMPLES
  rng = jax.random.PRNGKey(task.config.eval.seed)
  assert keys == [_key_id(jax.random.fold_in(rng, start)) for start in (0, 6, 12, 18)]


def test_unknown_protocol_is_refused_when_the_task_is_built():
  config = director_config.get_config("smoke")
  config.eval.protocol = "paper"
  with pytest.raises(ConfigError, match=r"eval.protocol='paper'; choose one of \('storyjax', 'published'\)"):
    get_task(config)


def test_too_few_samples_for_the_published_chunks_is_a_config_error(tmp_path):
  task, _ = _stub_task(tmp_path, protocol="published", num_samples=8)
  with pytest.raises(ConfigError, match="eval.num_samples=8: .*chunks of 2"):
    task.evaluate(None, tmp_path)
