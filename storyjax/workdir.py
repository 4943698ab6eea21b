"""A training run's directory: created writable, held by one run at a time, cleared of a crashed save's leftovers.

The lock is `<workdir>/lock`: an exclusive `flock` on it (released by the kernel when the process ends, however it
ends) and, inside, the holder's host, PID and start time for the message a second run prints. A lock file that
names a holder but is not locked was left by a run that died: the next run takes it over with a warning. On a
shared filesystem the lock works across hosts where the filesystem supports `flock` (local disks, NFSv4, Lustre
with `flock` mounted); elsewhere it protects runs on one host only.
"""

import contextlib
import datetime
import fcntl
import json
import os
import pathlib
import shutil
import socket

from absl import logging

from storyjax.errors import ConfigError, WorkdirInUse

LOCK_FILE = "lock"
ORBAX_TMP_MARKER = ".orbax-checkpoint-tmp"


@contextlib.contextmanager
def created(workdir: pathlib.Path):
  """Yields `workdir` made (with its parents) and checked writable (a ConfigError names the path otherwise). If it
  is new and the block fails before writing anything into it but the lock, it is removed again: a run refused at
  its first start leaves nothing behind."""
  workdir = pathlib.Path(workdir).absolute()
  is_new = not workdir.exists()
  _create(workdir)
  try:
    yield workdir
  except BaseException:
    if is_new and _holds_nothing(workdir):
      shutil.rmtree(workdir)
    raise


def _holds_nothing(workdir: pathlib.Path) -> bool:
  """Only an empty lock file and an empty checkpoints directory, if anything."""
  for path in workdir.iterdir():
    empty_lock = path.name == LOCK_FILE and path.stat().st_size == 0
    if not (empty_lock or (path.name == "checkpoints" and path.is_dir() and not any(path.iterdir()))):
      return False
  return True


def _create(workdir: pathlib.Path) -> None:
  try:
    workdir.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise ConfigError(f"cannot create --workdir={workdir} ({error.strerror}); choose a writable directory.") from None
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir={workdir} is not writable; choose a writable directory.")


class Lock:
  """The exclusive hold of one training run on `workdir`: `acquire()` before writing anything, `release()` after.

  A second run's `acquire()` raises WorkdirInUse naming the holder.
  """

  def __init__(self, workdir: pathlib.Path):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self._fd = None

  def acquire(self) -> None:
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      os.close(fd)
      raise WorkdirInUse(
        f"{self.path.parent} is in use by another training run ({describe_holder(self.path)}); wait for it to "
        f"end, stop it, or use another --workdir."
      ) from None
    previous = self.path.read_text().strip()
    if previous:
      logging.warning(
        "taking over the lock of %s: its holder (%s) ended without releasing it.", self.path, _describe(previous)
      )
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # an empty lock file: released cleanly, nothing to take over
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "Lock":
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def describe_holder(lock_path: pathlib.Path) -> str:
  try:
    return _describe(lock_path.read_text().strip())
  except OSError:
    return "holder unknown"


def _describe(content: str) -> str:
  try:
    holder = json.loads(content)
    return f"PID {holder['pid']} on {holder['host']}, since {holder['since']}"
  except (ValueError, KeyError, TypeError):
    return "holder unknown"


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def remove_unfinished_saves(checkpoints: pathlib.Path) -> None:
  """Deletes the temporary directories of checkpoint saves that a crash interrupted (Orbax's
  `<step>.orbax-checkpoint-tmp*`), with a warning each. Only the lock's holder may call it: a running save would
  look the same."""
  if not checkpoints.is_dir():
    return
  for path in sorted(checkpoints.iterdir()):
    if ORBAX_TMP_MARKER in path.name:
      logging.warning("removing %s: a checkpoint save that did not finish (the run was killed while saving).", path)
      shutil.rmtree(path) if path.is_dir() else path.unlink()
