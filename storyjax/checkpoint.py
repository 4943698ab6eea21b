"""Orbax checkpoints of the train state.

Saves are synchronous and atomic (Orbax writes to a temporary directory and renames it), so a crash
never leaves a half-written step that looks complete; the newest `keep` steps are kept. Every process
writes its own shards; restoring reshards onto the current mesh, whatever the process count was. The data
position is not stored: it is a function of the step (storyjax.data.pipeline).
"""

import contextlib
import logging as logging_lib
import os
import pathlib
import sys
import time

from absl import logging as absl_logging
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
        with _stragglers_muted():
          return manager.restore(step, args=args)["state"]
      except Exception as error:  # Orbax raises many types for unreadable files; report them as one.
        raise _restore_error(pathlib.Path(directory).absolute() / str(step), error) from error

  def save(self, step: int, state) -> None:
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))

  def restore(self, step: int, abstract_state):
    """Restores step `step` into the shapes, dtypes and shardings of `abstract_state`."""
    path = self.directory / str(step)
    try:
      with _stragglers_muted():
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


class _UnreadableMetadataFilter(logging_lib.Filter):
  """Drops Orbax's ERROR record for each checkpoint metadata file it cannot parse (one per reading thread, with the
  file's content): restoring such a step raises, and the CheckpointError it becomes names the step once."""

  def filter(self, record: logging_lib.LogRecord) -> bool:
    return not str(record.msg).startswith("Failed to json parse Metadata file")


absl_logging.get_absl_logger().addFilter(_UnreadableMetadataFilter())


@contextlib.contextmanager
def _stragglers_muted(grace_seconds: float = 0.5):
  """When a restore fails, Orbax closes its event loop while TensorStore still has reads in flight; their callbacks
  then print tracebacks from C++ threads straight to file descriptor 2. This mutes that descriptor during the
  restore and, if it failed, for `grace_seconds` more while the stragglers finish; the CheckpointError says it once.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  except Exception:
    time.sleep(grace_seconds)
    raise
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _restore_error(path: pathlib.Path, error: Exception) -> CheckpointError:
  return CheckpointError(
    f"cannot restore checkpoint {path}: it is corrupt or was written by an incompatible config "
    f"({type(error).__name__}: {_first_sentence(error)}). "
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


def _first_sentence(error: Exception) -> str:
  """The first line of an Orbax or TensorStore error, without the spec dump TensorStore appends."""
  return str(error).splitlines()[0].split(" See full TensorStore details")[0].rstrip(".") if str(error) else ""
