"""The task contract: what the generic trainer (storyjax/trainer.py) and the entry points need from a model.

A task binds one model to data, a loss and an evaluation. It is built from the whole config (`Task(config)`,
checking the keys it reads) and never trains, restores or shards anything itself: the trainer does. Batches are
dicts of arrays with a leading batch dimension; `variables` are Flax variables, `{"params": ..., <mutable
collections such as "batch_stats">}`.
"""

from collections.abc import Sequence
import pathlib
from typing import Any, Protocol, runtime_checkable

import jax
import ml_collections
import numpy as np

from storyjax.data.pipeline import RandomAccessSource

Batch = dict[str, Any]
Variables = dict[str, Any]


@runtime_checkable
class Task(Protocol):
  """What every task provides; see storyjax/tasks/shapes.py for the smallest complete one."""

  config: ml_collections.ConfigDict
  # Config keys, per section, that do not shape the train state (where files are, evaluation sizes): a run may
  # resume with them changed. The trainer adds its own (data.num_threads, data.num_workers).
  non_state_keys: dict[str, Sequence[str]]

  def source(self, split: str) -> RandomAccessSource:
    """The examples of split "train" or "test"; raises ConfigError for a bad data config."""
    ...

  def preprocess(self, example: dict) -> dict[str, np.ndarray]:
    """One source example → the model's numpy features (fixed shapes, no strings); DataError names a bad one."""
    ...

  def init(self, rng: jax.Array, batch: Batch) -> Variables:
    """Flax variables for a batch of features, parameters boxed with logical axis names (`model.init(...)`)."""
    ...

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict, Variables]:
    """Training loss on a global batch: (scalar loss, scalar metrics, updated mutable collections).

    The updated collections are the model's non-parameter variables after the step (e.g. BatchNorm's
    `batch_stats`, from `model.apply(..., mutable=[...])`), `{}` for a model without any.
    """
    ...

  def evaluate(self, variables: Variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Metrics of the EMA variables on the test split (models in eval mode); plots etc. go under `workdir`.

    `quick=True` is the cheap version run every `eval_every` steps during training (a subset, no plots).
    """
    ...

  def save_assets(self, workdir: pathlib.Path) -> None:
    """Writes what inference needs besides the checkpoint (e.g. a tokenizer) when a run starts."""
    ...

  def load_assets(self, workdir: pathlib.Path) -> None:
    """Reads back what `save_assets` wrote, before restoring a run."""
    ...


@runtime_checkable
class GenerativeTask(Task, Protocol):
  """A task that can generate from prompts (`python -m storyjax.sample`)."""

  def sample(self, variables: Variables, prompts: Sequence[str], rng: jax.Array) -> dict[str, np.ndarray]:
    """One sample per prompt → numpy arrays with a leading (N,) dimension (written to samples.npz)."""
    ...

  def save_samples(self, samples: dict[str, np.ndarray], out_dir: pathlib.Path) -> None:
    """Writes per-sample files (plots, native formats) beside samples.npz."""
    ...
