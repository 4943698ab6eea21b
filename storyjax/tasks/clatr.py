"""CLaTr task: contrastive language–trajectory training (TMR losses), retrieval evaluation, and a feature loader.

Loss (published weights): reconstruction SmoothL1(text→traj) + SmoothL1(traj→traj) (on valid frames; the
original also counts padding), KL(t‖m) + KL(m‖t) + KL(m‖N) + KL(t‖N), SmoothL1(z_t, z_m), and a symmetric
InfoNCE on the means at temperature 0.1 whose negatives exclude near-duplicate captions.
"""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax import losses
from storyjax.base_config import check_choices
from storyjax.data.et import tagging
from storyjax.data.et.camera import CAMERA_FEATURES
from storyjax.errors import ConfigError
from storyjax.layers.attention import ATTENTION_IMPLEMENTATIONS, check_probability_dropout
from storyjax.layers.text_encoder import pool_last_valid
from storyjax.metrics.clatr import mean_cosine, retrieval_recall
from storyjax.models.clatr import Clatr
from storyjax.tasks.trajectory import TrajectoryTask

DUPLICATE_COSINE = 0.99  # TMR's filter: 2·0.995 − 1
QUICK_METRICS = ("text_to_traj_R@1", "text_to_traj_R@5", "text_to_traj_class_R@1")  # logged during training


def duplicate_captions(caption, caption_mask):
  """(B, B) bool: identical word ids, or frozen features whose pooled cosine exceeds 0.99."""
  if caption.ndim == 2:
    return jnp.all(caption[:, None] == caption[None], axis=-1)  # padding ids are equal too
  pooled = losses.unit_rows(pool_last_valid(caption, caption_mask))
  return pooled @ pooled.T > DUPLICATE_COSINE


