"""User-facing errors: the CLIs print these as one line and exit non-zero (storyjax/program.py gives the codes)."""


class StoryjaxError(Exception):
  """An error caused by the user's input (config, data, checkpoint) rather than a bug."""


class ConfigError(StoryjaxError):
  """Unknown or inconsistent config value."""


class DataError(StoryjaxError):
  """Missing, malformed or wrongly shaped data."""


class CheckpointError(StoryjaxError):
  """A checkpoint that cannot be restored (corrupt, or from an incompatible config)."""


class DivergenceError(StoryjaxError):
  """A non-finite loss."""


class WorkdirInUse(StoryjaxError):
  """Another training run holds the workdir's lock."""


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint at `step`; rerunning the same command resumes.

  Not a StoryjaxError: nothing was wrong, and the CLIs exit with their own code for it (storyjax/program.py).
  """

  def __init__(self, step: int, workdir):
    super().__init__(
      f"preempted: stopped at step {step} on SIGTERM and saved a checkpoint in {workdir}; "
      f"rerun the same command to resume."
    )
    self.step = step
