"""ADAPT (thesis §4.2): stress detection from ECG, EDA, respiration, audio and video with missing modalities, in the
three sequential stages of the authors' code (facts funnynet-medical-sfd (c)), one run each (`config.stage`):

  "anchor"       each modality's encoder + head is aligned to the anchor modality's tokens (video) by a sum of
                 symmetric InfoNCE terms (learnable temperature from 0.07, features l2-normalised + N(0, γ²) noise +
                 renormalised), on complete windows; the transformer does not exist yet.
  "contrastive"  encoders frozen (stage 1's run, `model.anchor_run`, BatchNorm in eval mode); the masked transformer
                 and CLS learn by InfoNCE between the CLS of two views of each complete window: Gaussian input noise
                 (σ ∈ {0, 0.1} per modality), and the same plus modality dropout (1 to 4 of the 5 slots hidden).
  "classify"     everything trainable, initialised from both runs (`model.contrastive_run`; "" for either trains
                 that part from scratch), cross-entropy on the stress label with the missing modalities as recorded.
With `model.fusion="late"` the classify stage is the late-fusion baseline instead: one classifier per modality on
its own encoder + head, trained jointly from scratch, predicting the mean of the present modalities' probabilities.

Frozen parts are not parameters of the later stage: they are the earlier run's variables, held by the task.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from storyjax.base_config import check_choices, compute_dtype
from storyjax.data.medical.stress import StressIDRecordings, StressRecordings, StressWindowSource
from storyjax.data.pipeline import ArraySource
from storyjax.errors import CheckpointError, ConfigError, DataError
from storyjax.layers.attention import MASKINGS
from storyjax.losses import info_nce, noisy_unit_rows
from storyjax.metrics.classification import multiclass_report
from storyjax.models.multimodal import MODALITIES, AdaptModel
from storyjax.tasks import load_trained_task

STAGES = ("anchor", "contrastive", "classify")
FUSIONS = ("transformer", "late")
# Test-time availability patterns of the evaluation: which modalities are kept (the recorded availability applies).
PATTERNS = {
  "all": MODALITIES,
  "no_audio": ("ecg", "eda", "rr", "video"),
  "no_video": ("ecg", "eda", "rr", "audio"),
  "physiological_only": ("ecg", "eda", "rr"),
  **{f"only_{name}": (name,) for name in MODALITIES},
}


def model_variables(variables: dict) -> dict:
  """A stage's variables without its learnable InfoNCE temperature: what AdaptModel.apply takes."""
  params = {name: value for name, value in variables["params"].items() if name != "log_temperature"}
  return {**variables, "params": params}


def modality_dropout(rng, present):
  """ADAPT's MoldalityDropout on present (B, M) bool: where more than one modality is present, hide nb ~ U{1..M−1}
  distinct slots (already missing ones may be drawn, as coded)."""
  batch, num_modalities = present.shape
  count_rng, order_rng = jax.random.split(rng)
  num_hidden = jax.random.randint(count_rng, (batch, 1), 1, num_modalities)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(order_rng, present.shape), axis=-1), axis=-1)
  hidden = (rank < num_hidden) & (present.sum(-1, keepdims=True) > 1)
  return present & ~hidden


def gaussian_noise(rng, inputs: dict, sigma: float) -> dict:
  """Per example and modality, noise N(0, s²) with s ∈ {0, sigma} drawn uniformly (the code's noise_sigma)."""
  noisy = dict(inputs)
  for index, name in enumerate(MODALITIES):
    scale_rng, noise_rng = jax.random.split(jax.random.fold_in(rng, index))
    values = inputs[name]
    scale = sigma * jax.random.bernoulli(scale_rng, 0.5, (values.shape[0],)).astype(values.dtype)
    noisy[name] = values + scale.reshape((-1,) + (1,) * (values.ndim - 1)) * jax.random.normal(noise_rng, values.shape)
  return noisy


