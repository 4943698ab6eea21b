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
class TaskBase(Protocol):
  """What every task provides besides its loss: `Task` (one loss) or `TurnTask` (losses taken in turns)."""

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
class Task(TaskBase, Protocol):
  """A task with one loss over all parameters; see storyjax/tasks/shapes.py for the smallest complete one."""

  def loss(self, variables: Variables, batch: Batch, rng: jax.Array) -> tuple[jax.Array, dict, Variables]:
    """Training loss on a global batch: (scalar loss, scalar metrics, updated mutable collections).

    The updated collections are the model's non-parameter variables after the step (e.g. BatchNorm's
    `batch_stats`, from `model.apply(..., mutable=[...])`), `{}` for a model without any.
    """
    ...


@runtime_checkable
class TurnTask(TaskBase, Protocol):
  """A task whose parameters are updated in turns within each step, each turn by its own optimizer (a GAN: the
  generator side, then the discriminator; storyjax/tasks/scam.py).

  `turns` maps each turn, in update order, to the top-level parameter names it updates; every parameter belongs
  to exactly one turn. The optimizer of turn t is `optimizer` with the overrides in `optimizer.turns.<t>`.
  """

  turns: dict[str, tuple[str, ...]]

  def turn_loss(
    self, turn: str, variables: Variables, batch: Batch, rng: jax.Array, carry: Any
  ) -> tuple[jax.Array, dict, Variables, Any]:
    """Turn `turn`'s loss, differentiated w.r.t. its parameters only: (loss, scalar metrics, updated mutable
    collections, carry). `variables` hold the parameters as updated by the earlier turns of this step; `carry` is
    what the previous turn returned (None for the first), e.g. the generator's images for the discriminator.
    """
    ...


@runtime_checkable
class GenerativeTask(TaskBase, Protocol):
  """A task that can generate from prompts (`python -m storyjax.sample`).

  Optionally also `prompt_warnings(prompts: Sequence[str]) -> list[str]`: one human-readable line per problem a
  prompt will meet silently (empty, cut at the caption limit, words read as unknown), each distinct prompt once,
  named by its first index in `prompts` and its text; sample prints them before sampling, which goes on. A task
  without the method gives no warnings (it is not a member here, so `isinstance` does not require it).
  """

  def sample(self, variables: Variables, prompts: Sequence[str], rng: jax.Array) -> dict[str, np.ndarray]:
    """One sample per prompt → numpy arrays with a leading (N,) dimension (written to samples.npz)."""
    ...

  def save_samples(self, samples: dict[str, np.ndarray], out_dir: pathlib.Path) -> None:
    """Writes per-sample files (plots, native formats) beside samples.npz."""
    ...
