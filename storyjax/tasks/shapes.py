"""The smallest complete task, and the worked example of README's "Adding a model": classify procedural shapes.

Data: storyjax/data/images/shapes.py (label = shape class, known by construction); model:
storyjax/models/shape_classifier.py (convolutions with BatchNorm, so the train state carries `batch_stats`);
loss: cross-entropy; evaluation: test accuracy with the BatchNorm running averages (eval mode).
"""

import pathlib

import jax
import ml_collections
import numpy as np
import optax

from storyjax.base_config import compute_dtype
from storyjax.data.images.arrays import checked_image
from storyjax.data.images.shapes import SHAPES, ShapesSource
from storyjax.errors import ConfigError
from storyjax.models.shape_classifier import ShapeClassifier


class Task:
  """Binds ShapeClassifier to the generic trainer (the contract: storyjax/tasks/base.py)."""

  non_state_keys = {"data": ("test_size",)}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model = config.model
    self.image_size = config.data.image_size
    self.model = ShapeClassifier(
      num_classes=len(SHAPES), width=model.width, num_stages=model.num_stages, dtype=compute_dtype(model.dtype)
    )
    self._predict = jax.jit(lambda variables, images: self.model.apply(variables, images).argmax(-1))

  def source(self, split: str) -> ShapesSource:
    data = self.config.data
    try:
      return ShapesSource(
        split, {"train": data.train_size, "test": data.test_size}[split], data.image_size, seed=data.seed
      )
    except ValueError as error:
      raise ConfigError(f"data config: {error}") from error

  def preprocess(self, example: dict) -> dict:
    return {"image": checked_image(example, self.image_size), "label": np.asarray(example["label"], np.int32)}

  def init(self, rng, batch):
    return self.model.init({"params": rng}, batch["image"])

  def loss(self, variables, batch, rng):
    del rng  # the model is deterministic
    logits, updated = self.model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}, updated

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Test accuracy (eval mode: BatchNorm running averages); `quick`: the first eval.quick_num_samples only."""
    del workdir  # nothing to plot
    test_source = self.source("test")
    num_samples = min(self.config.eval.quick_num_samples if quick else len(test_source), len(test_source))
    examples = [self.preprocess(test_source[index]) for index in range(num_samples)]
    images = np.stack([example["image"] for example in examples])
    labels = np.array([example["label"] for example in examples])
    predicted = np.asarray(self._predict(variables, images))
    return {
      "accuracy": float(np.mean(predicted == labels)),
      "chance": float(np.bincount(labels).max() / len(labels)),
      "num_samples": num_samples,
    }

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
