"""What every task on E.T.-style trajectories shares: config checks, the data source, caption inputs, batching."""

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax.base_config import compute_dtype
from storyjax.data.et import camera, procedural
from storyjax.data.et.sources import trajectory_source
from storyjax.errors import ConfigError, DataError
from storyjax.text.caption_inputs import CaptionInputs


class TrajectoryTask:
  """What the Director and CLaTr tasks share; each adds `preprocess`, the model, loss and evaluation.

  The task contract itself is storyjax/tasks/base.py.
  """

  # Where the data and the CLIP checkpoint are, and the size of the evaluation split, may change on resume.
  non_state_keys = {"data": ("test_size", "path"), "model": ("clip_path",)}

  def __init__(self, config: ml_collections.ConfigDict, caption_key: str = "caption"):
    self.config = config
    data, model = config.data, config.model
    if not 0 < data.max_frames <= camera.MAX_FRAMES:
      raise ConfigError(f"data.max_frames={data.max_frames} must be in (0, {camera.MAX_FRAMES}].")
    self.num_frames = data.max_frames
    self.dtype = compute_dtype(model.dtype)
    if model.clip_path and model.text_encoder != "clip":
      raise ConfigError(
        f"model.clip_path is set but model.text_encoder={model.text_encoder!r}; the path is used "
        f"only with text_encoder='clip'."
      )
    self.caption_inputs = CaptionInputs(
      model.text_encoder,
      model.max_caption_length,
      procedural.caption_vocabulary(),
      model.clip_path,
      caption_key=caption_key,
      limit_name="model.max_caption_length",
    )

  def source(self, split: str):
    return trajectory_source(self.config.data, split)

  def example_arrays(self, example: dict, keys: tuple[str, ...]) -> dict:
    """One source example → its `keys` arrays (T, ...) as float32 (bool for mask), caption and caption_mask.

    A missing or wrongly shaped array is a DataError naming the example and the array.
    """
    shapes = {
      "camera_traj": (self.num_frames, camera.CAMERA_FEATURES),
      "char_traj": (self.num_frames, camera.CHARACTER_FEATURES),
      "mask": (self.num_frames,),
    }
    features = {}
    for key in keys:
      if key not in example:
        raise DataError(f"example {example.get('id', '?')} has no {key!r}")
      if np.shape(example[key]) != shapes[key]:
        raise DataError(
          f"example {example.get('id', '?')}: {key} has shape {np.shape(example[key])}, "
          f"expected {shapes[key]} (data.max_frames={self.num_frames})"
        )
      features[key] = np.asarray(example[key], bool if key == "mask" else np.float32)
    caption, caption_mask = self.caption_inputs(example)
    return {**features, "caption": caption, "caption_mask": caption_mask}

  def batch(self, examples: list[dict]) -> dict:
    """Source examples → one stacked batch of model features (jax arrays)."""
    return jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *map(self.preprocess, examples))

  def save_assets(self, workdir: pathlib.Path) -> None:
    self.caption_inputs.save(workdir)

  def load_assets(self, workdir: pathlib.Path) -> None:
    self.caption_inputs.load(workdir)
