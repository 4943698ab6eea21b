"""Orbax checkpoints of the train state.

Saves are synchronous and atomic (Orbax writes to a temporary directory and renames it), so a crash
never leaves a half-written step that looks complete; the newest `keep` steps are kept. Every process
writes its own shards; restoring reshards onto the current mesh, whatever the process count was. The data
position is not stored: it is a function of the step (storyjax.data.pipeline).
"""
import pathlib

import orbax.checkpoint as ocp

from storyjax.errors import CheckpointError


class Checkpointer:
  """Saves and restores the train state pytree under `directory` (shared by all processes)."""

  def __init__(self, directory: str | pathlib.Path, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(
        self.directory, options=options, item_handlers={"state": ocp.StandardCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

  def restore(self, step: int, abstract_state):
    """Restores step `step` into the shapes, dtypes and shardings of `abstract_state`."""
    path = self.directory / str(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except Exception as error:  # Orbax raises many types for unreadable files; report them as one.
      raise CheckpointError(
          f"cannot restore checkpoint {path}: it is corrupt or was written by an incompatible config "
          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
          f"Move it away or use another --workdir; nothing was deleted.") from error
    return restored["state"]

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
