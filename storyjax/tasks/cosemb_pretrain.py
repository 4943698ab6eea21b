"""CosEmb stage 1 (thesis §4.1, eq 4.1): a 3-D ResNet-18 pretrained with the cosine-embedding loss on MRI pairs.

Pairs (storyjax/data/medical/kidney.py VolumePairSource, 1 same-patient pair in 4) are labelled by the loss
(`loss.pairing`, facts funnynet-medical-sfd (b) "Pair labelling"):
  "patient" (self-supervised): same patient → positive, else negative; in the curriculum's first phase two volumes
            of one exam (different sequences) are positive too, later they are left out;
  "gfr" / "donor_age" (weakly supervised): pairs of different patients, positive if |Δ| < c₀, negative if ≥ c₁,
            others left out, (c₀, c₁) per curriculum phase (`loss.curriculum` "c₀,c₁;c₀,c₁;…", published
            "5,30;10,20;10,15" for GFR); same-patient pairs are left out.
Phases split the run evenly. The loss is torch's CosineEmbeddingLoss with the code's margin 0.5 (the thesis' eq 4.1
has margin 0). The step counter the curriculum needs is a "progress" collection of the train state, so a
resumed run continues in its phase.
"""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax.base_config import compute_dtype
from storyjax.data.medical.kidney import VolumePairSource, cohort_from_config
from storyjax.errors import ConfigError
from storyjax.losses import cosine_embedding, unit_rows
from storyjax.metrics.classification import binary_report
from storyjax.models.cosemb import ContrastiveVolumeEncoder

PAIRINGS = ("patient", "gfr", "donor_age")


def parse_curriculum(text: str) -> np.ndarray:
  """ "c₀,c₁;c₀,c₁;…" → (P, 2) float32 thresholds per phase; ConfigError names a malformed one."""
  try:
    phases = np.array([[float(value) for value in phase.split(",")] for phase in text.split(";")], np.float32)
  except ValueError as error:
    raise ConfigError(f"loss.curriculum={text!r}: expected 'c0,c1;c0,c1;…' numbers ({error})") from error
  if phases.ndim != 2 or phases.shape[1] != 2 or (phases[:, 0] > phases[:, 1]).any():
    raise ConfigError(f"loss.curriculum={text!r}: each phase is 'c0,c1' with c0 <= c1")
  return phases


class Task:
  """Binds ContrastiveVolumeEncoder to the trainer (contract: storyjax/tasks/base.py)."""

  non_state_keys = {"eval": ("num_pairs", "quick_num_samples")}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model, loss = config.model, config.loss
    if loss.pairing not in PAIRINGS:
      raise ConfigError(f"loss.pairing={loss.pairing!r}; choose one of {PAIRINGS}")
    self.phases = parse_curriculum(loss.curriculum)
    self.model = ContrastiveVolumeEncoder(
      model.width, tuple(model.stage_sizes), model.hidden_dim, model.out_dim, model.dropout_rate,
      compute_dtype(model.dtype),
    )  # fmt: skip
    self._embed = jax.jit(lambda variables, volumes: self.model.apply(variables, volumes))
    self._features = jax.jit(
      lambda variables, volumes: self.model.apply(variables, volumes, method=ContrastiveVolumeEncoder.features)
    )

  def source(self, split: str) -> VolumePairSource:
    data = self.config.data
    num_pairs = data.train_pairs if split == "train" else self.config.eval.num_pairs
    return VolumePairSource(cohort_from_config(data, split), num_pairs, data.positive_fraction, data.seed)

  def preprocess(self, example: dict) -> dict:
    return {name: np.asarray(value) for name, value in example.items()}

  def init(self, rng, batch):
    variables = self.model.init({"params": rng, "dropout": rng}, batch["volume_a"])
    return {**variables, "progress": {"step": jnp.zeros((), jnp.int32)}}

  def pair_labels(self, batch, phase):
    """(positive (B,) bool, used (B,) bool) of the pairs in curriculum phase `phase` (module docstring)."""
    same_patient, same_exam = batch["same_patient"], batch["same_exam"]
    if self.config.loss.pairing == "patient":
      used = ~same_exam | (phase == 0)
      return same_patient, used
    name = self.config.loss.pairing
    difference = jnp.abs(batch[f"{name}_a"] - batch[f"{name}_b"])
    close, far = jnp.asarray(self.phases)[phase]
    return difference < close, ~same_patient & ((difference < close) | (difference >= far))

  def _phase(self, step):
    num_phases = len(self.phases) if self.config.loss.pairing != "patient" else 2
    return jnp.minimum(step * num_phases // max(self.config.total_steps, 1), num_phases - 1)

  def loss(self, variables, batch, rng):
    step = variables["progress"]["step"]
    both = jnp.concatenate([batch["volume_a"], batch["volume_b"]])
    model_variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    embeddings, updated = self.model.apply(
      model_variables, both, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
    first, second = jnp.split(embeddings.astype(jnp.float32), 2)
    positive, used = self.pair_labels(batch, self._phase(step))
    loss = cosine_embedding(first, second, positive, self.config.loss.margin, mask=used)
    cosine = jnp.sum(unit_rows(first) * unit_rows(second), -1)
    metrics = {"used_pairs": used.mean(), "positive_pairs": (positive & used).mean(), "phase": self._phase(step)}
    metrics["accuracy"] = jnp.sum(((cosine > 0.5) == positive) & used) / jnp.maximum(used.sum(), 1)
    return loss, metrics, {**updated, "progress": {"step": step + 1}}

  def volume_features(self, variables):
    """→ a function volumes (N, S, S, S, 1) → features (N, 8·width) numpy (eval mode): stage 2's exam features."""
    model_variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    return lambda volumes: np.asarray(self._features(model_variables, np.asarray(volumes, np.float32)))

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Test pairs labelled as in the last curriculum phase: AUC of the cosine, and accuracy/F1 of the published
    score p = (cos + 1)/2 > 0.5 (the code's 2·cos − 1 > 0.5 threshold on cos is 0.75; both are reported)."""
    del workdir  # nothing to plot
    source = self.source("test")
    num_pairs = min(self.config.eval.quick_num_samples if quick else len(source), len(source))
    pairs = [source[index] for index in range(num_pairs)]
    batch = {name: np.stack([pair[name] for pair in pairs]) for name in pairs[0]}
    model_variables = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    embed = lambda volumes: np.concatenate(
      [np.asarray(self._embed(model_variables, volumes[start : start + 32])) for start in range(0, len(volumes), 32)]
    )
    first, second = embed(batch["volume_a"]), embed(batch["volume_b"])
    cosine = np.asarray(jnp.sum(unit_rows(first) * unit_rows(second), -1))
    positive, used = (np.asarray(value) for value in self.pair_labels(batch, self._phase(self.config.total_steps)))
    report = binary_report((cosine[used] + 1) / 2, positive[used].astype(np.int32))
    return {
      **report,
      "code_threshold_accuracy": float(np.mean((cosine[used] > 0.75) == positive[used])),
      "num_pairs": int(used.sum()),
      "positive_rate": float(positive[used].mean()),
    }

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
