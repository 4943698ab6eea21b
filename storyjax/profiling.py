"""What a compiled step costs (per-device memory, FLOPs), device memory, and jax.profiler traces."""

import dataclasses
import os
import pathlib

import jax

from storyjax.errors import ConfigError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class StepCost:
  """What one call of a compiled SPMD program costs: memory per device, FLOPs in all."""

  argument_bytes: int  # inputs resident on one device (its state shard + batch shard)
  output_bytes: int
  alias_bytes: int  # outputs written in place of donated inputs
  temp_bytes: int  # activations and other scratch on one device
  flops: float  # the whole call over all devices, counted on the HLO before XLA optimises it

  @property
  def peak_bytes(self) -> int:
    """Upper estimate of the memory the call needs on one device."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}

  def describe(self) -> str:
    return (
      f"per device: {self.peak_bytes / GIB:.3f} GiB peak (arguments {self.argument_bytes / GIB:.3f}, "
      f"temporaries {self.temp_bytes / GIB:.3f}, outputs not aliased "
      f"{(self.output_bytes - self.alias_bytes) / GIB:.3f}); {self.flops / 1e9:.2f} GFLOP per step"
    )


def compile_with_cost(lowered: jax.stages.Lowered) -> tuple[jax.stages.Compiled, StepCost]:
  """Compiles `lowered`; memory from XLA's analysis of the compiled program, FLOPs from the lowered one.

  The compiled program's own FLOP count is per device and, on GPU, misses library calls (cuBLAS GEMMs),
  so FLOPs are counted on the platform-independent HLO of the whole step instead.
  """
  compiled = lowered.compile()
  memory = compiled.memory_analysis()
  return compiled, StepCost(
    argument_bytes=int(memory.argument_size_in_bytes),
    output_bytes=int(memory.output_size_in_bytes),
    alias_bytes=int(memory.alias_size_in_bytes),
    temp_bytes=int(memory.temp_size_in_bytes),
    flops=hlo_flops(lowered),
  )


def hlo_flops(lowered: jax.stages.Lowered) -> float:
  """FLOPs of the whole lowered program; NaN when no HLO cost model is reachable."""
  cost = lowered.cost_analysis()  # None on backends that are PJRT plugins (the CUDA one, for instance)
  if cost is None:
    cost = cpu_hlo_cost(lowered)
  cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict in older jax versions
  return float((cost or {}).get("flops", float("nan")))


def cpu_hlo_cost(lowered: jax.stages.Lowered) -> dict | None:
  """The same pre-optimisation HLO cost analysis, run by the CPU client (jax internals, hence guarded)."""
  try:
    from jax._src.lib import _jax  # pylint: disable=import-outside-toplevel

    client = jax.local_devices(backend="cpu")[0].client
    return _jax.hlo_module_cost_analysis(client, lowered.compiler_ir("hlo").as_hlo_module())
  except Exception:  # a jax version without these internals: FLOPs are then reported as unknown
    return None


def device_memory_bytes(device: jax.Device) -> int | None:
  """Memory one device may use: the allocator's limit on accelerators; on CPU, host RAM ÷ local devices."""
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  if device.platform == "cpu":
    try:
      host_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
      return None
    return host_bytes // jax.local_device_count()
  return None


def check_fits(cost: StepCost, device: jax.Device, what: str) -> None:
  """Raises ConfigError before any step runs when the compiled program cannot fit on `device`."""
  available = device_memory_bytes(device)
  if available is not None and cost.peak_bytes > available:
    raise ConfigError(
      f"{what} needs {cost.peak_bytes / GIB:.2f} GiB per device but {device.device_kind} has "
      f"{available / GIB:.2f} GiB; lower batch_size, shard more (--config.mesh.fsdp / .model) or use "
      f"--config.model.dtype=bfloat16."
    )


class StepProfiler:
  """Writes a jax.profiler trace of steps [first_step, first_step + num_steps) into `directory`."""

  def __init__(self, directory: pathlib.Path, first_step: int, num_steps: int):
    if num_steps < 0:
      raise ConfigError(f"profile_steps must be >= 0, got {num_steps}.")
    self.directory, self.first_step, self.last_step = directory, first_step, first_step + num_steps - 1
    self._active = False

  def before_step(self, step: int) -> None:
    if step == self.first_step and self.last_step >= self.first_step:
      self.directory.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.directory), create_perfetto_trace=True)
      self._active = True

  def after_step(self, step: int, outputs) -> None:
    """Call after dispatching step `step`; on the last traced step it waits for `outputs`."""
    if self._active and step == self.last_step:
      jax.block_until_ready(outputs)
      self.close()
      if jax.process_index() == 0:
        print(f"profile:     {self.directory} (tensorboard --logdir {self.directory}, or Perfetto)")

  def close(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False
