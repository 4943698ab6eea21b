"""Grain input pipelines: per-process shards, deterministic in (seed, step), checkpointable."""
from typing import Callable

import grain
import jax

from storyjax.errors import ConfigError


def make_train_iterator(source, preprocess: Callable[[dict], dict], global_batch_size: int, seed: int,
                        num_threads: int) -> grain.DatasetIterator:
  """Infinite iterator of this process's part of each global batch; reshuffled every epoch.

  Process p of P reads examples p, p+P, ... of the shuffled stream, so the P local batches of a step
  together hold exactly the examples a single process would read, and no example is read twice.
  """
  process_count, process_index = jax.process_count(), jax.process_index()
  if global_batch_size % process_count:
    raise ConfigError(f"batch_size={global_batch_size} is not divisible by the {process_count} processes.")
  dataset = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  dataset = dataset[process_index::process_count].map(preprocess)
  dataset = dataset.batch(global_batch_size // process_count, drop_remainder=True)
  read_options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * max(num_threads, 1))
  return iter(dataset.to_iter_dataset(read_options))
