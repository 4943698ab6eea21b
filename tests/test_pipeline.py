"""Per-process input pipelines: disjoint shards that assemble into the single-process batches."""

import itertools
import time

import numpy as np
import pytest

from storyjax.data.pipeline import Prefetcher, apply_in_batches, make_train_iterator
from storyjax.errors import ConfigError

NUM_EXAMPLES, GLOBAL_BATCH = 48, 12


def _identity(example_id):
  return {"id": np.int64(example_id)}


def _batches(num_steps, process_index=0, process_count=1, start_step=0):
  iterator = make_train_iterator(
    list(range(NUM_EXAMPLES)),
    _identity,
    GLOBAL_BATCH,
    seed=3,
    num_threads=0,
    start_step=start_step,
    process_index=process_index,
    process_count=process_count,
  )
  return [next(iterator)["id"] for _ in range(num_steps)]


@pytest.mark.parametrize("process_count", [2, 3, 4])
def test_processes_read_disjoint_blocks_of_the_global_batch(process_count):
  steps_per_epoch = NUM_EXAMPLES // GLOBAL_BATCH
  single = _batches(2 * steps_per_epoch)
  per_process = [_batches(2 * steps_per_epoch, p, process_count) for p in range(process_count)]
  for step in range(2 * steps_per_epoch):
    local = [batches[step] for batches in per_process]
    assert all(batch.shape == (GLOBAL_BATCH // process_count,) for batch in local)
    np.testing.assert_array_equal(np.concatenate(local), single[step])  # rows in process order
  for epoch in range(2):
    seen = np.concatenate(
      [
        batches[step]
        for batches in per_process
        for step in range(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
      ]
    )
    assert sorted(seen.tolist()) == list(range(NUM_EXAMPLES)), f"epoch {epoch}: an example is missing or repeated"
  first_epoch, second_epoch = np.concatenate(single[:steps_per_epoch]), np.concatenate(single[steps_per_epoch:])
  assert not np.array_equal(first_epoch, second_epoch), "each epoch should be reshuffled"


def test_start_step_resumes_the_same_stream_with_any_process_count():
  reference = _batches(7)
  np.testing.assert_array_equal(_batches(2, start_step=5), reference[5:7])
  resumed = [_batches(2, p, 2, start_step=5) for p in range(2)]
  for offset in range(2):
    np.testing.assert_array_equal(np.concatenate([resumed[0][offset], resumed[1][offset]]), reference[5 + offset])


def test_batch_not_divisible_by_processes():
  with pytest.raises(ConfigError, match="not divisible by the 5 processes"):
    _batches(1, 0, 5)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetcher_keeps_order_and_raises_errors_in_place(depth):
  def batches():
    yield from range(5)
    raise KeyError("broken example")

  prefetcher = Prefetcher(batches(), lambda batch: batch * 10, depth)
  assert [next(prefetcher) for _ in range(5)] == [0, 10, 20, 30, 40]
  with pytest.raises(KeyError, match="broken example"):
    next(prefetcher)
  prefetcher.close()


def test_prefetcher_runs_ahead_by_depth_and_stops_on_close():
  transformed = []

  def transform(batch):
    transformed.append(batch)
    return batch

  prefetcher = Prefetcher(itertools.count(), transform, depth=2)
  assert next(prefetcher) == 0
  deadline = time.monotonic() + 5
  while len(transformed) < 4 and time.monotonic() < deadline:  # 1 taken + 2 queued + 1 waiting to be queued
    time.sleep(0.01)
  time.sleep(0.1)
  assert len(transformed) == 4
  prefetcher.close()
  assert not prefetcher._thread.is_alive()


def test_apply_in_batches_pads_the_last_chunk_and_drops_the_padding():
  shapes = []

  def fn(values, offsets):
    shapes.append((values.shape, offsets.shape))
    return {"sum": values.sum(-1) + offsets, "rows": values}

  values, offsets = np.arange(14.0).reshape(7, 2), np.arange(7.0) * 10
  outputs = apply_in_batches(fn, (values, offsets), 3)
  assert shapes == [((3, 2), (3,))] * 3  # 3 + 3 + 1 padded to 3: one shape
  np.testing.assert_array_equal(outputs["sum"], values.sum(-1) + offsets)
  np.testing.assert_array_equal(outputs["rows"], values)
  assert isinstance(outputs["sum"], np.ndarray)
