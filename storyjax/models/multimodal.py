"""Masked multimodal transformers for missing modalities (thesis ch. 4): CosEmb's exam-sequence classifier, its
k-fold ensemble, and ADAPT's model (modality encoders, projection heads, the masked transformer, the classifier).

Both feed a missing exam or modality as a fixed placeholder (zeros, as their code does) and mask it as a key
(storyjax/layers/multimodal.py), so its values never change the prediction.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import dense
from storyjax.layers.multimodal import MaskedModalityTransformer
from storyjax.layers.norms import make_norm
from storyjax.layers.signal_encoders import LogMelCNN, TimeSeriesResNet

Dtype = Any
XAVIER = nn.initializers.xavier_uniform()


class ExamSequenceClassifier(nn.Module):
  """CosEmb stage 2 (facts funnynet-medical-sfd (b)): exam features (B, T, F) and present (B, T) → logits (B,).

  Dense(F → width) per exam, a zeros-initialised CLS, learned positions over T + 1, post-norm blocks with a ReLU
  feed-forward as wide as the model, and Dense(1) on the CLS output followed by dropout on the logit, as coded.
  A missing exam is a zero vector masked as a key.
  """

  width: int = 768
  num_layers: int = 2
  num_heads: int = 2
  dropout_rate: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, present, deterministic: bool = True):
    features = jnp.where(present[..., None], features, 0.0).astype(self.dtype)
    tokens = dense(self.width, ("io", "embed"), self.dtype, "input_projection", XAVIER)(features)
    cls, _ = MaskedModalityTransformer(
      self.num_layers,
      self.num_heads,
      self.width,
      activation="relu",
      dropout_rate=self.dropout_rate,
      learned_positions=True,
      cls_init="zeros",
      dtype=self.dtype,
      name="transformer",
    )(tokens, present, deterministic)
    logits = dense(1, ("embed", "io"), self.dtype, "head", XAVIER)(cls)[:, 0].astype(jnp.float32)
    return Dropout(self.dropout_rate)(logits, deterministic=deterministic)


class FoldEnsemble(nn.Module):
  """`num_folds` independent ExamSequenceClassifiers (parameters stacked on a leading "folds" axis) applied to the
  same batch: features (B, T, F), present (B, T) → logits (K, B). Each fold model is trained on its own folds
  (storyjax/tasks/cosemb.py masks the loss), so k-fold cross-validation is one training run.
  """

  num_folds: int
  classifier: dict  # ExamSequenceClassifier's fields

  @nn.compact
  def __call__(self, features, present, deterministic: bool = True):
    stacked = nn.vmap(
      ExamSequenceClassifier,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=None,
      axis_size=self.num_folds,
      metadata_params={nn.PARTITION_NAME: "folds"},
    )
    return stacked(**self.classifier, name="folds")(features, present, deterministic)


PHYSIOLOGICAL = ("ecg", "eda", "rr")
MODALITIES = (*PHYSIOLOGICAL, "audio", "video")  # ADAPT's token order after the CLS


class ModalityHead(nn.Module):
  """ADAPT's projection head, one per modality: Dense(width) → BatchNorm → ReLU, (B, F) → (B, width)."""

  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features, train: bool = False):
    projected = dense(self.width, ("io", "embed"), self.dtype, "dense")(features)
    return nn.relu(make_norm("batch", self.dtype, "norm", epsilon=1e-5, train=train)(projected))


class AdaptModel(nn.Module):
  """ADAPT (facts funnynet-medical-sfd (c)): five modality tokens → masked transformer → 2-way logits.

  Inputs (dict): "ecg", "eda", "rr" (B, T) signals, "audio" (B, mels, frames) log-mel, "video" (B, Dv) features,
  and "present" (B, 5) bool in MODALITIES order (physiological signals always present). Methods, one per training
  stage: `embed` → tokens (B, 5, width) (stage 1 aligns them to the anchor's); `fuse` → CLS (B, width) (stage 2);
  `__call__` → logits (B, 2) (stage 3); `late_fusion` → per-modality logits (B, 5, 2) of the late-fusion
  baseline (one classifier per modality on its own token, no transformer). A missing modality enters its encoder
  as zeros (ADAPT's placeholder) and is masked as a key.
  """

  width: int = 64
  num_layers: int = 1
  num_heads: int = 4
  mlp_dim: int = 256
  dropout_rate: float = 0.2
  masking: str = "key"
  signal_channels: Sequence[int] = (16, 32, 32)
  signal_kernel_sizes: Sequence[int] = (200, 101, 51)
  audio_width: int = 64
  audio_dim: int = 512
  dtype: Dtype = jnp.float32

  def setup(self):
    self.signal_encoders = {
      name: TimeSeriesResNet(
        channels=tuple(self.signal_channels), kernel_sizes=tuple(self.signal_kernel_sizes), dtype=self.dtype
      )
      for name in PHYSIOLOGICAL
    }
    self.audio_encoder = LogMelCNN(width=self.audio_width, out_dim=self.audio_dim, dtype=self.dtype)
    self.heads = {name: ModalityHead(self.width, self.dtype) for name in MODALITIES}
    self.transformer = MaskedModalityTransformer(
      self.num_layers,
      self.num_heads,
      self.mlp_dim,
      activation="gelu",
      dropout_rate=self.dropout_rate,
      masking=self.masking,
      qkv_bias=False,
      learned_positions=False,
      cls_init="normal",
      dtype=self.dtype,
    )
    self.classifier = dense(2, ("embed", "io"), self.dtype)
    self.classifier_dropout = Dropout(self.dropout_rate)
    self.late_classifiers = {name: dense(2, ("embed", "io"), self.dtype) for name in MODALITIES}

  def embed(self, inputs: dict, train: bool = False):
    """→ tokens (B, 5, width), each modality's encoder and head (BatchNorm in train mode when `train`)."""
    present = inputs["present"]
    features = {}
    for index, name in enumerate(MODALITIES):
      observed = inputs[name].astype(self.dtype)
      placeholder_shape = (-1,) + (1,) * (observed.ndim - 1)
      observed = jnp.where(present[:, index].reshape(placeholder_shape), observed, 0.0)
      if name in PHYSIOLOGICAL:
        observed = self.signal_encoders[name](observed, train)
      elif name == "audio":
        observed = self.audio_encoder(observed, train)
      features[name] = self.heads[name](observed, train)
    return jnp.stack([features[name] for name in MODALITIES], axis=1)

  def fuse(self, tokens, present, deterministic: bool = True):
    """tokens (B, 5, width), present (B, 5) → the CLS output (B, width)."""
    return self.transformer(tokens, present, deterministic)[0]

  def __call__(self, inputs: dict, train: bool = False):
    cls = self.fuse(self.embed(inputs, train), inputs["present"], not train)
    logits = self.classifier(cls).astype(jnp.float32)
    return self.classifier_dropout(logits, deterministic=not train)

  def late_fusion(self, inputs: dict, train: bool = False):
    tokens = self.embed(inputs, train)
    logits = [self.late_classifiers[name](tokens[:, index]) for index, name in enumerate(MODALITIES)]
    return self.classifier_dropout(jnp.stack(logits, axis=1).astype(jnp.float32), deterministic=not train)
