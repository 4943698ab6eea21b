"""SCAM's metrics and the region probe: psnr and ssim against independent numpy references (the authors'
dataset-level PSNR), region_leak and swap_accuracy on hand cases, and the probe through the generic loop, read back
by RegionJudge (region readings against the pixel logits averaged by hand, differentiable stage features)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import region_attributes as region_config
from storyjax import train as train_lib
from storyjax.data.images.segmented import LABELS, PALETTE, TEXTURES, SegmentedSceneSource
from storyjax.errors import CheckpointError
from storyjax.metrics.regions import RegionJudge, psnr, region_leak, ssim, swap_accuracy
from storyjax.tasks import load_trained_task

pytestmark = pytest.mark.usefixtures("fast_compile")


def torchmetrics_psnr(batches) -> float:
  """PeakSignalNoiseRatio() of torchmetrics 0.7.3 updated batch by batch: running sums of squared errors and counts,
  a running target min and max that start at 0, then 10·log10(range² / (sse / count))."""
  sum_squared_error, count, min_target, max_target = 0.0, 0, 0.0, 0.0
  for predictions, targets in batches:
    sum_squared_error += float(np.sum((np.float64(predictions) - targets) ** 2))
    count += targets.size
    min_target, max_target = min(targets.min(), min_target), max(targets.max(), max_target)
  return 10 * np.log10((max_target - min_target) ** 2 / (sum_squared_error / count))


def test_psnr_is_the_dataset_level_psnr_of_torchmetrics():
  rng = np.random.default_rng(0)
  targets = rng.uniform(-1, 1, size=(6, 8, 8, 3)).astype(np.float32)
  reconstructions = targets + rng.normal(scale=[[[[0.01]]], [[[0.3]]], [[[0.1]]]] * 2, size=targets.shape)
  batches = [(reconstructions[start : start + 2], targets[start : start + 2]) for start in range(0, 6, 2)]
  assert psnr(reconstructions, targets) == pytest.approx(torchmetrics_psnr(batches), abs=1e-9)
  # One near-perfect image among noisy ones: the mean of per-image PSNRs is far above the dataset-level one.
  per_image = np.mean(
    [psnr(reconstruction[None], target[None]) for reconstruction, target in zip(reconstructions, targets)]
  )
  assert per_image > psnr(reconstructions, targets) + 5.0
  # The range starts from 0: targets in [0.5, 1] have data_range 1, not 0.5.
  positive = np.full((1, 4, 4, 3), 0.5)
  positive[0, 0, 0, 0] = 1.0
  assert psnr(positive + 0.1, positive) == pytest.approx(10 * np.log10(1.0 / 0.01))


def gaussian_window() -> np.ndarray:
  """(11, 11) Gaussian weights of σ 1.5 summing to 1."""
  offsets = np.arange(11) - 5.0
  weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * 1.5**2))
  return weights / weights.sum()


def ssim_by_windows(first, second, data_range) -> float:
  """SSIM by its definition, one 11×11 window at a time, over the windows inside the image."""
  weights, c1, c2 = gaussian_window(), (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  values = []
  for image_first, image_second in zip(first, second):
    for channel in range(first.shape[-1]):
      for row in range(first.shape[1] - 10):
        for column in range(first.shape[2] - 10):
          x = image_first[row : row + 11, column : column + 11, channel]
          y = image_second[row : row + 11, column : column + 11, channel]
          mean_x, mean_y = np.sum(weights * x), np.sum(weights * y)
          var_x, var_y = np.sum(weights * (x - mean_x) ** 2), np.sum(weights * (y - mean_y) ** 2)
          covariance = np.sum(weights * (x - mean_x) * (y - mean_y))
          values.append(
            (2 * mean_x * mean_y + c1) * (2 * covariance + c2) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
          )
  return float(np.mean(values))


def test_ssim_matches_a_window_by_window_reference():
  rng = np.random.default_rng(1)
  first = rng.uniform(-1, 1, size=(2, 13, 14, 2))
  second = np.clip(0.7 * first + rng.normal(scale=0.3, size=first.shape), -1, 1)
  assert ssim(first, second) == pytest.approx(ssim_by_windows(first, second, 2.0), rel=1e-10)
  assert ssim(first, second, data_range=1.0) == pytest.approx(ssim_by_windows(first, second, 1.0), rel=1e-10)
  assert ssim(first, first) == pytest.approx(1.0)
  with pytest.raises(ValueError, match="H, W >= 11"):
    ssim(first[:, :10], second[:, :10])


def test_region_leak_is_the_mean_change_outside_the_region():
  rng = np.random.default_rng(2)
  reconstructed = rng.uniform(-1, 1, size=(2, 4, 4, 3))
  region_mask = np.zeros((2, 4, 4), bool)
  region_mask[:, :, :2] = True  # the left half of both images: 16 pixels outside
  swapped = np.where(region_mask[..., None], rng.uniform(-1, 1, size=reconstructed.shape), reconstructed)
  assert region_leak(swapped, reconstructed, region_mask) == 0.0
  swapped[1, 3, 3] += 1.0  # one outside pixel moves by half the range in all three channels
  assert region_leak(swapped, reconstructed, region_mask) == pytest.approx(3 * 1.0 / 2 / (16 * 3))
  with pytest.raises(ValueError, match="nothing outside"):
    region_leak(swapped, reconstructed, np.ones((2, 4, 4), bool))


class OracleJudge:
  """A judge that reads every region right: the ids the images were drawn with."""

  def __init__(self, colour_ids, texture_ids):
    self.colour_ids, self.texture_ids = colour_ids, texture_ids

  def region_attributes(self, images, labels):
    del images, labels
    return self.colour_ids, self.texture_ids


def test_swap_accuracy_with_an_oracle_judge():
  source = SegmentedSceneSource("test", 8, image_size=32)
  examples, donors = [source[index] for index in range(4)], [source[index] for index in range(4, 8)]
  labels = np.stack([example["labels"] for example in examples])
  swapped_label = np.array([LABELS.index("body"), LABELS.index("head"), LABELS.index("body"), 0])
  rows = np.arange(4)
  donor_colour = np.stack([donor["colour_ids"] for donor in donors])
  donor_texture = np.stack([donor["texture_ids"] for donor in donors])
  swapped_colour = np.stack([example["colour_ids"] for example in examples])
  swapped_texture = np.stack([example["texture_ids"] for example in examples])
  swapped_colour[rows, swapped_label] = donor_colour[rows, swapped_label]
  swapped_texture[rows, swapped_label] = donor_texture[rows, swapped_label]
  images = np.zeros((4, 32, 32, 3), np.float32)  # the oracle does not look
  oracle = OracleJudge(swapped_colour, swapped_texture)
  right = {"swap_accuracy": 1.0, "colour_accuracy": 1.0, "texture_accuracy": 1.0}
  assert swap_accuracy(oracle, images, labels, donor_colour, donor_texture, swapped_label) == right
  other_colour = donor_colour.copy()
  other_colour[rows, swapped_label] = (donor_colour[rows, swapped_label] + 1) % len(PALETTE)
  assert swap_accuracy(oracle, images, labels, other_colour, donor_texture, swapped_label) == {
    "swap_accuracy": 0.0,
    "colour_accuracy": 0.0,
    "texture_accuracy": 1.0,
  }
  other_texture = donor_texture.copy()
  other_texture[rows[:2], swapped_label[:2]] = (donor_texture[rows[:2], swapped_label[:2]] + 1) % len(TEXTURES)
  assert swap_accuracy(oracle, images, labels, donor_colour, other_texture, swapped_label) == {
    "swap_accuracy": 0.5,
    "colour_accuracy": 1.0,
    "texture_accuracy": 0.5,
  }
  # One label for every swap; a label the donor lacks is refused.
  body = LABELS.index("body")
  assert swap_accuracy(oracle, images, labels, donor_colour, donor_texture, body)["colour_accuracy"] == np.mean(
    swapped_colour[:, body] == donor_colour[:, body]
  )
  lacking = donor_colour.copy()
  lacking[0, swapped_label[0]] = -1
  with pytest.raises(ValueError, match="present in its donor"):
    swap_accuracy(oracle, images, labels, lacking, donor_texture, swapped_label)


@pytest.fixture(scope="module")
def probe_run(runs_dir):
  """The smoke config at image size 32 through the generic loop: (config, workdir, evaluation)."""
  config = region_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.data.update({"image_size": 32, "test_size": 12})
  config.eval.update({"at_end": True})
  workdir = runs_dir / "region_attributes"
  return config, workdir, train_lib.train(config, workdir)


def test_probe_loss_is_the_pixel_cross_entropy_averaged_per_region(probe_run):
  _, workdir, _ = probe_run
  task, variables = load_trained_task(workdir, "region_attributes")
  examples = [task.preprocess(task.source("train")[index]) for index in range(4)]
  batch = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
  (logits, _), _ = task.model.apply(variables, batch["image"], batch["labels"], train=True, mutable=["batch_stats"])
  expected = 0.0
  for name in ("colour", "texture"):
    log_probabilities = np.asarray(jax.nn.log_softmax(np.float64(logits[name])))
    region_losses = [
      -np.mean(log_probabilities[image][batch["labels"][image] == label, batch[f"{name}_ids"][image, label]])
      for image in range(4)
      for label in np.unique(batch["labels"][image])
    ]
    expected += np.mean(region_losses)
  loss, metrics, _ = jax.jit(lambda batch: task.loss(variables, batch, None))(batch)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert 0.0 <= metrics["colour_accuracy"] <= 1.0


def test_probe_trains_and_the_judge_reads_it_back(probe_run):
  config, workdir, evaluation = probe_run
  assert set(evaluation) == {"colour_accuracy", "texture_accuracy", "region_accuracy", "num_samples"}
  assert evaluation["num_samples"] == 12
  judge = RegionJudge.load(workdir)
  source = SegmentedSceneSource("test", 12, image_size=32)
  examples = [source[index] for index in range(12)]
  images = np.stack([example["image"] for example in examples]).astype(np.float32) / 127.5 - 1.0
  labels = np.stack([example["labels"] for example in examples])
  colour_ids, texture_ids = judge.region_attributes(images, labels)
  assert colour_ids.shape == texture_ids.shape == (12, len(LABELS)) and colour_ids.dtype == np.int32
  truth_colour = np.stack([example["colour_ids"] for example in examples])
  present = truth_colour >= 0
  np.testing.assert_array_equal(colour_ids < 0, ~present)  # −1 exactly for the labels without pixels
  assert np.mean(colour_ids[present] == truth_colour[present]) == evaluation["colour_accuracy"]
  # A region's reading: the argmax of its pixels' logits averaged by hand.
  task, variables = load_trained_task(workdir, "region_attributes")
  logits, _ = task.model.apply(variables, images, labels)
  for name, predicted in (("colour", colour_ids), ("texture", texture_ids)):
    pixel_logits = np.asarray(logits[name])
    for image, label in zip(*np.nonzero(present)):
      region_mean = pixel_logits[image][labels[image] == label].mean(axis=0)
      assert predicted[image, label] == region_mean.argmax()
  features = judge.features(images[:2])
  width = config.model.width
  assert [feature.shape for feature in features] == [(2, 32, 32, width), (2, 16, 16, 2 * width)]
  # Differentiable, as a perceptual loss needs.
  gradient = jax.grad(lambda images: sum(jnp.mean(feature) for feature in judge.features(images)))(images[:2])
  assert gradient.shape == images[:2].shape and np.all(np.isfinite(gradient)) and np.any(gradient != 0)


def test_a_missing_probe_names_the_train_command(tmp_path):
  with pytest.raises(CheckpointError, match=f"--config=configs/region_attributes.py --workdir={tmp_path}"):
    RegionJudge.load(tmp_path)
