"""Per-device memory of a config's train step on meshes of many devices, without the devices.

  python benchmarks/memory.py --config=configs/director.py:paper --device_counts=1,8,64,256

Runs on the CPU with as many host-platform devices as the largest count, AOT-compiles the sharded step
for data-parallel, fsdp and fsdp+model meshes (or those in `--layouts`) on the first N of them, and prints
one JSON object with XLA's per-device memory analysis (arguments = state + batch shards, temporaries, peak)
for each. The global batch stays `batch_size` unless the data axes do not divide it; then it is raised to
the next multiple (the row says so). Figures are XLA:CPU's; an accelerator's scheduler can differ somewhat.
XLA:CPU's default scheduler orders for speed, not memory, and hoists rematerialised work next to the forward
pass (so `model.remat` would show no saving); `--memory_scheduler` (on by default) compiles with its
memory-optimised scheduler instead, closer to the memory-aware schedulers of GPU and TPU.
"""

import json
import os
import sys
import time

from absl import app, flags
import jax

from storyjax import cli, profiling, trainer
from storyjax.tasks import get_task

_DEVICE_COUNTS = flags.DEFINE_list("device_counts", ["1", "8", "64", "256"], "Mesh sizes to compile for.")
LAYOUTS = ("single", "data", "fsdp", "fsdp+model")
_LAYOUTS = flags.DEFINE_list("layouts", list(LAYOUTS), f"Of {LAYOUTS}: those to compile where a count has them.")
_MEMORY_SCHEDULER = flags.DEFINE_bool("memory_scheduler", True, "Compile with XLA:CPU's memory-optimised scheduler.")
MEMORY_SCHEDULER_FLAG = "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"


def mesh_layouts(num_devices: int) -> dict[str, dict[str, int]]:
  """Named (data, fsdp, model) meshes of `num_devices` devices."""
  if num_devices == 1:
    return {"single": {"data": 1, "fsdp": 1, "model": 1}}
  layouts = {"data": {"data": num_devices, "fsdp": 1, "model": 1}, "fsdp": {"data": 1, "fsdp": num_devices, "model": 1}}
  if num_devices % 2 == 0:
    layouts["fsdp+model"] = {"data": 1, "fsdp": num_devices // 2, "model": 2}
  return layouts


def measure(config, mesh: dict[str, int]) -> dict:
  config = config.copy_and_resolve_references()
  config.mesh.update(mesh)
  data_ways = mesh["data"] * mesh["fsdp"]
  config.batch_size = -(-config.batch_size // data_ways) * data_ways
  start = time.perf_counter()
  setup = trainer.TrainSetup(get_task(config), config)
  _, cost = profiling.compile_with_cost(setup.lower_train_step())
  state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(setup.abstract_state)) / (
    mesh["fsdp"] * mesh["model"]
  )
  return {
    "num_devices": mesh["data"] * mesh["fsdp"] * mesh["model"],
    "mesh": mesh,
    "batch_size": config.batch_size,
    "per_device_batch": config.batch_size // data_ways,
    "argument_gib": cost.argument_bytes / profiling.GIB,
    "temp_gib": cost.temp_bytes / profiling.GIB,
    "peak_gib": cost.peak_bytes / profiling.GIB,
    "ideal_state_shard_gib": state_bytes / profiling.GIB,
    "gflops_per_step": cost.flops / 1e9,
    "compile_seconds": time.perf_counter() - start,
  }


def main(argv):
  del argv
  device_counts = sorted({int(count) for count in _DEVICE_COUNTS.value})
  if unknown := set(_LAYOUTS.value) - set(LAYOUTS):
    raise app.UsageError(f"--layouts: unknown {sorted(unknown)}; choose from {LAYOUTS}.")
  if _MEMORY_SCHEDULER.value:  # read when the CPU backend starts, below
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {MEMORY_SCHEDULER_FLAG}"
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", device_counts[-1])
  config = cli.CONFIG_FLAG.value
  rows = []
  for num_devices in device_counts:
    layouts = {layout: mesh for layout, mesh in mesh_layouts(num_devices).items() if layout in _LAYOUTS.value}
    for layout, mesh in layouts.items():
      rows.append({"layout": layout, **measure(config, mesh)})
      print(f"{num_devices} devices, {layout}: {rows[-1]['peak_gib']:.3f} GiB peak per device", file=sys.stderr)
  peaks = {(row["num_devices"], row["layout"]): row["peak_gib"] for row in rows}
  summary = {}
  if (1, "single") in peaks and (8, "fsdp") in peaks:
    summary["peak_reduction_1_device_to_fsdp8"] = peaks[1, "single"] / peaks[8, "fsdp"]
  if (8, "data") in peaks and (8, "fsdp") in peaks:
    summary["peak_reduction_data8_to_fsdp8"] = peaks[8, "data"] / peaks[8, "fsdp"]
  backend = "XLA:CPU AOT memory analysis" + (", memory-optimised scheduler" if _MEMORY_SCHEDULER.value else "")
  print(json.dumps({"config": config.name, "backend": backend, "rows": rows, "summary": summary}))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
