"""LAEO-Net++'s inputs from head boxes: square head crops and the head map (facts laeo-scam A.1, A.2).

Boxes are (x1, y1, x2, y2) pixel coordinates, inclusive as in the authors' code (width = x2 − x1 + 1). Every
function here is plain numpy so the procedural scenes and the real-data loaders build identical inputs.
"""

import functools

import numpy as np
import scipy.ndimage

from storyjax.errors import DataError

CROP_SIZE = 64
MAP_MARGIN = 20  # pixels added left and right of the boxes before the map is squared (A.2 step 6)


def _checked_boxes(boxes, name: str) -> np.ndarray:
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  if not np.all(np.isfinite(boxes)) or np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1]):
    raise DataError(f"{name}: boxes must be finite (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1, got {boxes.tolist()}")
  return boxes


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """(H, W, C) → (h, w, C) float32, bilinear with half-pixel centres and edge clamping, no antialiasing
  (OpenCV's INTER_LINEAR, which the authors use for crops and maps)."""
  image = np.asarray(image, np.float32)
  if image.ndim != 3 or min(image.shape[:2]) < 1:
    raise DataError(f"resize_bilinear expects a non-empty (H, W, C) image, got shape {image.shape}")
  rows = _interpolation(image.shape[0], size[0])
  cols = _interpolation(image.shape[1], size[1])
  (top, bottom, row_weight), (left, right, col_weight) = rows, cols
  upper = image[top] * (1 - row_weight)[:, None, None] + image[bottom] * row_weight[:, None, None]
  return upper[:, left] * (1 - col_weight)[None, :, None] + upper[:, right] * col_weight[None, :, None]


def _interpolation(source: int, target: int):
  """Source indices (low, high) and the weight of `high` for each of `target` output positions."""
  position = (np.arange(target) + 0.5) * (source / target) - 0.5
  position = np.clip(position, 0, source - 1)
  low = np.floor(position).astype(np.int64)
  high = np.minimum(low + 1, source - 1)
  return low, high, (position - low).astype(np.float32)


def square_box(box, image_size: tuple[int, int], enlarge: float = 0.05) -> np.ndarray:
  """(4,) box → the square box of side max(w, h)·(1 + enlarge) with the same centre, clipped to the image
  (H, W) (so it may be non-square at a border), as integer pixel coordinates (A.1, `mj_detBB2squared`)."""
  (x1, y1, x2, y2) = _checked_boxes(box, "square_box")[0]
  side = max(x2 - x1 + 1, y2 - y1 + 1) * (1 + enlarge)
  centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
  height, width = image_size
  left, top = max(0, round(centre_x - side / 2)), max(0, round(centre_y - side / 2))
  right, bottom = min(width - 1, round(centre_x + side / 2)), min(height - 1, round(centre_y + side / 2))
  if right < left or bottom < top:
    raise DataError(f"head box {box} lies outside the {width}×{height} image")
  return np.array([left, top, right, bottom], np.int64)


def crop_head(frame: np.ndarray, box, size: int = CROP_SIZE) -> np.ndarray:
  """frame (H, W, 3) with values in [0, 255] → the squared head crop (size, size, 3) float32 in [0, 1]."""
  frame = np.asarray(frame)
  if frame.ndim != 3 or frame.shape[-1] != 3:
    raise DataError(f"crop_head expects an (H, W, 3) frame, got shape {frame.shape}")
  left, top, right, bottom = square_box(box, frame.shape[:2])
  return resize_bilinear(frame[top : bottom + 1, left : right + 1], (size, size)) / 255.0


def left_first(box_a, box_b, image_size: tuple[int, int]) -> bool:
  """True when box_a is the pair's left head in an (H, W) image: the smaller x1 of the two boxes once squared by
  `square_box` (A.1 "sampleL"); ties → a."""
  return square_box(box_a, image_size)[0] <= square_box(box_b, image_size)[0]


@functools.lru_cache(maxsize=512)
def head_kernel(size: int) -> np.ndarray:
  """(size, size) float32 in [0, 255]: a centred delta blurred with σ = round(size/4), rescaled by
  (K − min)/max·255 as `mj_drawHeadMapFromBBs` does (A.2 step 3)."""
  delta = np.zeros((size, size), np.float64)
  delta[size // 2, size // 2] = 1.0
  kernel = scipy.ndimage.gaussian_filter(delta, sigma=round(size / 4))
  kernel = (kernel - kernel.min()) / kernel.max() * 255.0
  kernel.setflags(write=False)
  return kernel.astype(np.float32)


def _paste(canvas: np.ndarray, channel: int, box: np.ndarray) -> None:
  """Overwrites canvas[..., channel] with the head kernel of `box`, top-left at (x1, y1), clipped (A.2 step 4)."""
  x1, y1, x2, y2 = (round(float(value)) for value in box)
  size = int(max(3, x2 - x1 + 1, y2 - y1 + 1))
  kernel = head_kernel(size)
  height, width = canvas.shape[:2]
  top, left = max(y1, 0), max(x1, 0)
  bottom, right = min(y1 + size, height), min(x1 + size, width)
  if bottom <= top or right <= left:
    return
  canvas[top:bottom, left:right, channel] = kernel[top - y1 : bottom - y1, left - x1 : right - x1]


def draw_head_map(
  pair_boxes, other_boxes, image_size: tuple[int, int], size: int = CROP_SIZE, margin: int = MAP_MARGIN
) -> np.ndarray:
  """The head map of one frame (A.2) → (size, size, 3) float32 in [0, 255].

  pair_boxes (2, 4): the pair, left head first (`left_first`); other_boxes (K, 4): every other head in the frame.
  Channel 0 = the left head, 1 = the right head, 2 = all other heads (the third person who may cut the gaze ray),
  each head a Gaussian as large as its box at the frame resolution (H, W) = image_size; pasting overwrites.
  Then the columns [min x − margin, max x + margin] over all boxes are kept (full height), zero-padded to a
  centred square and resized to (size, size).
  """
  pair_boxes = _checked_boxes(pair_boxes, "draw_head_map pair_boxes")
  other_boxes = _checked_boxes(other_boxes, "draw_head_map other_boxes")
  if len(pair_boxes) != 2:
    raise DataError(f"draw_head_map needs exactly 2 pair boxes, got {len(pair_boxes)}")
  height, width = image_size
  canvas = np.zeros((height, width, 3), np.float32)
  for box in other_boxes:
    _paste(canvas, 2, box)
  for channel, box in enumerate(pair_boxes):
    _paste(canvas, channel, box)
  every_box = np.concatenate([pair_boxes, other_boxes])
  left = int(max(0, np.floor(every_box[:, 0].min()) - margin))
  right = int(min(width, np.ceil(every_box[:, 2].max()) + 1 + margin))
  cropped = canvas[:, left:right]
  side = max(cropped.shape[:2])
  square = np.zeros((side, side, 3), np.float32)
  top_pad, left_pad = (side - cropped.shape[0]) // 2, (side - cropped.shape[1]) // 2
  square[top_pad : top_pad + cropped.shape[0], left_pad : left_pad + cropped.shape[1]] = cropped
  return resize_bilinear(square, (size, size))
