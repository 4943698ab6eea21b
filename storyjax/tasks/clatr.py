"""CLaTr task: contrastive language–trajectory training (TMR losses), retrieval evaluation, and a feature loader.

Loss (published weights): reconstruction SmoothL1(text→traj) + SmoothL1(traj→traj) (on valid frames; the
original also counts padding), KL(t‖m) + KL(m‖t) + KL(m‖N) + KL(t‖N), SmoothL1(z_t, z_m), and a symmetric
InfoNCE on the means at temperature 0.1 whose negatives exclude near-duplicate captions.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax import train as train_lib
from storyjax.data.et import tagging
from storyjax.errors import CheckpointError, ConfigError, DataError
from storyjax.layers.text_encoder import pool_last_valid
from storyjax.metrics.clatr import mean_cosine, retrieval_recall
from storyjax.models.clatr import Clatr
from storyjax.data.et.camera import CAMERA_FEATURES
from storyjax.tasks.trajectory import TrajectoryTask

DUPLICATE_COSINE = 0.99  # TMR's filter: 2·0.995 − 1


def smooth_l1(prediction, target, mask=None):
  """Mean Huber loss with β = 1 (torch's SmoothL1Loss) over the entries where mask (broadcastable) is true."""
  difference = jnp.abs(prediction - target)
  loss = jnp.where(difference < 1.0, 0.5 * difference ** 2, difference - 0.5)
  if mask is None:
    return loss.mean()
  mask = jnp.broadcast_to(mask, loss.shape).astype(loss.dtype)
  return (loss * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def gaussian_kl(mean, logvar, other_mean=None, other_logvar=None):
  """Mean over elements of KL(N(mean, e^logvar) ‖ N(other)), other = N(0, I) by default."""
  if other_mean is None:
    other_mean, other_logvar = jnp.zeros_like(mean), jnp.zeros_like(logvar)
  return 0.5 * jnp.mean(other_logvar - logvar + (jnp.exp(logvar) + (mean - other_mean) ** 2)
                        / jnp.exp(other_logvar) - 1.0)


def _unit(features):
  """(B, D) rows scaled to unit length."""
  return features / jnp.maximum(jnp.linalg.norm(features, axis=-1, keepdims=True), 1e-8)


def info_nce(text_mean, motion_mean, duplicates, temperature: float):
  """Symmetric InfoNCE over (B, D) means with cosine logits; duplicates (B, B) bool pairs are not negatives."""
  logits = _unit(text_mean) @ _unit(motion_mean).T / temperature
  diagonal = jnp.eye(len(logits), dtype=bool)
  logits = jnp.where(duplicates & ~diagonal, -jnp.inf, logits)
  text_to_motion = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
  motion_to_text = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
  return 0.5 * (text_to_motion + motion_to_text)


def duplicate_captions(caption, caption_mask):
  """(B, B) bool: identical word ids, or frozen features whose pooled cosine exceeds 0.99."""
  if caption.ndim == 2:
    return jnp.all(caption[:, None] == caption[None], axis=-1)  # padding ids are equal too
  pooled = _unit(pool_last_valid(caption, caption_mask))
  return pooled @ pooled.T > DUPLICATE_COSINE


class Task(TrajectoryTask):
  """Binds CLaTr to the generic train loop (see storyjax/train.py)."""

  def __init__(self, config: ml_collections.ConfigDict):
    data, model = config.data, config.model
    if data.caption not in ("caption", "caption_cam"):
      raise ConfigError(f"data.caption={data.caption!r}; choose 'caption_cam' (camera only, as published) or "
                        f"'caption' (camera and character).")
    super().__init__(config, caption_key=data.caption)
    self.model = Clatr(
        num_frames=self.num_frames, width=model.width, num_layers=model.num_layers, num_heads=model.num_heads,
        mlp_dim=model.mlp_dim, text_encoder=model.text_encoder,
        vocab_size=self.caption_inputs.vocab_size, dropout_rate=model.dropout_rate, dtype=self.dtype)

  # ---- data -------------------------------------------------------------------------------------
  def preprocess(self, example: dict) -> dict:
    """One source example → camera_traj (T, 9), mask (T,), caption and caption_mask."""
    for key, shape in (("camera_traj", (self.num_frames, CAMERA_FEATURES)), ("mask", (self.num_frames,))):
      if np.shape(example.get(key)) != shape:
        raise DataError(f"example {example.get('id', '?')}: {key} has shape {np.shape(example.get(key))}, "
                        f"expected {shape} (data.max_frames={self.num_frames})")
    caption, caption_mask = self.caption_inputs(example)
    return {"camera_traj": np.asarray(example["camera_traj"], np.float32), "mask": np.asarray(example["mask"], bool),
            "caption": caption, "caption_mask": caption_mask}

  # ---- model ------------------------------------------------------------------------------------
  def init_params(self, rng, batch):
    return self.model.init({"params": rng}, batch["camera_traj"], batch["mask"], batch["caption"],
                           batch["caption_mask"])["params"]

  def loss(self, params, batch, rng, train: bool = True):
    rng_latent, rng_dropout = jax.random.split(rng)
    out = self.model.apply({"params": params}, batch["camera_traj"], batch["mask"], batch["caption"],
                           batch["caption_mask"], train=train, rngs={"latent": rng_latent, "dropout": rng_dropout})
    weights, frames = self.config.loss, batch["mask"][..., None]
    reconstruction = (smooth_l1(out["text_reconstruction"], batch["camera_traj"], frames)
                      + smooth_l1(out["motion_reconstruction"], batch["camera_traj"], frames))
    kl = (gaussian_kl(out["text_mean"], out["text_logvar"], out["motion_mean"], out["motion_logvar"])
          + gaussian_kl(out["motion_mean"], out["motion_logvar"], out["text_mean"], out["text_logvar"])
          + gaussian_kl(out["motion_mean"], out["motion_logvar"]) + gaussian_kl(out["text_mean"], out["text_logvar"]))
    latent = smooth_l1(out["text_latent"], out["motion_latent"])
    contrastive = info_nce(out["text_mean"], out["motion_mean"],
                           duplicate_captions(batch["caption"], batch["caption_mask"]), weights.temperature)
    loss = (weights.reconstruction * reconstruction + weights.kl * kl + weights.latent * latent
            + weights.contrastive * contrastive)
    return loss, {"reconstruction": reconstruction, "kl": kl, "latent": latent, "contrastive": contrastive}

  # ---- evaluation -------------------------------------------------------------------------------
  def features(self, params, examples: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test examples → trajectory means (N, D), text means (N, D), reconstructions from the trajectory (N, T, 9)."""
    encode = jax.jit(lambda params, batch: self.model.apply(
        {"params": params}, batch["camera_traj"], batch["mask"], batch["caption"], batch["caption_mask"]))
    outputs = [jax.device_get(encode(params, self.batch(examples[start:start + self.config.eval.batch_size])))
               for start in range(0, len(examples), self.config.eval.batch_size)]
    stacked = {key: np.concatenate([out[key] for out in outputs]) for key in outputs[0]}
    return stacked["motion_mean"], stacked["text_mean"], stacked["motion_reconstruction"]

  def evaluate(self, params, workdir: pathlib.Path) -> dict:
    """Text→trajectory and trajectory→text retrieval on the test split, over the whole test set at once.

    A retrieved item is a hit when its caption equals the query's (the embedded captions repeat); the
    `*_class_R@k` keys count a hit when its camera motion classes equal the query's (paraphrases match too).
    Chance levels are the recall of a uniformly random ranking with the same positives.
    """
    test_source = self.source("test")
    examples = [test_source[index] for index in range(min(self.config.eval.num_samples, len(test_source)))]
    motion, text, reconstruction = self.features(params, examples)
    captions = np.array([example[self.config.data.caption] for example in examples])
    same_caption = captions[:, None] == captions[None, :]
    motions = np.array([str([int(c) for c in example["cam_classes"] if c != tagging.PAD_CLASS])
                        for example in examples])
    same_motion = motions[:, None] == motions[None, :]
    retrieval = {}
    for prefix, positives in (("", same_caption), ("class_", same_motion)):
      for name, (query, candidates) in (("text_to_traj", (text, motion)), ("traj_to_text", (motion, text))):
        retrieval.update({f"{name}_{prefix}{key}": value
                          for key, value in retrieval_recall(query, candidates, positives=positives).items()})
    masks = np.stack([example["mask"] for example in examples])[..., None]
    targets = np.stack([example["camera_traj"] for example in examples])
    return {**retrieval,
            "positive_cosine": mean_cosine(text, motion),
            "reconstruction_mae": float(np.abs((reconstruction - targets) * masks).sum() / (masks.sum() * 9)),
            "num_samples": len(examples), "distinct_captions": len(set(captions.tolist()))}


class ClatrFeatures:
  """A trained CLaTr as a feature extractor: means μ (N, D) of trajectories and of captions."""

  def __init__(self, task: Task, params, batch_size: int = 100):
    self.task, self.params, self.batch_size = task, params, batch_size
    self.max_frames = task.num_frames
    model = task.model
    self._encode_trajectory = jax.jit(lambda params, camera_traj, mask: model.apply(
        {"params": params}, camera_traj, mask, method=Clatr.encode_trajectory)[0])
    self._encode_text = jax.jit(lambda params, caption, mask: model.apply(
        {"params": params}, caption, mask, method=Clatr.encode_text)[0])

  def _batched(self, encode, *arrays) -> np.ndarray:
    count = len(arrays[0])
    if count == 0:
      return np.zeros((0, self.task.model.width), np.float32)
    padded = [np.concatenate([array, np.repeat(array[-1:], -count % self.batch_size, axis=0)]) for array in arrays]
    return np.concatenate([np.asarray(encode(self.params, *(array[start:start + self.batch_size]
                                                           for array in padded)))
                           for start in range(0, count, self.batch_size)])[:count]

  def trajectory_features(self, camera_traj, mask) -> np.ndarray:
    """camera_traj (N, T, 9) standardized E.T. features, mask (N, T) → (N, D)."""
    camera_traj, mask = np.asarray(camera_traj, np.float32), np.asarray(mask, bool)
    if camera_traj.ndim != 3 or camera_traj.shape[1:] != (self.max_frames, CAMERA_FEATURES):
      raise ConfigError(f"this CLaTr was trained on T={self.max_frames} frames (its data.max_frames) but got "
                        f"trajectories of shape {camera_traj.shape}; pass (N, {self.max_frames}, 9) or train CLaTr "
                        f"with the same max_frames")
    if mask.shape != camera_traj.shape[:2]:
      raise ConfigError(f"mask has shape {mask.shape}, expected {camera_traj.shape[:2]} to match camera_traj")
    return self._batched(self._encode_trajectory, camera_traj, mask)

  def text_features(self, captions) -> np.ndarray:
    """captions (N,) → (N, D)."""
    inputs, mask = self.task.caption_inputs.texts(list(captions))
    return self._batched(self._encode_text, inputs, mask)


def load_clatr(workdir: pathlib.Path) -> ClatrFeatures:
  """The CLaTr trained in `workdir` (its config.json and latest checkpoint, EMA parameters)."""
  workdir = pathlib.Path(workdir).absolute()
  train_command = f"`python -m storyjax.train --config=configs/clatr.py --workdir={workdir}`"
  config_path = workdir / "config.json"
  if not config_path.is_file():
    raise CheckpointError(f"no CLaTr run in {workdir} (missing {config_path}); train one with {train_command}.")
  try:
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  except json.JSONDecodeError as error:
    raise CheckpointError(f"{config_path} is not valid JSON ({error}); retrain with {train_command}.") from error
  if config.get("task") != "clatr":
    raise CheckpointError(f"{workdir} holds a {config.get('task')!r} run, not CLaTr; train one with {train_command}.")
  try:
    setup, params, _ = train_lib.load_trained(config, workdir)
  except CheckpointError as error:
    raise CheckpointError(f"cannot load CLaTr from {workdir}: {error} (to train it: {train_command})") from error
  return ClatrFeatures(setup.task, params)
