"""The one check every image task makes on a source example."""

import numpy as np

from storyjax.errors import DataError


def checked_image(example: dict, image_size: int, channels: int = 3, key: str = "image") -> np.ndarray:
  """example[key] as (S, S, C) float32; a DataError names a missing array or a wrong shape and the config keys."""
  if key not in example:
    raise DataError(f"example {example.get('key', example.get('id', '?'))} has no {key!r}")
  expected = (image_size, image_size, channels)
  if np.shape(example[key]) != expected:
    raise DataError(
      f"{key} has shape {np.shape(example[key])}, expected {expected} (data.image_size"
      + (", data.channels)" if channels != 3 else ")")
    )
  return np.asarray(example[key], np.float32)
