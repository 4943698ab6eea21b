"""Stopping a training run cleanly when the cluster preempts it (SLURM, Kubernetes and Cloud TPU send SIGTERM).

One process: a SIGTERM handler notes the request and the loop stops after the step it is running, saves a
checkpoint there and raises `Preempted`. Several processes: JAX's preemption service (started by
`jax.distributed.initialize`, it catches SIGTERM itself) agrees on one step for all of them, the first that every
process reaches after any of them was signalled (`multihost_utils.reached_preemption_sync_point`).
"""

import signal
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionWatch:
  """`stop_after(step)` is True at the step where training should save and stop; use as a context manager.

  Outside the main thread (where Python cannot install signal handlers) a single process is not watched.
  """

  def __init__(self):
    self.requested = False
    self._installed, self._previous_handler = False, signal.SIG_DFL

  def _on_sigterm(self, signum, frame) -> None:
    self.requested = True

  def __enter__(self) -> "PreemptionWatch":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      self._installed, self._previous_handler = True, signal.SIG_DFL if previous is None else previous
    return self

  def __exit__(self, *exc_info) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous_handler)
      self._installed = False

  def stop_after(self, step: int) -> bool:
    """Called by every process after every step (the multi-process protocol needs each step)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested
