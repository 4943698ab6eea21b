"""FunnyNet-W (`funnynet` task): is a clip funny, from frozen audio, vision and text features (thesis §2.2).

Data: storyjax/data/funny.py (procedural clips whose label needs all three modalities, or pre-extracted feature
files); model: storyjax/models/funnynet.py on the modalities of `model.modalities` (any non-empty subset, for the
single-modality and pair ablations); loss as coded: cross-entropy (class weights 1, 1) + `loss.contrastive_weight`
(0.03) · Σ NT-Xent over the pairs of projected modality features (τ = `loss.temperature`, 0.5); evaluation: accuracy
and F1 of "funny" (argmax of the two logits), per negative kind on the procedural data.
"""

import itertools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from storyjax.base_config import check_source_keys, compute_dtype
from storyjax.data.funny import KINDS, MODALITIES, FeatureClips, FunnyClips
from storyjax.errors import ConfigError
from storyjax.losses import nt_xent
from storyjax.metrics.classification import accuracy, f1_binary
from storyjax.models.funnynet import FunnyNet

SOURCES = ("procedural", "features")


def parse_modalities(names: str) -> tuple[str, ...]:
  """ "text,audio" → ("audio", "text"): the named modalities in the fused stack's order; ConfigError if bad."""
  chosen = [name.strip() for name in names.split(",") if name.strip()]
  unknown = sorted(set(chosen) - set(MODALITIES))
  if unknown or not chosen or len(set(chosen)) != len(chosen):
    raise ConfigError(
      f"model.modalities={names!r}: name one or more of {MODALITIES}, comma-separated, each once"
      + (f" (unknown: {unknown})" if unknown else "")
    )
  return tuple(name for name in MODALITIES if name in chosen)


class Task:
  """Binds FunnyNet to the generic trainer (the contract: storyjax/tasks/base.py)."""

  non_state_keys = {"data": ("root", "test_size"), "eval": ("quick_num_samples", "batch_size")}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model, data = config.model, config.data
    self.modalities = parse_modalities(model.modalities)
    if data.source not in SOURCES:
      raise ConfigError(f"data.source={data.source!r}; choose one of {SOURCES}")
    self.root = data.root  # the feature directory (labels.csv, *.npz)
    check_source_keys(data.source, {"data.root": (self.root, data.source == "features")})
    if model.width % model.num_tokens:
      raise ConfigError(f"model.width={model.width} must be a multiple of model.num_tokens={model.num_tokens}")
    if not 0 <= model.text_dropout < 1:
      raise ConfigError(f"model.text_dropout={model.text_dropout} must lie in [0, 1)")
    self.model = FunnyNet(
      modalities=self.modalities,
      width=model.width,
      audio_hidden=model.audio_hidden,
      lstm_width=model.lstm_width,
      num_tokens=model.num_tokens,
      text_dropout=model.text_dropout,
      scaled_attention=model.scaled_attention,
      dtype=compute_dtype(model.dtype),
    )
    self._sources: dict[str, FunnyClips | FeatureClips] = {}
    self._logits = jax.jit(lambda variables, clips: self.model.apply(variables, clips)[0])

  def source(self, split: str) -> FunnyClips | FeatureClips:
    """The clips of split "train" or "test", generated or read once and kept in memory."""
    if split not in self._sources:
      data = self.config.data
      shapes = {
        "audio_dim": data.audio_dim,
        "vision_dim": data.vision_dim,
        "text_length": data.text_length,
        "text_dim": data.text_dim,
      }
      if data.source == "features":
        self._sources[split] = FeatureClips(self.root, split, **shapes)
      else:
        size = {"train": data.train_size, "test": data.test_size}[split]
        self._sources[split] = FunnyClips(
          split, size, **shapes, num_cues=data.num_cues, noise=data.noise, seed=data.seed
        )
    return self._sources[split]

  def preprocess(self, example: dict) -> dict:
    # Both sources hold finite features only (FeatureClips checks every file when it reads it).
    features = {name: np.asarray(example[name], np.float32) for name in self.modalities}
    return {**features, "label": np.asarray(example["label"], np.int32)}

  def init(self, rng, batch):
    return self.model.init({"params": rng, "dropout": rng}, {name: batch[name] for name in self.modalities})

  def loss(self, variables, batch, rng):
    clips = {name: batch[name] for name in self.modalities}
    logits, projected = self.model.apply(variables, clips, deterministic=False, rngs={"dropout": rng})
    classification = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    contrastive = sum(
      (nt_xent(projected[first], projected[second], self.config.loss.temperature) for first, second in self._pairs()),
      jnp.zeros((), jnp.float32),
    )
    metrics = {
      "accuracy": (logits.argmax(-1) == batch["label"]).mean(),
      "classification_loss": classification,
      "contrastive_loss": contrastive,
    }
    return classification + self.config.loss.contrastive_weight * contrastive, metrics, {}

  def _pairs(self):
    return itertools.combinations(self.modalities, 2)

  def predict(self, variables, clips: dict) -> np.ndarray:
    """{modality: (N, ...)} → predicted labels (N,) (1 = funny), in batches of eval.batch_size (the last one
    zero-padded, so one shape compiles)."""
    batch_size = self.config.eval.batch_size
    count, predicted = len(clips[self.modalities[0]]), []
    for start in range(0, count, batch_size):
      batch = {name: clips[name][start : start + batch_size] for name in self.modalities}
      padded = {
        name: np.pad(value, [(0, batch_size - len(value))] + [(0, 0)] * (value.ndim - 1))
        for name, value in batch.items()
      }
      predicted.append(np.asarray(self._logits(variables, padded)).argmax(-1))
    return np.concatenate(predicted)[:count]

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Accuracy and F1 (funny = positive) on the test clips (`quick`: the first eval.quick_num_samples), and on the
    procedural data the accuracy per kind of clip (KINDS)."""
    del workdir  # nothing to plot
    source = self.source("test")
    count = min(self.config.eval.quick_num_samples, len(source)) if quick else len(source)
    arrays = {name: value[:count] for name, value in source.arrays.items()}
    predicted, labels = self.predict(variables, arrays), arrays["label"]
    results = {
      "modalities": ",".join(self.modalities),
      "accuracy": accuracy(predicted, labels),
      "f1": f1_binary(predicted, labels),
      "positive_rate": float(labels.mean()),
      "num_examples": int(count),
    }
    if not quick and (arrays["kind"] >= 0).all():
      for index, name in enumerate(KINDS):
        members = arrays["kind"] == index
        if members.any():
          results[f"accuracy_{name}"] = float(np.mean(predicted[members] == labels[members]))
    return results

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
