"""Joining a multi-process JAX run (one process per host, or several per host in tests).

Every CLI calls `initialize()` first. Three ways in:
- explicit: `STORYJAX_NUM_PROCESSES`, `STORYJAX_PROCESS_ID` and `JAX_COORDINATOR_ADDRESS=host:port`
  (launch/local.sh sets these; use them on any cluster without a scheduler JAX knows);
- SLURM: under `srun` with more than one task, JAX reads SLURM_PROCID, SLURM_NTASKS, the node list, ...;
- Cloud TPU pods: when `TPU_WORKER_HOSTNAMES` lists several hosts (GKE), JAX reads the TPU environment;
- `STORYJAX_DISTRIBUTED=auto`: JAX's own cluster detection wherever it applies (e.g. TPU VMs made with
  gcloud, whose workers it finds through the metadata server).
Otherwise the run is single-process and nothing is initialised.
"""

import os

import jax

from storyjax.errors import ConfigError


def _env_int(name: str) -> int:
  value = os.environ[name]
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{name}={value!r} is not an integer.") from None


def initialize() -> None:
  """Calls `jax.distributed.initialize` when the environment describes a multi-process run."""
  if "STORYJAX_NUM_PROCESSES" in os.environ:
    num_processes, process_id = _env_int("STORYJAX_NUM_PROCESSES"), _env_int("STORYJAX_PROCESS_ID")
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not coordinator:
      raise ConfigError("STORYJAX_NUM_PROCESSES is set but JAX_COORDINATOR_ADDRESS (host:port) is not.")
    if not 0 <= process_id < num_processes:
      raise ConfigError(f"STORYJAX_PROCESS_ID={process_id} is outside [0, {num_processes}).")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
  elif (
    os.environ.get("STORYJAX_DISTRIBUTED") == "auto"
    or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
  ):
    jax.distributed.initialize()
