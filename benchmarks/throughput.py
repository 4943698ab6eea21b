"""Training throughput of one config, printed as one JSON object.

  python benchmarks/throughput.py --config=configs/director.py:paper --config.model.dtype=bfloat16

Measures, as medians over `--repeats` timed windows of `--steps` steps after `--warmup_steps`:
  - the train step alone, on one batch already on the devices;
  - the input pipeline alone (host batches per second);
  - both together, as `storyjax.train` runs them.
`data_bound` is true when the pipeline alone is slower than the step alone. FLOPs per step come from
XLA's cost analysis of the whole step's HLO (before optimisation, so the same on every platform); MFU is
achieved FLOP/s per device over `--peak_tflops` (by default the dense bf16 peak of the detected chip, when
known), for the full loop (`mfu`) and for the step alone (`step_only_mfu`).
"""

import json
import math
import pathlib
import statistics
import time

from absl import app, flags
import jax

from storyjax import cli, profiling, trainer
from storyjax.tasks import get_task

# Dense bf16 peak TFLOP/s per chip, from the vendors' data sheets.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "TPU v4": 275.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0}

_WARMUP = flags.DEFINE_integer("warmup_steps", 3, "Untimed steps before timing.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows; the median is reported.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "runs/.jax_cache", "Persistent compilation cache.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device for MFU (default: from device kind).")


def peak_tflops(device: jax.Device) -> float | None:
  if _PEAK.value is not None:
    return _PEAK.value
  kinds = sorted(PEAK_TFLOPS, key=len, reverse=True)  # most specific name first
  return next((PEAK_TFLOPS[kind] for kind in kinds if kind.lower() in device.device_kind.lower()), None)


def median_rate(run_window) -> float:
  """Median over repeats of windows-per-second × steps, i.e. steps (or batches) per second."""
  rates = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    run_window()
    rates.append(_STEPS.value / (time.perf_counter() - start))
  return statistics.median(rates)


def main(argv):
  del argv
  config = cli.CONFIG_FLAG.value
  trainer.enable_compilation_cache(pathlib.Path(_CACHE_DIR.value))
  setup = trainer.TrainSetup(get_task(config), config)
  state = setup.init_state()
  train_step, cost = profiling.compile_with_cost(setup.lower_train_step())
  data_iter = setup.train_iterator()
  batch = setup.device_batch(next(data_iter))
  for _ in range(_WARMUP.value):
    state, _ = train_step(state, setup.device_batch(next(data_iter)))
  jax.block_until_ready(state)

  def step_window():
    nonlocal state
    for _ in range(_STEPS.value):
      state, _ = train_step(state, batch)
    jax.block_until_ready(state)

  def pipeline_window():
    for _ in range(_STEPS.value):
      next(data_iter)

  def drain_prefetched():  # so the pipeline is timed at its sustained rate, not from full buffers
    for _ in range(4 * (config.data.get("num_workers", 0) + 1)):
      next(data_iter)

  def train_window():  # as storyjax.train runs: the loss of each step is read after the next is queued
    nonlocal state
    previous_loss = None
    for _ in range(_STEPS.value):
      state, metrics = train_step(state, setup.device_batch(next(data_iter)))
      if previous_loss is not None:
        float(previous_loss)
      previous_loss = metrics["loss"]
    jax.block_until_ready(state)

  step_only = median_rate(step_window)
  drain_prefetched()
  pipeline_only = median_rate(pipeline_window)
  together = median_rate(train_window)
  data_iter.close()
  device = jax.local_devices()[0]
  peak = peak_tflops(device)
  allocator = device.memory_stats() or {}  # accelerators only

  flops = cost.flops if math.isfinite(cost.flops) else None  # None: no HLO cost model reachable

  def mfu(steps_per_sec):
    return flops * steps_per_sec / jax.device_count() / (peak * 1e12) if peak and flops else None

  print(
    json.dumps(
      {
        "config": config.name,
        "device_kind": device.device_kind,
        "num_devices": jax.device_count(),
        "num_processes": jax.process_count(),
        "mesh": dict(setup.mesh.shape),
        "batch_size": config.batch_size,
        "dtype": config.model.get("dtype", "float32"),
        "num_params": sum(leaf.size for leaf in jax.tree.leaves(setup.abstract_state["params"])),
        "steps_per_sec": together,
        "examples_per_sec": together * config.batch_size,
        "step_only_steps_per_sec": step_only,
        "pipeline_only_batches_per_sec": pipeline_only,
        "data_bound": pipeline_only < step_only,
        "flops_per_step": flops,
        "achieved_tflops_per_device": flops * together / jax.device_count() / 1e12 if flops else None,
        "peak_tflops_per_device": peak,
        "mfu": mfu(together),
        "step_only_mfu": mfu(step_only),
        "memory_per_device": {key: value for key, value in cost.to_dict().items() if key != "flops"},
        "measured_peak_bytes_in_use": allocator.get("peak_bytes_in_use"),
        "timing": {"warmup_steps": _WARMUP.value, "steps": _STEPS.value, "repeats": _REPEATS.value},
      }
    )
  )


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
