"""Metrics of generated scene images (storyjax/data/images/scenes.py) read by a trained scene judge.

The judge is a `scene_attributes` run (storyjax/tasks/scene_attributes.py): FID in its feature space, and the
caption accuracy of images against the per-slot claims of the prompts they were generated from.
"""

import pathlib

import numpy as np

from storyjax.data.images.scenes import PER_SLOT_KEYS
from storyjax.metrics.distribution import frechet_distance
from storyjax.tasks import load_trained_task


class SceneJudge:
  """The scene_attributes classifier trained in `workdir`, in eval mode; reads images (N, S, S, 3) in [-1, 1]."""

  def __init__(self, workdir: str | pathlib.Path):
    task, variables = load_trained_task(workdir, "scene_attributes")
    self.image_size = task.image_size
    self._predict = task.predictor(variables)

  def features(self, images) -> np.ndarray:
    """(N, S, S, 3) → (N, F) float32: SceneClassifier's quadrant-pooled last-stage features (the FID space)."""
    return self._predict(images)["features"]

  def attributes(self, images) -> dict[str, np.ndarray]:
    """(N, S, S, 3) → {"present" (N, 4) bool, "colour", "shape", "size" (N, 4) int32}: the judge's reading of each
    slot (values are given for every slot; they mean something where "present")."""
    predicted = self._predict(images)
    return {key: predicted[key] for key in PER_SLOT_KEYS}


def _per_slot(values: dict, name: str) -> dict[str, np.ndarray]:
  missing = set(PER_SLOT_KEYS) - set(values)
  if missing:
    raise ValueError(f"{name} lacks the per-slot keys {sorted(missing)}; it needs {PER_SLOT_KEYS}")
  arrays = {key: np.asarray(values[key]) for key in PER_SLOT_KEYS}
  shapes = {array.shape for array in arrays.values()}
  if len(shapes) != 1 or len(next(iter(shapes))) != 2:
    raise ValueError(f"{name}'s {PER_SLOT_KEYS} must be (N, 4) arrays of one shape, got {sorted(shapes)}")
  return arrays


def caption_accuracy(predicted: dict, claims: dict) -> float:
  """The mean over prompts of prompt_caption_accuracies."""
  return float(np.mean(prompt_caption_accuracies(predicted, claims)))


CLAIM_KINDS = ("present", "empty", "colour", "shape", "size")


def _right_claims(predicted: dict, claims: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """(claimed (N, 4) bool: the slots the prompts fill, {kind of CLAIM_KINDS: (N, 4) bool, that claim right})."""
  predicted, claims = _per_slot(predicted, "predicted"), _per_slot(claims, "claims")
  if predicted["present"].shape != claims["present"].shape:
    raise ValueError(f"predicted is {predicted['present'].shape} but claims {claims['present'].shape}; pair them")
  claimed, found = claims["present"].astype(bool), predicted["present"].astype(bool)
  right = {"present": claimed & found, "empty": ~claimed & ~found}
  for key in ("colour", "shape", "size"):
    right[key] = claimed & found & (predicted[key] == claims[key])
  return claimed, right


def prompt_caption_accuracies(predicted: dict, claims: dict) -> np.ndarray:
  """(N,) float64: for each prompt, the fraction of its claims the judge finds in its image.

  predicted: SceneJudge.attributes of the images; claims: the prompts' per-slot claims, keys "present", "colour",
  "shape", "size" (N, 4) (a scene example's caption_* keys without the prefix, or its truth keys for its
  true_caption). A prompt of n objects makes 3·n + 4 claims:
    - per slot it fills, four: "present" is right iff the judge finds an object there; colour, shape and size
      are each right iff the judge finds an object there with that value;
    - per slot it leaves empty, one: right iff the judge finds that slot empty.
  """
  claimed, right = _right_claims(predicted, claims)
  num_claims = 4 * claimed.sum(1) + (~claimed).sum(1)
  return sum(right[kind].sum(1) for kind in CLAIM_KINDS) / num_claims


def claim_accuracies(predicted: dict, claims: dict) -> dict[str, float]:
  """Over all prompts, the fraction of each kind of claim the judge finds, as prompt_caption_accuracies counts them:
  "present" and "empty" over the slots the prompts fill and leave empty; "colour", "shape", "size" over the slots
  they fill (a missing object gets them wrong). NaN for a kind no prompt makes."""
  claimed, right = _right_claims(predicted, claims)
  slots = dict.fromkeys(CLAIM_KINDS, claimed) | {"empty": ~claimed}
  return {kind: float(right[kind].sum() / slots[kind].sum()) if slots[kind].any() else np.nan for kind in CLAIM_KINDS}


def fid(real_features, fake_features) -> float:
  """Fréchet distance of SceneJudge.features of real (N, F) and generated (M, F) images (distribution.py)."""
  return frechet_distance(real_features, fake_features)
