"""The source protocol every domain's data follows, and the Grain input pipeline: per-process shards whose order
depends only on (seed, step)."""

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import grain
import jax

from storyjax.errors import ConfigError


@runtime_checkable
class RandomAccessSource(Protocol):
  """A Grain random-access source: `len(source)` examples, each a dict of numpy arrays (and strings)."""

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> dict: ...


def make_train_iterator(
  source,
  preprocess: Callable[[dict], dict],
  global_batch_size: int,
  seed: int,
  num_threads: int,
  start_step: int = 0,
  process_index: int | None = None,
  process_count: int | None = None,
  num_workers: int = 0,
) -> grain.DatasetIterator:
  """Infinite iterator over this process's block of each global batch, from batch `start_step` on.

  The example stream is the source reshuffled every epoch; global batch s holds stream elements
  [s·B, (s+1)·B) and process p of P reads only the contiguous rows [p·B/P, (p+1)·B/P) of it. The P
  local batches therefore assemble (in process order) into exactly the batch one process would read,
  no example is read twice, and a restart at any step, with any number of processes, resumes exactly.
  `num_workers` > 0 builds batches in that many worker processes (same batches, same order); `num_threads`
  reads examples in threads within each of them.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ConfigError(f"batch_size={global_batch_size} is not divisible by the {process_count} processes.")
  dataset = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None).map(preprocess)
  local_batches = dataset.batch(global_batch_size // process_count, drop_remainder=True)
  local_batches = local_batches[start_step * process_count + process_index :: process_count]
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * max(num_threads, 1))
  batches = local_batches.to_iter_dataset(read_options)
  if num_workers:
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(batches)
