"""The source protocol every domain's data follows, and the Grain input pipeline: per-process shards whose order
depends only on (seed, step)."""

from collections.abc import Callable, Iterator
import queue
import threading
from typing import Protocol, runtime_checkable

import grain
import jax
import numpy as np

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


def apply_in_batches(fn: Callable, arrays, batch_size: int):
  """fn(*chunks) over `batch_size` rows at a time of `arrays` (host arrays of equal length N ≥ 1), the last chunk
  padded by repeating its last row so that one shape is compiled → fn's outputs (any pytree of (batch_size, …)
  arrays) as numpy, the padding dropped and the chunks concatenated: (N, …)."""
  outputs = []
  for start in range(0, len(arrays[0]), batch_size):
    chunk = [array[start : start + batch_size] for array in arrays]
    padded = [np.concatenate([part, np.repeat(part[-1:], batch_size - len(part), axis=0)]) for part in chunk]
    outputs.append(jax.tree.map(lambda leaf, size=len(chunk[0]): np.asarray(leaf)[:size], fn(*padded)))
  return jax.tree.map(lambda *leaves: np.concatenate(leaves), *outputs)


class Prefetcher:
  """Iterates over `transform(batch)` for the batches of `iterator`, computed `depth` batches ahead in a thread.

  With `transform` = a host-to-device transfer, the next batches are on the devices while the current step
  runs. Batches come out in order; an error in the thread is raised by the next `next()`. `close()` stops the
  thread and closes `iterator` (if it can be closed); `depth` = 0 transforms in the caller's thread.
  """

  _END = object()

  def __init__(self, iterator: Iterator, transform: Callable, depth: int):
    if depth < 0:
      raise ConfigError(f"data.prefetch_to_device={depth} must be >= 0.")
    self._iterator, self._transform, self._depth = iterator, transform, depth
    self._stop = threading.Event()
    self._queue = queue.Queue(maxsize=depth) if depth else None
    self._thread = None
    if depth:
      self._thread = threading.Thread(target=self._fill, name="device-prefetch", daemon=True)
      self._thread.start()

  def _put(self, item) -> bool:
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _fill(self) -> None:
    try:
      for batch in self._iterator:
        if not self._put(self._transform(batch)):
          return
      self._put(self._END)
    except BaseException as error:  # handed to the consumer, raised there
      self._put(error)

  def __iter__(self):
    return self

  def __next__(self):
    if not self._depth:
      return self._transform(next(self._iterator))
    item = self._queue.get()
    if item is self._END:
      raise StopIteration
    if isinstance(item, BaseException):
      raise item
    return item

  def close(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if hasattr(self._iterator, "close"):
      self._iterator.close()


class ArraySource:
  """A random-access source over in-memory rows: `arrays` maps names to arrays with one leading (N,) axis."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {name: len(array) for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySource arrays differ in length: {lengths}")
    self.arrays = arrays
    self._length = next(iter(lengths.values()))

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self._length:
      raise IndexError(f"example {index} out of range for {self._length}")
    return {name: array[index] for name, array in self.arrays.items()}


class ClassBalancedSource:
  """`source` with both classes of a binary `labels` (N,) equally frequent: the minority class repeated (cycled) up to
  the majority's count, positives and negatives interleaved; the pipeline's per-epoch shuffle then mixes them (how
  LAEO-Net++ balances its batches, facts laeo-scam A.4)."""

  def __init__(self, source, labels):
    labels = np.asarray(labels).astype(bool)
    if len(labels) != len(source):
      raise ValueError(f"ClassBalancedSource: {len(labels)} labels for a source of {len(source)} examples")
    self.source = source
    self._classes = [np.flatnonzero(labels), np.flatnonzero(~labels)]
    if min(map(len, self._classes)) == 0:
      raise ConfigError("cannot balance the classes of a source that holds only one class; turn balancing off")
    self._length = 2 * max(map(len, self._classes))

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self._length:
      raise IndexError(f"example {index} out of range for {self._length}")
    members = self._classes[index % 2]
    return self.source[int(members[(index // 2) % len(members)])]


class SubsetSource:
  """The examples `indices` (K,) of `source`, in that order (e.g. a validation split held out of a training set)."""

  def __init__(self, source, indices):
    self.source, self.indices = source, np.asarray(indices, np.int64)
    if len(self.indices) and not (self.indices.min() >= 0 and self.indices.max() < len(source)):
      raise ValueError(f"SubsetSource indices must lie in [0, {len(source)})")

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self.indices):
      raise IndexError(f"example {index} out of range for {len(self.indices)}")
    return self.source[int(self.indices[index])]
