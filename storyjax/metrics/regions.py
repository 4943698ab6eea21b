"""Metrics of SCAM's reconstructions and subject transfer on the segmented scenes (storyjax/data/images/segmented.py).

Plain image metrics (`psnr` as the authors compute it, `ssim`, `region_leak`) and `swap_accuracy`, read by the
region probe: `RegionJudge`, a trained `region_attributes` run (storyjax/tasks/region_attributes.py), whose stage
feature maps are also SCAM's perceptual-loss features on these scenes.
"""

import pathlib

import numpy as np

from storyjax.tasks import load_trained_task

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03  # Wang et al. 2004, skimage and torchmetrics


class RegionJudge:
  """The region_attributes probe trained in a run, in eval mode; reads images (N, S, S, 3) in [-1, 1]."""

  def __init__(self, task, variables):
    self.image_size = task.image_size
    self._predict = task.predictor(variables)
    self._feature_maps = lambda images: task.feature_maps(variables, images)

  @classmethod
  def load(cls, workdir: str | pathlib.Path) -> "RegionJudge":
    """The probe of the `region_attributes` run in `workdir` (its EMA variables)."""
    return cls(*load_trained_task(workdir, "region_attributes"))

  def region_attributes(self, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """images (N, S, S, 3), labels (N, S, S) int → (colour_ids, texture_ids), each (N, L) int32: per label, the
    argmax of the probe's pixel logits averaged over the label's pixels; −1 for a label without pixels."""
    predicted = self._predict(images, labels)
    return predicted["colour"], predicted["texture"]

  def features(self, images) -> list:
    """(B, S, S, 3) → RegionProbe's stage feature maps, finest first, the i-th (B, S/2^i, S/2^i, C_i) float32.

    A pure jnp function of `images` (eval mode): jit it and differentiate through it, as a perceptual loss does.
    """
    return self._feature_maps(images)


def psnr(reconstructions, targets) -> float:
  """PSNR in dB of `reconstructions` against `targets` (N, ...) in [-1, 1], as the SCAM authors compute it.

  torchmetrics 0.7.3 `PeakSignalNoiseRatio()` updated with the whole set: one MSE over every value of every image
  (a dataset-level MSE, not a mean of per-image PSNRs), and data_range estimated from the targets as max − min,
  with torchmetrics' running min and max starting at 0, i.e. max(targets.max(), 0) − min(targets.min(), 0) (2 for
  targets spanning [-1, 1]): PSNR = 10·log10(data_range² / MSE).
  """
  reconstructions, targets = np.asarray(reconstructions, np.float64), np.asarray(targets, np.float64)
  if reconstructions.shape != targets.shape or not targets.size:
    raise ValueError(
      f"psnr pairs reconstructions and targets of one non-empty shape, got {reconstructions.shape} and {targets.shape}"
    )
  data_range = max(targets.max(), 0.0) - min(targets.min(), 0.0)
  mse = np.mean((reconstructions - targets) ** 2)
  return float(10 * np.log10(data_range**2 / mse))


def _gaussian_filter_valid(images: np.ndarray) -> np.ndarray:
  """(N, H, W, C) → (N, H − 10, W − 10, C): the SSIM window's weighted means at every position inside the image."""
  taps = np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2
  kernel = np.exp(-0.5 * (taps / SSIM_SIGMA) ** 2)
  kernel /= kernel.sum()
  height, width = images.shape[1] - SSIM_WINDOW + 1, images.shape[2] - SSIM_WINDOW + 1
  rows = sum(weight * images[:, offset : offset + height] for offset, weight in enumerate(kernel))
  return sum(weight * rows[:, :, offset : offset + width] for offset, weight in enumerate(kernel))


def ssim(first, second, data_range: float = 2.0) -> float:
  """Mean SSIM of images `first` and `second` (N, H, W, C), H and W ≥ 11 (2.0: images in [-1, 1]).

  As skimage (gaussian_weights=True, use_sample_covariance=False) and torchmetrics compute it: an 11×11 Gaussian
  window of σ 1.5, K1 = 0.01, K2 = 0.03 (C_i = (K_i·data_range)²), population (co)variances within the window,
  per channel; the SSIM map at the window positions inside the image only (a valid convolution: both crop the
  (11 − 1)/2 border), averaged over positions, channels and images.
  """
  first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
  if first.shape != second.shape or first.ndim != 4 or min(first.shape[1:3]) < SSIM_WINDOW or not len(first):
    raise ValueError(
      f"ssim pairs images (N, H, W, C) of one shape with H, W >= {SSIM_WINDOW}, got {first.shape} and {second.shape}"
    )
  mean_first, mean_second = _gaussian_filter_valid(first), _gaussian_filter_valid(second)
  var_first = _gaussian_filter_valid(first**2) - mean_first**2
  var_second = _gaussian_filter_valid(second**2) - mean_second**2
  covariance = _gaussian_filter_valid(first * second) - mean_first * mean_second
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  ssim_map = ((2 * mean_first * mean_second + c1) * (2 * covariance + c2)) / (
    (mean_first**2 + mean_second**2 + c1) * (var_first + var_second + c2)
  )
  return float(ssim_map.mean())


def region_leak(swapped, reconstructed, region_mask) -> float:
  """How much a swap changes the image outside the swapped region, in [0, 1].

  swapped, reconstructed: (N, S, S, C) in [-1, 1], the generator's output with one label's latents swapped and
  without; region_mask: (N, S, S) bool, True on the swapped label's pixels. The leak is mean |swapped −
  reconstructed| / 2 over every channel of every pixel where region_mask is False, pooled over all images (each
  outside pixel weighs the same): 0 when nothing outside the region changed, 1 when every value outside went from
  one end of [-1, 1] to the other.
  """
  swapped, reconstructed = np.asarray(swapped, np.float64), np.asarray(reconstructed, np.float64)
  region_mask = np.asarray(region_mask, bool)
  if swapped.shape != reconstructed.shape or swapped.ndim != 4 or region_mask.shape != swapped.shape[:3]:
    raise ValueError(
      f"region_leak pairs images (N, S, S, C) of one shape with a (N, S, S) mask, got "
      f"{swapped.shape}, {reconstructed.shape} and {region_mask.shape}"
    )
  if region_mask.all():
    raise ValueError("region_leak: region_mask covers every pixel, so there is nothing outside the region to measure")
  return float(np.abs(swapped - reconstructed)[~region_mask].mean() / 2)


def swap_accuracy(judge, swapped_images, labels, donor_colour_ids, donor_texture_ids, swapped_label) -> dict:
  """Whether the swapped region of each image carries the donor's attributes, as the probe reads them.

  judge: a RegionJudge (anything with region_attributes(images, labels) → colour, texture ids (N, L));
  swapped_images (N, S, S, 3) in [-1, 1] with layouts labels (N, S, S); donor_colour_ids, donor_texture_ids
  (N, L): the ground-truth ids of each donor's labels; swapped_label: an int or (N,) ints, the label whose
  latents were swapped in, present in both the layout and the donor. → {"swap_accuracy": the fraction of swaps
  whose region reads the donor's colour AND texture, "colour_accuracy", "texture_accuracy": each alone}.
  """
  labels = np.asarray(labels)
  donor_colour_ids, donor_texture_ids = np.asarray(donor_colour_ids), np.asarray(donor_texture_ids)
  rows = np.arange(len(labels))
  swapped_label = np.broadcast_to(np.asarray(swapped_label), rows.shape)
  if donor_colour_ids.shape != donor_texture_ids.shape or donor_colour_ids.shape[0] != len(labels):
    raise ValueError(
      f"swap_accuracy needs donor ids (N, L) for N = {len(labels)} swaps, got "
      f"{donor_colour_ids.shape} and {donor_texture_ids.shape}"
    )
  donor_colour, donor_texture = donor_colour_ids[rows, swapped_label], donor_texture_ids[rows, swapped_label]
  in_layout = (labels == swapped_label[:, None, None]).any(axis=(1, 2))
  if np.any(donor_colour < 0) or np.any(donor_texture < 0) or not in_layout.all():
    raise ValueError(
      "swap_accuracy: every swapped label must be present in its donor (ids >= 0) and in its layout; "
      "keep only such swaps"
    )
  colour_ids, texture_ids = judge.region_attributes(swapped_images, labels)
  colour_right = np.asarray(colour_ids)[rows, swapped_label] == donor_colour
  texture_right = np.asarray(texture_ids)[rows, swapped_label] == donor_texture
  return {
    "swap_accuracy": float(np.mean(colour_right & texture_right)),
    "colour_accuracy": float(colour_right.mean()),
    "texture_accuracy": float(texture_right.mean()),
  }