class Task:
  """Binds AdaptModel to the trainer, one stage per run (contract: storyjax/tasks/base.py)."""

  non_state_keys = {"eval": ("quick_num_samples",)}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model = config.model
    if config.stage not in STAGES or model.fusion not in FUSIONS:
      raise ConfigError(f"stage={config.stage!r}, model.fusion={model.fusion!r}: choose from {STAGES}, {FUSIONS}")
    if model.fusion == "late" and config.stage != "classify":
      raise ConfigError("model.fusion='late' (the late-fusion baseline) is a 'classify' stage run")
    unknown = set(config.data.modalities.split(",")) - set(MODALITIES)
    if unknown:
      raise ConfigError(f"data.modalities has unknown {sorted(unknown)}; choose among {MODALITIES}")
    self.kept = np.array([name in config.data.modalities.split(",") for name in MODALITIES])
    loss = config.loss
    check_choices(("loss.anchor", loss.anchor, MODALITIES), ("model.masking", model.masking, MASKINGS))
    if config.data.root and not pathlib.Path(config.data.root).is_dir():
      raise DataError(f"data.root={config.data.root!r} is not a directory (a StressID folder: Physiological/, ...)")
    # The earlier stages' runs (read here so a stage that ignores one still checks every key it was given).
    self.earlier_runs = {"anchor": model.anchor_run, "contrastive": model.contrastive_run}
    self.model = AdaptModel(
      width=model.width,
      num_layers=model.num_layers,
      num_heads=model.num_heads,
      mlp_dim=model.mlp_dim,
      dropout_rate=model.dropout_rate,
      masking=model.masking,
      signal_channels=tuple(model.signal_channels),
      signal_kernel_sizes=tuple(model.signal_kernel_sizes),
      audio_width=model.audio_width,
      audio_dim=model.audio_dim,
      dtype=compute_dtype(model.dtype),
    )
    self._frozen = None
    self._sources: dict[str, ArraySource] = {}
    self._probabilities = jax.jit(self._predict)
    self._embed = jax.jit(functools.partial(self.model.apply, method=AdaptModel.embed))
    self._fuse = jax.jit(functools.partial(self.model.apply, method=AdaptModel.fuse))

  # Data.

  def _recordings(self, split: str):
    data = self.config.data
    if data.root:
      return StressIDRecordings(data.root, split, data.sample_rate, data.audio_rate, data.video_dim, data.num_mels)
    subjects = {"train": data.train_subjects, "test": data.test_subjects}[split]
    return StressRecordings(
      split,
      subjects,
      data.seconds,
      data.sample_rate,
      data.audio_rate,
      data.num_mels,
      data.video_dim,
      data.missing_video,
      data.missing_audio,
      data.missing_at_test_only or None,
      data.shared_state_std,
      data.seed,
    )

  def source(self, split: str) -> ArraySource:
    """Train: windows (complete ones only in the anchor and contrastive stages, as coded); test: whole recordings
    (the published test, no sliding window). Generated or read once and kept in memory (the epochs revisit them)."""
    self._load_frozen()
    if split not in self._sources:
      data = self.config.data
      recordings = self._recordings(split)
      whole = split == "test"
      windows = StressWindowSource(recordings, data.window_seconds, data.stride_seconds, whole_recording=whole)
      indices = range(len(windows))
      if split == "train" and self.config.stage != "classify":
        indices = [index for index, (recording, _) in enumerate(windows.windows) if recordings.present(recording).all()]
        if not indices:
          raise ConfigError(f"the {self.config.stage} stage trains on complete recordings and the data has none")
      examples = [windows[index] for index in indices]
      keys = (*MODALITIES, "present", "label")
      self._sources[split] = ArraySource({key: np.stack([example[key] for example in examples]) for key in keys})
    return self._sources[split]

  def preprocess(self, example: dict) -> dict:
    features = {name: np.asarray(example[name], np.float32) for name in MODALITIES}
    features["present"] = np.asarray(example["present"], bool) & self.kept
    features["label"] = np.asarray(example["label"], np.int32)
    return features

  def _load_frozen(self) -> None:
    """The earlier stages' variables this stage starts from or keeps frozen (loaded once, outside any trace)."""
    if self._frozen is not None:
      return
    frozen, runs = {}, {}
    if self.config.stage != "anchor" and self.config.model.fusion == "transformer":
      if not self.earlier_runs["anchor"] and self.config.stage == "contrastive":
        raise ConfigError("the contrastive stage needs model.anchor_run (a run of configs/adapt_anchor.py)")
      runs["anchor"] = self.earlier_runs["anchor"]
      if self.config.stage == "classify":
        runs["contrastive"] = self.earlier_runs["contrastive"]
    for stage, workdir in runs.items():
      if not workdir:
        continue
      try:
        frozen[stage] = load_trained_task(workdir, "adapt")[1]
      except CheckpointError as error:
        raise CheckpointError(f"model.{stage}_run: {error} (stage {stage}: configs/adapt_{stage}.py)") from error
    self._frozen = jax.tree.map(np.asarray, frozen)

  # Model.

  def init(self, rng, batch):
    rngs = {"params": rng, "dropout": rng}
    inputs = {name: batch[name] for name in (*MODALITIES, "present")}
    temperature = {"log_temperature": jnp.log(jnp.asarray(self.config.loss.temperature, jnp.float32))}
    if self.config.stage == "anchor":
      variables = self.model.init(rngs, inputs, method=AdaptModel.embed)
      return {**variables, "params": {**variables["params"], **temperature}}
    if self.config.stage == "contrastive":
      tokens = jnp.zeros((len(batch["label"]), len(MODALITIES), self.config.model.width))
      variables = self.model.init(rngs, tokens, batch["present"], method=AdaptModel.fuse)
      return {**variables, "params": {**variables["params"], **temperature}}
    if self.config.model.fusion == "late":
      return self.model.init(rngs, inputs, method=AdaptModel.late_fusion)
    variables = self.model.init(rngs, inputs)
    return self._with_pretrained(variables)

  def _with_pretrained(self, variables):
    """Stage 3's initial variables: stage 1's encoders, heads and BatchNorm statistics and stage 2's transformer
    replace the fresh ones (keeping their partitioning metadata)."""
    for stage in ("anchor", "contrastive"):
      loaded = self._frozen.get(stage)
      if loaded is None:
        continue
      for collection in ("params", "batch_stats"):
        for name, value in loaded.get(collection, {}).items():
          if name in variables[collection]:
            fresh = variables[collection][name]
            variables[collection][name] = jax.tree.map(
              lambda box, array: box.replace_boxed(jnp.asarray(array)) if hasattr(box, "replace_boxed") else array,
              fresh,
              value,
              is_leaf=lambda leaf: hasattr(leaf, "replace_boxed"),
            )
    return variables

  def _anchor_variables(self):
    return model_variables(self._frozen["anchor"])

  def _info_nce(self, first, second, log_temperature, rng):
    """Symmetric InfoNCE of ADAPT's InfoNCEAnchor on (B, D) pairs: noisy unit rows, learnable temperature."""
    first_rng, second_rng = jax.random.split(rng)
    noise = self.config.loss.noise_scale
    first, second = noisy_unit_rows(first, first_rng, noise), noisy_unit_rows(second, second_rng, noise)
    no_duplicates = jnp.zeros((len(first), len(first)), bool)
    return info_nce(first, second, no_duplicates, jnp.exp(log_temperature))

  def loss(self, variables, batch, rng):
    params = variables["params"]
    inputs = {name: batch[name] for name in (*MODALITIES, "present")}
    stage = self.config.stage
    if stage == "anchor":
      tokens, updated = self.model.apply(
        model_variables(variables),
        inputs,
        True,
        method=AdaptModel.embed,
        mutable=["batch_stats"],
        rngs={"dropout": rng},
      )
      anchor = MODALITIES.index(self.config.loss.anchor)
      losses = [
        self._info_nce(tokens[:, anchor], tokens[:, index], params["log_temperature"], jax.random.fold_in(rng, index))
        for index in range(len(MODALITIES))
        if index != anchor and self.kept[index]
      ]
      return sum(losses), {"temperature": jnp.exp(params["log_temperature"])}, updated
    if stage == "contrastive":
      noise_rng, dropout_rng, view_rng, nce_rng = jax.random.split(rng, 4)
      encode = lambda noisy: jax.lax.stop_gradient(
        self.model.apply(self._anchor_variables(), noisy, method=AdaptModel.embed)
      )
      first_rng, second_rng = jax.random.split(noise_rng)
      first_tokens = encode(gaussian_noise(first_rng, inputs, self.config.loss.noise_sigma))
      second_tokens = encode(gaussian_noise(second_rng, inputs, self.config.loss.noise_sigma))
      dropped = modality_dropout(view_rng, batch["present"])
      transformer = model_variables(variables)
      fuse = lambda tokens, present, key: self.model.apply(
        transformer, tokens, present, False, method=AdaptModel.fuse, rngs={"dropout": key}
      )
      first_rng, second_rng = jax.random.split(dropout_rng)
      first = fuse(first_tokens, batch["present"], first_rng)
      second = fuse(second_tokens, dropped, second_rng)
      loss = self._info_nce(first, second, params["log_temperature"], nce_rng)
      return loss, {"temperature": jnp.exp(params["log_temperature"]), "kept_modalities": dropped.sum(-1).mean()}, {}
    method = AdaptModel.late_fusion if self.config.model.fusion == "late" else AdaptModel.__call__
    logits, updated = self.model.apply(
      variables, inputs, True, method=method, mutable=["batch_stats"], rngs={"dropout": rng}
    )
    if self.config.model.fusion == "late":  # (B, 5, 2): each present modality's classifier on its own
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"][:, None])
      present = batch["present"]
      loss = jnp.sum(losses * present) / jnp.maximum(present.sum(), 1)
      logits = jnp.log(self._late_probabilities(logits, present))
    else:
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}, updated

  @staticmethod
  def _late_probabilities(logits, present):
    """(B, 5, 2) per-modality logits → (B, 2) mean probabilities over the present modalities (uniform if none)."""
    weights = present.astype(jnp.float32)[..., None]
    mean = jnp.sum(jax.nn.softmax(logits) * weights, 1) / jnp.maximum(weights.sum(1), 1.0)
    return jnp.where(weights.sum(1) > 0, mean, 0.5)

  def _predict(self, variables, inputs):
    if self.config.model.fusion == "late":
      logits = self.model.apply(variables, inputs, method=AdaptModel.late_fusion)
      return self._late_probabilities(logits, inputs["present"])
    return jax.nn.softmax(self.model.apply(variables, inputs))

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """classify: accuracy, weighted F1, balanced accuracy and AUC on the test recordings (whole, batch 1 as
    published; `quick`: the first eval.quick_num_samples) under each availability pattern of PATTERNS
    (`<pattern>_<metric>`; the recorded availability still applies). Earlier stages: the training loss's
    retrieval on the test windows (anchor: mean top-1 of each modality to the anchor; contrastive: CLS of the
    dropped view to the full one)."""
    del workdir  # nothing to plot
    source = self.source("test")
    num_samples = min(self.config.eval.quick_num_samples if quick else len(source), len(source))
    examples = [self.preprocess(source[index]) for index in range(num_samples)]
    batch = {name: np.stack([example[name] for example in examples]) for name in examples[0]}
    if self.config.stage != "classify":
      return self._retrieval(variables, batch)
    results = {}
    for pattern, kept in PATTERNS.items():
      if quick and pattern != "all":
        continue
      mask = np.array([name in kept for name in MODALITIES])
      inputs = {name: batch[name] for name in MODALITIES}
      inputs["present"] = batch["present"] & mask
      probabilities = np.concatenate(
        [
          np.asarray(self._probabilities(variables, {name: value[start : start + 1] for name, value in inputs.items()}))
          for start in range(num_samples)
        ]
      )
      report = multiclass_report(probabilities, batch["label"])
      results.update({f"{pattern}_{key}": value for key, value in report.items()})
    results.update({"accuracy": results["all_accuracy"], "f1": results["all_weighted_f1"], "auc": results["all_auc"]})
    results["num_samples"] = num_samples
    return results

  def _retrieval(self, variables, batch) -> dict:
    inputs = {name: batch[name] for name in (*MODALITIES, "present")}
    complete = batch["present"].all(-1)
    if self.config.stage == "anchor":
      tokens = np.asarray(self._embed(model_variables(variables), inputs))[complete]
      anchor = MODALITIES.index(self.config.loss.anchor)
      top1 = {
        name: _top1(tokens[:, index], tokens[:, anchor])
        for index, name in enumerate(MODALITIES)
        if index != anchor and self.kept[index]
      }
      return {**{f"{name}_to_anchor_top1": value for name, value in top1.items()}, "chance": 1 / max(complete.sum(), 1)}
    tokens = self._embed(self._anchor_variables(), inputs)
    transformer = model_variables(variables)
    full = self._fuse(transformer, tokens, batch["present"])
    dropped = modality_dropout(jax.random.PRNGKey(0), jnp.asarray(batch["present"]))
    partial = self._fuse(transformer, tokens, dropped)
    return {"dropped_to_full_top1": _top1(np.asarray(partial), np.asarray(full)), "chance": 1 / len(full)}

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir


def _top1(queries: np.ndarray, keys: np.ndarray) -> float:
  """Fraction of queries (N, D) whose most cosine-similar key (N, D) is their own."""
  queries = queries / np.linalg.norm(queries, axis=-1, keepdims=True)
  keys = keys / np.linalg.norm(keys, axis=-1, keepdims=True)
  return float(np.mean((queries @ keys.T).argmax(-1) == np.arange(len(queries))))
