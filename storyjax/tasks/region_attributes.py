"""The region probe: per-pixel colour and texture of segmented scenes, read per region, to judge SCAM's swaps.

Data: storyjax/data/images/segmented.py (images, per-pixel labels, per-label colour and texture ids); model:
storyjax/models/region_probe.py; loss: the per-pixel colour and texture cross-entropies against the ids of each
pixel's label, averaged over each present region, then over the regions; evaluation: per-region test accuracies in
eval mode (a region's reading is the argmax of its pixel logits averaged over it). storyjax/metrics/regions.py
loads a trained run as `RegionJudge` (swap accuracy, perceptual-loss features).
"""

from collections.abc import Callable
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from storyjax.base_config import compute_dtype
from storyjax.data.images.arrays import checked_image
from storyjax.data.images.segmented import LABELS, PALETTE, TEXTURES, SegmentedSceneSource
from storyjax.errors import ConfigError, DataError
from storyjax.losses import masked_mean
from storyjax.models.region_probe import RegionProbe, region_means

ATTRIBUTES = ("colour", "texture")  # read per region, from the example's <attribute>_ids


class Task:
  """Binds RegionProbe to the generic trainer (the contract: storyjax/tasks/base.py)."""

  non_state_keys = {"data": ("test_size",)}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model = config.model
    self.image_size = config.data.image_size
    if self.image_size % 2 ** (model.num_stages - 1):
      raise ConfigError(
        f"data.image_size={self.image_size} must be a multiple of 2^(model.num_stages − 1) = "
        f"{2 ** (model.num_stages - 1)} so that every stage upsamples back to the image; change either."
      )
    if model.patch_size % 2 == 0:
      raise ConfigError(f"model.patch_size={model.patch_size} must be odd (a patch centred on its pixel)")
    self.model = RegionProbe(
      num_colours=len(PALETTE),
      num_textures=len(TEXTURES),
      width=model.width,
      num_stages=model.num_stages,
      patch_size=model.patch_size,
      dtype=compute_dtype(model.dtype),
    )
    self._predict = jax.jit(self._predict_batch)
    self._feature_maps = jax.jit(lambda variables, images: self.model.apply(variables, images)[1])

  def source(self, split: str) -> SegmentedSceneSource:
    data = self.config.data
    num_examples = {"train": data.train_size, "test": data.test_size}[split]
    return SegmentedSceneSource(split, num_examples, data.image_size, seed=data.seed)  # ConfigError names a bad key

  def preprocess(self, example: dict) -> dict:
    labels = np.asarray(example.get("labels"), np.int32)
    if labels.shape != (self.image_size, self.image_size):
      raise DataError(f"labels has shape {labels.shape}, expected {(self.image_size,) * 2} (data.image_size)")
    return {
      "image": checked_image(example, self.image_size) / 127.5 - 1.0,
      "labels": labels,
      **{f"{name}_ids": np.asarray(example[f"{name}_ids"], np.int32) for name in ATTRIBUTES},
    }

  def init(self, rng, batch):
    return self.model.init({"params": rng}, batch["image"], batch["labels"])

  def loss(self, variables, batch, rng):
    del rng  # the model is deterministic
    (logits, _), updated = self.model.apply(
      variables, batch["image"], batch["labels"], train=True, mutable=["batch_stats"]
    )
    losses, metrics = {}, {}
    for name in ATTRIBUTES:
      ids = batch[f"{name}_ids"]
      # Each pixel's target is its label's id (absent labels have no pixels); every region weighs the same, so the
      # few pixels of a belt count as much as the background's.
      targets = jnp.take_along_axis(ids, batch["labels"].reshape(len(ids), -1), axis=1).reshape(batch["labels"].shape)
      cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits[name], jnp.maximum(targets, 0))
      region_cross_entropy, counts = region_means(cross_entropy[..., None], batch["labels"], len(LABELS))
      on_regions = (counts > 0) & (ids >= 0)
      losses[name] = masked_mean(region_cross_entropy[..., 0], on_regions)
      predicted = region_means(logits[name], batch["labels"], len(LABELS))[0].argmax(-1)
      metrics[f"{name}_accuracy"] = masked_mean(predicted == ids, on_regions)
    return sum(losses.values()), metrics, updated

  def _predict_batch(self, variables, images, labels):
    logits, _ = self.model.apply(variables, images, labels)
    predicted = {}
    for name in ATTRIBUTES:
      means, counts = region_means(logits[name], labels, len(LABELS))
      predicted[name] = jnp.where(counts > 0, means.argmax(-1), -1).astype(jnp.int32)
    return predicted

  def predictor(self, variables) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    """The model with trained `variables` in eval mode (BatchNorm running averages), jitted.

    → predict(images (N, S, S, 3) in [-1, 1], labels (N, S, S) int) → {"colour", "texture": (N, L) int32, per
    label the argmax of the pixel logits averaged over its pixels, −1 for a label without pixels}, computed in
    chunks of eval.batch_size images (the last one padded, so one shape is compiled).
    """
    batch_size = self.config.eval.batch_size

    def predict(images, labels) -> dict[str, np.ndarray]:
      images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
      if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3) or not len(images):
        raise DataError(
          f"the region probe reads images (N >= 1, {self.image_size}, {self.image_size}, 3) in [-1, 1], "
          f"got shape {images.shape}"
        )
      if labels.shape != images.shape[:3]:
        raise DataError(
          f"the region probe needs labels {images.shape[:3]} for images {images.shape}, got {labels.shape}"
        )
      chunks = []
      for start in range(0, len(images), batch_size):
        chunk = {"images": images[start : start + batch_size], "labels": labels[start : start + batch_size]}
        padded = {
          key: np.concatenate([value, np.repeat(value[-1:], batch_size - len(value), axis=0)])
          for key, value in chunk.items()
        }
        predicted = jax.device_get(self._predict(variables, padded["images"], padded["labels"]))
        chunks.append({key: value[: len(chunk["images"])] for key, value in predicted.items()})
      return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}

    return predict

  def feature_maps(self, variables, images) -> list[jax.Array]:
    """(B, S, S, 3) → RegionProbe's stage feature maps (eval mode), finest first; jitted, differentiable."""
    return self._feature_maps(variables, images)

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Per-region test accuracies in eval mode; `quick`: on the first eval.quick_num_samples test examples only.

    colour_accuracy, texture_accuracy: over the (image, label) regions with pixels whose label is present;
    region_accuracy: those read entirely right (colour and texture).
    """
    del workdir  # nothing to plot
    test_source = self.source("test")
    num_samples = min(self.config.eval.quick_num_samples if quick else len(test_source), len(test_source))
    examples = [self.preprocess(test_source[index]) for index in range(num_samples)]
    batch = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
    predicted = self.predictor(variables)(batch["image"], batch["labels"])
    on_regions = batch["colour_ids"] >= 0
    right = {name: predicted[name] == batch[f"{name}_ids"] for name in ATTRIBUTES}
    return {
      **{f"{name}_accuracy": float(right[name][on_regions].mean()) for name in ATTRIBUTES},
      "region_accuracy": float((right["colour"] & right["texture"])[on_regions].mean()),
      "num_samples": num_samples,
    }

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
