"""The configured trajectory data: the embedded procedural E.T. set, the released E.T. layout on disk, or its
prepared (ArrayRecord) form."""

import ml_collections

from storyjax.data.et import procedural
from storyjax.data.et.layout import ETSource
from storyjax.data.et.prepared import PreparedETSource
from storyjax.errors import ConfigError

SOURCES = ("embedded", "et", "et_prepared")
_DIRECTORIES = {
  "et": (ETSource, "the released E.T. dataset directory"),
  "et_prepared": (PreparedETSource, "a directory written by `python -m storyjax.data.et --prepare`"),
}


def trajectory_source(data: ml_collections.ConfigDict, split: str):
  """A Grain random-access source of E.T.-style examples (keys of `procedural.EmbeddedET.__getitem__`).

  "embedded": data.train_size / data.test_size procedural samples of data.subset; "et": the split file
  `{data.subset}_{split}_split.txt` of the released layout in data.path (sizes come from the split files);
  "et_prepared": the same items from the prepared form of that layout in data.path.
  """
  if data.source not in SOURCES:
    raise ConfigError(f"data.source={data.source!r}; choose one of {SOURCES}.")
  if data.source in _DIRECTORIES:
    source_class, directory = _DIRECTORIES[data.source]
    if not data.path:
      raise ConfigError(f"data.source={data.source!r} needs --config.data.path=DIR, {directory}.")
    # CLaTr configs name the caption they train on (data.caption); Director uses the camera+character one.
    return source_class(
      data.path, data.subset, split, max_frames=data.max_frames, caption=data.get("caption", "caption")
    )
  if data.path:
    raise ConfigError(
      f"data.path={data.path!r} is set but data.source='embedded' reads no files; set "
      f"data.source to one of {tuple(_DIRECTORIES)} or drop data.path."
    )
  size = {"train": data.train_size, "test": data.test_size}[split]
  try:
    return procedural.EmbeddedET(
      data.subset, split, size, seed=data.seed, max_frames=data.max_frames, min_frames=data.min_frames
    )
  except ValueError as error:  # e.g. an unknown data.subset or a too small data.min_frames
    raise ConfigError(f"data config: {error}") from error
