"""What a compiled step costs (per-device memory, FLOPs), device memory, and jax.profiler traces."""
import dataclasses
import os
import pathlib

import jax

from storyjax.errors import ConfigError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class CompiledCost:
  """Per-device figures of one AOT-compiled SPMD program (XLA's memory and cost analyses)."""
  argument_bytes: int  # inputs resident on the device (state shard + batch shard)
  output_bytes: int
  alias_bytes: int  # outputs written in place of donated inputs
  temp_bytes: int  # activations and other scratch
  flops: float  # per device and call

  @property
  def peak_bytes(self) -> int:
    """Upper estimate of the memory the call needs on one device."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  def to_dict(self) -> dict:
    return {**dataclasses.asdict(self), "peak_bytes": self.peak_bytes}

  def describe(self) -> str:
    return (f"per device: {self.peak_bytes / GIB:.3f} GiB peak (arguments {self.argument_bytes / GIB:.3f}, "
            f"temporaries {self.temp_bytes / GIB:.3f}, outputs not aliased "
            f"{(self.output_bytes - self.alias_bytes) / GIB:.3f}); {self.flops / 1e9:.2f} GFLOP per step")


def compiled_cost(compiled: jax.stages.Compiled) -> CompiledCost:
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost  # a list of one dict in older jax versions
  return CompiledCost(argument_bytes=int(memory.argument_size_in_bytes),
                      output_bytes=int(memory.output_size_in_bytes),
                      alias_bytes=int(memory.alias_size_in_bytes),
                      temp_bytes=int(memory.temp_size_in_bytes),
                      flops=float((cost or {}).get("flops", 0.0)))


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


def check_fits(cost: CompiledCost, device: jax.Device, what: str) -> None:
  """Raises ConfigError before any step runs when the compiled program cannot fit on `device`."""
  available = device_memory_bytes(device)
  if available is not None and cost.peak_bytes > available:
    raise ConfigError(
        f"{what} needs {cost.peak_bytes / GIB:.2f} GiB per device but {device.device_kind} has "
        f"{available / GIB:.2f} GiB; lower batch_size, shard more (--config.mesh.fsdp / .model) or use "
        f"--config.model.dtype=bfloat16.")


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
      jax.profiler.start_trace(str(self.directory))
      self._active = True

  def after_step(self, step: int) -> None:
    """Call once the step's outputs are ready (e.g. after reading the loss)."""
    if self._active and step == self.last_step:
      self.close()
      if jax.process_index() == 0:
        print(f"profile:     {self.directory} (tensorboard --logdir {self.directory}, or Perfetto)")

  def close(self) -> None:
    if self._active:
      jax.profiler.stop_trace()
      self._active = False
