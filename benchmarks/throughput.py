"""Training throughput of one config, printed as one JSON object; or of a sweep of settings, printed as a table.

  python benchmarks/throughput.py --config=configs/director.py:paper --config.model.dtype=bfloat16
  python benchmarks/throughput.py --config=configs/director.py:paper \
      --sweep="model.attention=xla,fused;model.dtype=float32,bfloat16;model.remat=none,dots;batch_size=64,128"

Measures, as medians over `--repeats` timed windows of `--steps` steps after `--warmup_steps`:
  - the train step alone, on one batch already on the devices;
  - the input pipeline alone (host batches per second);
  - both together, as `storyjax.train` runs them (batches prefetched to the devices, losses read two steps late).
`data_bound` is true when the pipeline alone is slower than the step alone. FLOPs per step come from
XLA's cost analysis of the whole step's HLO (before optimisation, so the same on every platform); MFU is
achieved FLOP/s per device over `--peak_tflops` (by default the dense bf16 peak of the detected chip, when
known), for the full loop (`mfu`) and for the step alone (`step_only_mfu`).

`--sweep` takes `key=v1,v2;key=v1,v2` (config keys; numbers, true/false or strings) and measures every
combination in this process: one JSON line per setting, then a table, then one JSON line with all rows and the
fastest setting (`best`). A setting that does not fit or is refused (ConfigError) is reported with its error.
"""

import itertools
import json
import math
import pathlib
import statistics
import time

from absl import app, flags
import jax
import ml_collections

from storyjax import cli, host_memory, profiling, trainer
from storyjax.errors import StoryjaxError
from storyjax.tasks import get_task

# Dense bf16 peak TFLOP/s per chip, from the vendors' data sheets.
PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "TPU v4": 275.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0}

_WARMUP = flags.DEFINE_integer("warmup_steps", 3, "Untimed steps before timing.")
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows; the median is reported.")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "runs/.jax_cache", "Persistent compilation cache.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device for MFU (default: from device kind).")
_SWEEP = flags.DEFINE_string("sweep", "", "Settings to measure: 'key=v1,v2;key=v1,v2' over config keys.")
TABLE_COLUMNS = ("steps_per_sec", "step_only_steps_per_sec", "pipeline_only_batches_per_sec", "mfu", "peak_gib")


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


def measure(config: ml_collections.ConfigDict) -> dict:
  """Step alone, pipeline alone and the full loop of `config`, with FLOPs, MFU and memory."""
  setup = trainer.TrainSetup(get_task(config), config)
  state = setup.init_state()
  train_step, cost = profiling.compile_with_cost(setup.lower_train_step())
  batches = setup.device_batches()
  batch = next(batches)
  for _ in range(_WARMUP.value):
    state, _ = train_step(state, next(batches))
  jax.block_until_ready(state)

  def step_window():
    nonlocal state
    for _ in range(_STEPS.value):
      state, _ = train_step(state, batch)
    jax.block_until_ready(state)

  host_batches = setup.train_iterator()

  def pipeline_window():
    for _ in range(_STEPS.value):
      next(host_batches)

  def drain_prefetched():  # so the pipeline is timed at its sustained rate, not from full buffers
    for _ in range(4 * (config.data.get("num_workers", 0) + 1)):
      next(host_batches)

  def train_window():  # as storyjax.train runs it
    nonlocal state
    losses = []
    for _ in range(_STEPS.value):
      state, metrics = train_step(state, next(batches))
      losses.append(metrics["loss"])
      if len(losses) > trainer.LOSS_CHECK_LAG:
        float(losses.pop(0))
    jax.block_until_ready(state)

  step_only = median_rate(step_window)
  drain_prefetched()
  pipeline_only = median_rate(pipeline_window)
  host_batches.close()
  together = median_rate(train_window)
  batches.close()
  device = jax.local_devices()[0]
  peak = peak_tflops(device)
  allocator = device.memory_stats() or {}  # accelerators only
  flops = cost.flops if math.isfinite(cost.flops) else None  # None: no HLO cost model reachable

  def mfu(steps_per_sec):
    return flops * steps_per_sec / jax.device_count() / (peak * 1e12) if peak and flops else None

  return {
    "config": config.name,
    "device_kind": device.device_kind,
    "num_devices": jax.device_count(),
    "num_processes": jax.process_count(),
    "mesh": dict(setup.mesh.shape),
    "batch_size": config.batch_size,
    "dtype": config.model.get("dtype", "float32"),
    "attention": config.model.get("attention"),
    "remat": config.model.get("remat"),
    "num_params": sum(leaf.size for leaf in jax.tree.leaves(setup.abstract_state["params"])),
    "steps_per_sec": together,
    "examples_per_sec": together * config.batch_size,
    "step_only_steps_per_sec": step_only,
    "loop_over_step": together / step_only,
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


def scalar(text: str):
  """'64' → 64, '0.1' → 0.1, 'true' → True, anything else stays a string."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  for parse in (int, float):
    try:
      return parse(text)
    except ValueError:
      pass
  return text


def sweep_settings(spec: str) -> list[dict]:
  """'a=1,2;b=x' → [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]."""
  axes = []
  for part in filter(None, (part.strip() for part in spec.split(";"))):
    key, _, values = part.partition("=")
    if not values:
      raise app.UsageError(f"--sweep part {part!r} is not key=v1,v2")
    axes.append([(key.strip(), scalar(value.strip())) for value in values.split(",")])
  return [dict(combination) for combination in itertools.product(*axes)]


def with_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for key, value in overrides.items():
      *parents, name = key.split(".")
      node = config
      for parent in parents:
        node = node[parent]
      if name not in node:
        raise app.UsageError(f"--sweep key {key!r} is not in the config")
      node[name] = type(node[name])(value) if isinstance(node[name], (int, float)) else value
  return config


def print_table(rows: list[dict]) -> None:
  keys = list(rows[0]["setting"])
  header = keys + list(TABLE_COLUMNS)
  lines = [header]
  for row in rows:
    values = [row["setting"][key] for key in keys]
    if "error" in row:
      lines.append(values + [row["error"][:60]])
      continue
    row = {**row, "peak_gib": row["memory_per_device"]["peak_bytes"] / profiling.GIB}
    lines.append(values + [row[column] for column in TABLE_COLUMNS])
  format_cell = lambda value: f"{value:.4g}" if isinstance(value, float) else str(value)
  widths = [max(len(format_cell(line[i])) for line in lines if i < len(line)) for i in range(len(header))]
  for line in lines:
    print("  ".join(format_cell(value).ljust(width) for value, width in zip(line, widths)))


def main(argv):
  del argv
  host_memory.keep_freed_memory()
  config = cli.CONFIG_FLAG.value
  trainer.enable_compilation_cache(pathlib.Path(_CACHE_DIR.value))
  if not _SWEEP.value:
    print(json.dumps(measure(config)))
    return
  rows = []
  for setting in sweep_settings(_SWEEP.value):
    try:
      row = {"setting": setting, **measure(with_overrides(config, setting))}
    except (StoryjaxError, jax.errors.JaxRuntimeError) as error:  # refused, or out of memory
      row = {"setting": setting, "error": f"{type(error).__name__}: {error}"}
    print(json.dumps(row), flush=True)
    rows.append(row)
  print_table(rows)
  measured = [row for row in rows if "error" not in row]
  best = max(measured, key=lambda row: row["steps_per_sec"]) if measured else None
  print(json.dumps({"sweep": rows, "best": best and best["setting"]}))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
