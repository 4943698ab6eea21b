"""CosEmb stage 2 (thesis §4.1): the masked transformer over a patient's exam sequence → the transplant outcome,
with stratified k-fold cross-validation trained as one run.

Exam features come from a frozen image encoder, the one of a pretraining run (`features.encoder` = its workdir:
configs/cosemb_pretrain.py's contrastive 3-D ResNet, or configs/medimp_pretrain.py's image–text one) or an
untrained 3-D ResNet ("random", the no-pretraining baseline), and/or the creatinine statistics between exams
(`features.inputs`). They are min-max scaled per exam and feature on the training patients (the code's
StandardScaler → MinMaxScaler), and computed once, when the task first reads its data.

k-fold (facts funnynet-medical-sfd (b), "Protocol"): the training patients are dealt into `model.num_folds`
stratified folds; the model is `num_folds` classifiers with stacked parameters, the k-th trained on every fold but
the k-th (BCE with pos_weight = #neg/#pos). Evaluation keeps the folds whose validation AUC exceeds 0.5 and averages
their test probabilities. The published best-epoch choice per fold (minimum validation loss) is not made: every
fold model is the run's EMA at the end.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax.base_config import compute_dtype
from storyjax.data.medical.kidney import EXAMS, NUM_EXAMS, PatientSource, cohort_from_config
from storyjax.data.pipeline import ArraySource
from storyjax.errors import ConfigError
from storyjax.layers.resnet3d import ResNet3D
from storyjax.losses import masked_mean
from storyjax.metrics.classification import binary_report, roc_auc, stratified_folds
from storyjax.models.multimodal import FoldEnsemble
from storyjax.tasks import load_trained_task

FEATURE_INPUTS = ("image", "creatinine", "image_creatinine")
ENCODER_TASKS = ("cosemb_pretrain", "medimp_pretrain")


def weighted_bce(logits, labels, pos_weight: float):
  """torch's BCEWithLogitsLoss(pos_weight) per element: −[w·y·log σ(x) + (1 − y)·log(1 − σ(x))]."""
  labels = labels.astype(jnp.float32)
  return -(pos_weight * labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))


