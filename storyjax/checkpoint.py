"""Orbax checkpoints of the train state.

Saves are synchronous and atomic (Orbax writes to a temporary directory and renames it), so a crash
never leaves a half-written step that looks complete; the newest `keep` steps are kept. Every process
writes its own shards; restoring reshards onto the current mesh, whatever the process count was. The data
position is not stored: it is a function of the step (storyjax.data.pipeline).
"""

import contextlib
import pathlib

import orbax.checkpoint as ocp

from storyjax.errors import CheckpointError


class Checkpointer:
  """Saves and restores the train state pytree under `directory` (shared by all processes)."""

  def __init__(self, directory: str | pathlib.Path, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(
      self.directory, options=options, item_handlers={"state": ocp.StandardCheckpointHandler()}
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  @staticmethod
  def latest_step_in(directory: str | pathlib.Path) -> int | None:
    """The newest complete step under `directory` (None if there is none), without creating anything."""
    if not pathlib.Path(directory).is_dir():
      return None
    with contextlib.closing(_read_only_manager(directory)) as manager:
      return manager.latest_step()

  @staticmethod
  def restore_subset(directory: str | pathlib.Path, step: int, abstract_subset):
    """Restores only the top-level entries of `abstract_subset` (e.g. the EMA parameters) of step `step`.

    The rest of the saved state (e.g. the optimizer's moments) is never read.
    """
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_subset)
    args = ocp.args.Composite(
      state=ocp.args.PyTreeRestore(abstract_subset, restore_args=restore_args, partial_restore=True)
    )
    with contextlib.closing(_read_only_manager(directory)) as manager:
      try:
        return manager.restore(step, args=args)["state"]
      except Exception as error:  # Orbax raises many types for unreadable files; report them as one.
        raise _restore_error(pathlib.Path(directory).absolute() / str(step), error) from error

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

  def restore(self, step: int, abstract_state):
    """Restores step `step` into the shapes, dtypes and shardings of `abstract_state`."""
    path = self.directory / str(step)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    except Exception as error:  # Orbax raises many types for unreadable files; report them as one.
      raise _restore_error(path, error) from error
    return restored["state"]

  def close(self) -> None:
    self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _restore_error(path: pathlib.Path, error: Exception) -> CheckpointError:
  return CheckpointError(
    f"cannot restore checkpoint {path}: it is corrupt or was written by an incompatible config "
    f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
    f"Move it away or use another --workdir; nothing was deleted."
  )


def _read_only_manager(directory: str | pathlib.Path) -> ocp.CheckpointManager:
  """A manager that only reads: it creates nothing and, keeping every step (no max_to_keep), deletes nothing.

  (Orbax's own read_only option logs five warnings per manager.)
  """
  options = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
  return ocp.CheckpointManager(
    pathlib.Path(directory).absolute(), options=options, item_handlers={"state": ocp.PyTreeCheckpointHandler()}
  )
