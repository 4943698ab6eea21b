"""One LAEO-Net++ example from a window of frames and a pair's head boxes (facts laeo-scam A.1, A.2), shared by the
UCO-LAEO and AVA-LAEO loaders; every crop and map goes through head_map.py.

An example is {"head_left", "head_right": (T, 64, 64, 3) float32 crops in [0, 1], "head_map": (T, 64, 64, 3)
float32, "label": int32 0/1}. Which head is left is decided once, at the middle frame T // 2 (the smaller x1 of the
squared boxes, `left_first`), and kept for the whole window, so each input follows one person.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, UnidentifiedImageError

from storyjax.data.laeo.head_map import CROP_SIZE, crop_head, draw_head_map, left_first
from storyjax.errors import ConfigError, DataError

# "bgr": OpenCV's order, the one the authors' crops and released weights use; "rgb": the frames as PIL reads them.
CHANNEL_ORDERS = ("bgr", "rgb")
SMOOTHING_WIDTH = 5  # frames of the flat moving average over box coordinates (`mj_smoothBBannotations`, A.1)


def check_channel_order(channel_order: str) -> str:
  if channel_order not in CHANNEL_ORDERS:
    raise ConfigError(
      f"unknown channel_order {channel_order!r}; choose one of {CHANNEL_ORDERS} (bgr matches the released weights)"
    )
  return channel_order


def map_mean_window(map_mean, window: int) -> np.ndarray | None:
  """A released mean map → (window, 64, 64, 3) float32 (None stays None).

  Accepts (window·64, 64, 3), window stacked per-frame means (LAEO-Net++'s meanmaps10.npy), or one (64, 64, 3) mean
  for every frame (LAEO-Net's meanmap.npy).
  """
  if map_mean is None:
    return None
  map_mean = np.asarray(map_mean, np.float32)
  if map_mean.shape == (CROP_SIZE, CROP_SIZE, 3):
    return np.broadcast_to(map_mean, (window, CROP_SIZE, CROP_SIZE, 3))
  if map_mean.shape == (window * CROP_SIZE, CROP_SIZE, 3):
    return map_mean.reshape(window, CROP_SIZE, CROP_SIZE, 3)
  raise DataError(
    f"map_mean has shape {map_mean.shape}; pass ({window * CROP_SIZE}, {CROP_SIZE}, 3) (one mean per frame of the "
    f"window={window}, as meanmaps10.npy for window=10) or ({CROP_SIZE}, {CROP_SIZE}, 3) (meanmap.npy)"
  )


def smooth_boxes(boxes, width: int = SMOOTHING_WIDTH) -> np.ndarray:
  """(T, 4) box track → (T, 4) int64: each coordinate averaged over `width` frames (reflected at the ends) and
  truncated to an integer, as `mj_smoothBBannotations` (which stores int16); unchanged when T < width."""
  boxes = np.asarray(boxes, np.float64)
  if len(boxes) < width:
    return np.trunc(boxes).astype(np.int64)
  half = width // 2
  padded = np.pad(boxes, ((half, half), (0, 0)), mode="reflect")
  return np.trunc(sliding_window_view(padded, width, axis=0).mean(-1)).astype(np.int64)


def read_frame(path) -> np.ndarray:
  """A frame image → (H, W, 3) uint8 RGB."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert("RGB"))
  except FileNotFoundError as error:
    raise DataError(f"frame {path} does not exist; extract the dataset's frames into that layout") from error
  except (UnidentifiedImageError, OSError) as error:
    raise DataError(f"frame {path} is not a readable image ({error}); re-extract it") from error


def pair_example(
  frames, crop_boxes, map_boxes, other_boxes, label: int, map_mean=None, channel_order: str = "bgr"
) -> dict:
  """A window of T frames and the pair's boxes → the example dict described in the module docstring.

  frames: T (H, W, 3) uint8 RGB frames; crop_boxes (T, 2, 4): the two heads' boxes the crops are taken from;
  map_boxes (T, 2, 4): the same heads' boxes for the head map; other_boxes: T (K_t, 4) boxes of every other head
  (map channel 2). map_mean: None or (T, 64, 64, 3) (`map_mean_window`); the map is then (M − mean)/255, else M/255.
  channel_order "bgr" reverses the crops' channels to OpenCV's order.
  """
  crop_boxes, map_boxes = np.asarray(crop_boxes), np.asarray(map_boxes)
  middle = len(frames) // 2
  image_size = frames[middle].shape[:2]
  order = [0, 1] if left_first(*crop_boxes[middle], image_size) else [1, 0]
  crop_boxes, map_boxes = crop_boxes[:, order], map_boxes[:, order]
  if check_channel_order(channel_order) == "bgr":
    frames = [frame[..., ::-1] for frame in frames]
  head_left = np.stack([crop_head(frame, boxes[0]) for frame, boxes in zip(frames, crop_boxes)])
  head_right = np.stack([crop_head(frame, boxes[1]) for frame, boxes in zip(frames, crop_boxes)])
  head_map = np.stack(
    [
      draw_head_map(boxes, others, frame.shape[:2])
      for frame, boxes, others in zip(frames, map_boxes, other_boxes, strict=True)
    ]
  )
  if map_mean is not None:
    head_map = head_map - map_mean
  return {
    "head_left": head_left.astype(np.float32),
    "head_right": head_right.astype(np.float32),
    "head_map": (head_map / 255.0).astype(np.float32),
    "label": np.int32(label),
  }
