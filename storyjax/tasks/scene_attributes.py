"""The scene judge: a per-slot attribute classifier trained on procedural scenes, to evaluate generated ones.

Data: storyjax/data/images/scenes.py (images only; what each quadrant slot holds is known by construction); model:
storyjax/models/scene_classifier.py; loss: the sum of the present cross-entropy over all slots and the colour,
shape and size cross-entropies over the slots that hold an object; evaluation: per-attribute test accuracies in
eval mode. storyjax/metrics/scenes.py loads a trained run as `SceneJudge` (FID in its features, caption accuracy).
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
from storyjax.data.images.scenes import PER_SLOT_KEYS, SIZES, SceneSource
from storyjax.data.images.shapes import COLOURS, SHAPES
from storyjax.data.pipeline import apply_in_batches
from storyjax.errors import ConfigError, DataError
from storyjax.losses import masked_mean
from storyjax.models.scene_classifier import SceneClassifier

VALUE_KEYS = ("colour", "shape", "size")  # the attributes of an object, read only where one is present


class Task:
  """Binds SceneClassifier to the generic trainer (the contract: storyjax/tasks/base.py)."""

  non_state_keys = {"data": ("test_size",)}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model = config.model
    self.image_size = config.data.image_size
    if self.image_size % 2**model.num_stages:
      raise ConfigError(
        f"data.image_size={self.image_size} must be a multiple of 2^model.num_stages = {2**model.num_stages} "
        f"so that each quadrant keeps whole cells of the last stage; change either."
      )
    self.model = SceneClassifier(
      num_colours=len(COLOURS),
      num_shapes=len(SHAPES),
      num_sizes=len(SIZES),
      width=model.width,
      num_stages=model.num_stages,
      dtype=compute_dtype(model.dtype),
    )
    self._predict = jax.jit(self._predict_batch)

  def source(self, split: str) -> SceneSource:
    data = self.config.data
    try:
      return SceneSource(
        split, {"train": data.train_size, "test": data.test_size}[split], data.image_size, seed=data.seed
      )
    except ValueError as error:
      raise ConfigError(f"data config: {error}") from error

  def preprocess(self, example: dict) -> dict:
    return {
      "image": checked_image(example, self.image_size),
      **{key: np.asarray(example[key], np.int32) for key in PER_SLOT_KEYS},
    }

  def init(self, rng, batch):
    return self.model.init({"params": rng}, batch["image"])

  def loss(self, variables, batch, rng):
    del rng  # the model is deterministic
    (logits, _), updated = self.model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    on_objects = batch["present"] == 1
    losses = {"present": optax.softmax_cross_entropy_with_integer_labels(logits["present"], batch["present"]).mean()}
    metrics = {"present_accuracy": (logits["present"].argmax(-1) == batch["present"]).mean()}
    for key in VALUE_KEYS:
      losses[key] = masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits[key], batch[key]), on_objects)
      metrics[f"{key}_accuracy"] = masked_mean(logits[key].argmax(-1) == batch[key], on_objects)
    return sum(losses.values()), metrics, updated

  def _predict_batch(self, variables, images):
    logits, features = self.model.apply(variables, images)
    predicted = {key: logits[key].argmax(-1).astype(jnp.int32) for key in VALUE_KEYS}
    return {"present": logits["present"].argmax(-1) == 1, **predicted, "features": features}

  def predictor(self, variables) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The model with trained `variables` in eval mode (BatchNorm running averages), jitted.

    → predict(images (N, S, S, 3) in [-1, 1]) → {"present" (N, 4) bool, "colour", "shape", "size" (N, 4) int32
    (the reading of every slot, also of those predicted empty), "features" (N, F) float32 (SceneClassifier's)},
    computed in chunks of eval.batch_size images (the last one padded, so one shape is compiled).
    """
    batch_size = self.config.eval.batch_size

    def predict(images) -> dict[str, np.ndarray]:
      images = np.asarray(images, np.float32)
      if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3) or not len(images):
        raise DataError(
          f"the scene judge reads images (N >= 1, {self.image_size}, {self.image_size}, 3) in [-1, 1], "
          f"got shape {images.shape}"
        )
      return apply_in_batches(lambda chunk: self._predict(variables, chunk), (images,), batch_size)

    return predict

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Test accuracies in eval mode; `quick`: on the first eval.quick_num_samples test examples only.

    present_accuracy over all slots; colour/shape/size_accuracy over the slots that hold an object;
    all_attributes_accuracy: slots read entirely right (present, and where an object is, colour, shape and size).
    """
    del workdir  # nothing to plot
    test_source = self.source("test")
    num_samples = min(self.config.eval.quick_num_samples if quick else len(test_source), len(test_source))
    examples = [test_source[index] for index in range(num_samples)]
    truth = {key: np.stack([example[key] for example in examples]) for key in PER_SLOT_KEYS}
    predicted = self.predictor(variables)(np.stack([example["image"] for example in examples]))
    on_objects = truth["present"]
    right = {key: predicted[key] == truth[key] for key in PER_SLOT_KEYS}
    slot_right = right["present"] & (~on_objects | (right["colour"] & right["shape"] & right["size"]))
    return {
      "present_accuracy": float(right["present"].mean()),
      **{f"{key}_accuracy": float(right[key][on_objects].mean()) for key in VALUE_KEYS},
      "all_attributes_accuracy": float(slot_right.mean()),
      "num_samples": num_samples,
    }

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
