"""User-facing errors: the CLIs print these as one line and exit non-zero."""


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