class Task:
  """Binds the k-fold FoldEnsemble of ExamSequenceClassifiers to the trainer (contract: storyjax/tasks/base.py)."""

  non_state_keys = {}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model, features = config.model, config.features
    if features.inputs not in FEATURE_INPUTS:
      raise ConfigError(f"features.inputs={features.inputs!r}; choose one of {FEATURE_INPUTS}")
    if model.num_folds < 2:
      raise ConfigError(f"model.num_folds={model.num_folds}: k-fold cross-validation needs at least 2 folds")
    self.num_folds = model.num_folds
    self.model = FoldEnsemble(
      model.num_folds,
      {
        "width": model.width,
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "dropout_rate": model.dropout_rate,
        "dtype": compute_dtype(model.dtype),
      },
    )
    self._sources: dict[str, ArraySource] = {}
    self._pos_weight = None
    self._logits = jax.jit(lambda variables, features, present: self.model.apply(variables, features, present))

  # Data: features of every patient, computed once.

  def _encoder(self):
    """volumes (N, S, S, S, 1) → features (N, F): the frozen encoder named by features.encoder."""
    features = self.config.features
    if features.encoder == "random":
      encoder = ResNet3D(width=features.random_width)
      size = self.config.data.volume_size
      variables = jax.jit(encoder.init)(jax.random.PRNGKey(self.config.seed), jnp.zeros((1, size, size, size, 1)))
      return jax.jit(lambda volumes: encoder.apply(variables, volumes))
    config_path = pathlib.Path(features.encoder) / "config.json"
    try:
      task_name = json.loads(config_path.read_text()).get("task")
    except (OSError, json.JSONDecodeError):
      task_name = None  # load_trained_task names the problem
    task_name = task_name or ENCODER_TASKS[0]
    if task_name not in ENCODER_TASKS:
      raise ConfigError(
        f"features.encoder={features.encoder!r} holds a {task_name!r} run; give a run of one of {ENCODER_TASKS} "
        f"or 'random'"
      )
    task, variables = load_trained_task(features.encoder, task_name)
    return task.volume_features(variables)

  def _patient_features(self, split: str, encode) -> dict[str, np.ndarray]:
    source = PatientSource(cohort_from_config(self.config.data, split))
    inputs = self.config.features.inputs
    rows = {"image": [], "creatinine": [], "present": [], "label": []}
    for index in range(len(source)):
      patient = source[index]
      rows["present"].append(patient["present"])
      rows["label"].append(patient["label"])
      rows["creatinine"].append(patient["creatinine_stats"])
      if inputs != "creatinine":
        rows["image"].append(np.asarray(encode(patient["volumes"])))  # the 4 exams as one batch
    parts = [np.stack(rows[name]) for name in ("image", "creatinine") if name in inputs]
    return {
      "features": np.concatenate(parts, axis=-1).astype(np.float32),
      "present": np.stack(rows["present"]).astype(bool),
      "label": np.asarray(rows["label"], np.int32),
    }

  def _build_sources(self) -> None:
    encode = None if self.config.features.inputs == "creatinine" else self._encoder()
    train = self._patient_features("train", encode)
    test = self._patient_features("test", encode)
    # Min-max per exam and feature over the training patients who have that exam.
    present = train["present"][..., None]
    low = np.where(present, train["features"], np.inf).min(0)
    high = np.where(present, train["features"], -np.inf).max(0)
    low, high = np.where(np.isfinite(low), low, 0.0), np.where(np.isfinite(high), high, 1.0)
    for arrays in (train, test):
      arrays["features"] = np.where(
        arrays["present"][..., None], (arrays["features"] - low) / np.maximum(high - low, 1e-8), 0.0
      ).astype(np.float32)
    train["fold"] = stratified_folds(train["label"], self.num_folds, self.config.data.seed)
    test["fold"] = np.full(len(test["label"]), -1, np.int32)
    positives = int(train["label"].sum())
    if positives in (0, len(train["label"])):
      raise ConfigError("the training patients all have the same outcome; use more patients (data.train_patients)")
    self._pos_weight = (len(train["label"]) - positives) / positives
    self._sources = {"train": ArraySource(train), "test": ArraySource(test)}

  def source(self, split: str) -> ArraySource:
    if not self._sources:
      self._build_sources()
    return self._sources[split]

  def preprocess(self, example: dict) -> dict:
    return dict(example)

  # Model.

  def init(self, rng, batch):
    return self.model.init({"params": rng, "dropout": rng}, batch["features"], batch["present"])

  def loss(self, variables, batch, rng):
    logits = self.model.apply(
      variables, batch["features"], batch["present"], deterministic=False, rngs={"dropout": rng}
    )  # (K, B)
    in_training_folds = batch["fold"][None, :] != jnp.arange(self.num_folds)[:, None]
    losses = weighted_bce(logits, jnp.broadcast_to(batch["label"], logits.shape), self._pos_weight)
    correct = (logits > 0) == (batch["label"][None, :] == 1)
    return masked_mean(losses, in_training_folds), {"accuracy": masked_mean(correct, in_training_folds)}, {}

  def _probabilities(self, variables, arrays, present=None) -> np.ndarray:
    """(K, N) probabilities of every fold model."""
    present = arrays["present"] if present is None else present
    return np.asarray(jax.nn.sigmoid(self._logits(variables, arrays["features"], present)))

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """accuracy, f1, auc (and balanced accuracy, weighted F1) of the fold-averaged test probabilities; the full
    evaluation adds the same with one exam removed from every test patient (`without_<exam>_*`) and with the
    last exam only."""
    del workdir  # nothing to plot
    train, test = self.source("train").arrays, self.source("test").arrays
    validation = self._probabilities(variables, train)
    fold_auc = np.array(
      [roc_auc(validation[k][train["fold"] == k], train["label"][train["fold"] == k]) for k in range(self.num_folds)]
    )
    kept = fold_auc > 0.5
    if not kept.any():
      kept[:] = True

    def report(present) -> dict:
      probabilities = self._probabilities(variables, test, present)[kept].mean(0)
      return binary_report(probabilities, test["label"])

    results = {**report(test["present"]), "folds_kept": int(kept.sum()), "fold_auc": float(np.nanmean(fold_auc))}
    results["positive_rate"] = float(test["label"].mean())
    if not quick:
      patterns = {f"without_{exam}": np.arange(NUM_EXAMS) != index for index, exam in enumerate(EXAMS)}
      patterns["last_exam_only"] = np.arange(NUM_EXAMS) == NUM_EXAMS - 1
      for pattern, kept_exams in patterns.items():
        present = test["present"] & kept_exams
        has_exam = present.any(-1)
        pattern_report = report(present)
        results.update({f"{pattern}_{key}": pattern_report[key] for key in ("accuracy", "f1", "auc")})
        results[f"{pattern}_patients_with_no_exam"] = int((~has_exam).sum())
    return results

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # features are recomputed from the encoder run and the data config

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