class Task(TrajectoryTask):
  """Binds CLaTr to the generic trainer (the contract: storyjax/tasks/base.py)."""

  # How the network computes, not what it is: a run may resume with another attention implementation.
  non_state_keys = {**TrajectoryTask.non_state_keys, "model": (*TrajectoryTask.non_state_keys["model"], "attention")}

  def __init__(self, config: ml_collections.ConfigDict):
    data, model = config.data, config.model
    check_choices(("model.attention", model.attention, ATTENTION_IMPLEMENTATIONS))
    check_probability_dropout("model.attention", model.attention, "model.dropout_rate", model.dropout_rate)
    if data.caption not in ("caption", "caption_cam"):
      raise ConfigError(
        f"data.caption={data.caption!r}; choose 'caption_cam' (camera only, as published) or "
        f"'caption' (camera and character)."
      )
    super().__init__(config, caption_key=data.caption)
    self.model = Clatr(
      num_frames=self.num_frames,
      width=model.width,
      num_layers=model.num_layers,
      num_heads=model.num_heads,
      mlp_dim=model.mlp_dim,
      text_encoder=model.text_encoder,
      vocab_size=self.caption_inputs.vocab_size,
      dropout_rate=model.dropout_rate,
      dtype=self.dtype,
      attention=model.attention,
    )

  # ---- data -------------------------------------------------------------------------------------
  def preprocess(self, example: dict) -> dict:
    """One source example → camera_traj (T, 9), mask (T,), caption and caption_mask."""
    return self.example_arrays(example, ("camera_traj", "mask"))

  # ---- model ------------------------------------------------------------------------------------
  def init(self, rng, batch):
    return self.model.init(
      {"params": rng}, batch["camera_traj"], batch["mask"], batch["caption"], batch["caption_mask"]
    )

  def loss(self, variables, batch, rng):
    rng_latent, rng_dropout = jax.random.split(rng)
    out = self.model.apply(
      variables,
      batch["camera_traj"],
      batch["mask"],
      batch["caption"],
      batch["caption_mask"],
      train=True,
      rngs={"latent": rng_latent, "dropout": rng_dropout},
    )
    weights, frames = self.config.loss, batch["mask"][..., None]
    reconstruction = losses.smooth_l1(out["text_reconstruction"], batch["camera_traj"], frames) + losses.smooth_l1(
      out["motion_reconstruction"], batch["camera_traj"], frames
    )
    kl = (
      losses.gaussian_kl(out["text_mean"], out["text_logvar"], out["motion_mean"], out["motion_logvar"])
      + losses.gaussian_kl(out["motion_mean"], out["motion_logvar"], out["text_mean"], out["text_logvar"])
      + losses.gaussian_kl(out["motion_mean"], out["motion_logvar"])
      + losses.gaussian_kl(out["text_mean"], out["text_logvar"])
    )
    latent = losses.smooth_l1(out["text_latent"], out["motion_latent"])
    contrastive = losses.info_nce(
      out["text_mean"],
      out["motion_mean"],
      duplicate_captions(batch["caption"], batch["caption_mask"]),
      weights.temperature,
    )
    loss = (
      weights.reconstruction * reconstruction
      + weights.kl * kl
      + weights.latent * latent
      + weights.contrastive * contrastive
    )
    return loss, {"reconstruction": reconstruction, "kl": kl, "latent": latent, "contrastive": contrastive}, {}

  def feature_extractor(self, variables) -> "ClatrFeatures":
    """This CLaTr with trained `variables` as a feature extractor (for Director's metrics)."""
    return ClatrFeatures(self, variables)

  # ---- evaluation -------------------------------------------------------------------------------
  def features(self, variables, examples: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test examples → trajectory means (N, D), text means (N, D), reconstructions from the trajectory (N, T, 9)."""
    encode = jax.jit(
      lambda variables, batch: self.model.apply(
        variables, batch["camera_traj"], batch["mask"], batch["caption"], batch["caption_mask"]
      )
    )
    outputs = [
      jax.device_get(encode(variables, self.batch(examples[start : start + self.config.eval.batch_size])))
      for start in range(0, len(examples), self.config.eval.batch_size)
    ]
    stacked = {key: np.concatenate([out[key] for out in outputs]) for key in outputs[0]}
    return stacked["motion_mean"], stacked["text_mean"], stacked["motion_reconstruction"]

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Text→trajectory and trajectory→text retrieval on the test split, over the whole test set at once.

    A retrieved item is a hit when its caption equals the query's (the embedded captions repeat); the
    `*_class_R@k` keys count a hit when its camera motion classes equal the query's (paraphrases match too).
    Chance levels are the recall of a uniformly random ranking with the same positives. `quick`: QUICK_METRICS
    on the first eval.quick_num_samples test examples only.
    """
    test_source = self.source("test")
    num_samples = self.config.eval.quick_num_samples if quick else self.config.eval.num_samples
    examples = [test_source[index] for index in range(min(num_samples, len(test_source)))]
    motion, text, reconstruction = self.features(variables, examples)
    captions = np.array([example[self.config.data.caption] for example in examples])
    same_caption = captions[:, None] == captions[None, :]
    motions = np.array(
      [str([int(c) for c in example["cam_classes"] if c != tagging.PAD_CLASS]) for example in examples]
    )
    same_motion = motions[:, None] == motions[None, :]
    retrieval = {}
    for prefix, positives in (("", same_caption), ("class_", same_motion)):
      for name, (query, candidates) in (("text_to_traj", (text, motion)), ("traj_to_text", (motion, text))):
        retrieval.update(
          {
            f"{name}_{prefix}{key}": value
            for key, value in retrieval_recall(query, candidates, positives=positives).items()
          }
        )
    if quick:
      return {key: retrieval[key] for key in QUICK_METRICS}
    masks = np.stack([example["mask"] for example in examples])[..., None]
    targets = np.stack([example["camera_traj"] for example in examples])
    return {
      **retrieval,
      "positive_cosine": mean_cosine(text, motion),
      "reconstruction_mae": float(np.abs((reconstruction - targets) * masks).sum() / (masks.sum() * 9)),
      "num_samples": len(examples),
      "distinct_captions": len(set(captions.tolist())),
    }


class ClatrFeatures:
  """A trained CLaTr as a feature extractor: means μ (N, D) of trajectories and of captions."""

  def __init__(self, task: Task, variables, batch_size: int = 100):
    self.task, self.variables, self.batch_size = task, variables, batch_size
    self.max_frames = task.num_frames
    model = task.model
    self._encode_trajectory = jax.jit(
      lambda variables, camera_traj, mask: model.apply(variables, camera_traj, mask, method=Clatr.encode_trajectory)[0]
    )
    self._encode_text = jax.jit(
      lambda variables, caption, mask: model.apply(variables, caption, mask, method=Clatr.encode_text)[0]
    )

  def _batched(self, encode, *arrays) -> np.ndarray:
    count = len(arrays[0])
    if count == 0:
      return np.zeros((0, self.task.model.width), np.float32)
    padded = [np.concatenate([array, np.repeat(array[-1:], -count % self.batch_size, axis=0)]) for array in arrays]
    return np.concatenate(
      [
        np.asarray(encode(self.variables, *(array[start : start + self.batch_size] for array in padded)))
        for start in range(0, count, self.batch_size)
      ]
    )[:count]

  def trajectory_features(self, camera_traj, mask) -> np.ndarray:
    """camera_traj (N, T, 9) standardized E.T. features, mask (N, T) → (N, D)."""
    camera_traj, mask = np.asarray(camera_traj, np.float32), np.asarray(mask, bool)
    if camera_traj.ndim != 3 or camera_traj.shape[1:] != (self.max_frames, CAMERA_FEATURES):
      raise ConfigError(
        f"this CLaTr was trained on T={self.max_frames} frames (its data.max_frames) but got "
        f"trajectories of shape {camera_traj.shape}; pass (N, {self.max_frames}, 9) or train CLaTr "
        f"with the same max_frames"
      )
    if mask.shape != camera_traj.shape[:2]:
      raise ConfigError(f"mask has shape {mask.shape}, expected {camera_traj.shape[:2]} to match camera_traj")
    return self._batched(self._encode_trajectory, camera_traj, mask)

  def text_features(self, captions) -> np.ndarray:
    """captions (N,) → (N, D)."""
    inputs, mask = self.task.caption_inputs.texts(list(captions))
    return self._batched(self._encode_text, inputs, mask)
