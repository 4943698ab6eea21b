"""Procedural images of one coloured shape each: the embedded dataset of the `shapes` example task.

Item i of (seed, split) is drawn from its own generator, so any index is reproducible on its own: a shape class
(circle, square, triangle, ring) at a random position, size and colour on a noisy background. The label is the
shape class, so a classifier's accuracy on the test split says whether it learned the shapes.
"""

import numpy as np

SHAPES = ("circle", "square", "triangle", "ring")
COLOURS = {"red": (1.0, 0.2, 0.2), "green": (0.2, 0.9, 0.3), "blue": (0.25, 0.35, 1.0), "yellow": (1.0, 0.9, 0.2)}
_SPLIT_OFFSET = {"train": 0, "test": 1}


def shape_mask(shape: str, image_size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
  """(S, S) bool: pixels inside `shape` centred at (row, column) `centre` with half-size `radius` (pixels)."""
  rows, columns = np.mgrid[:image_size, :image_size] + 0.5
  dy, dx = rows - centre[0], columns - centre[1]
  if shape == "circle":
    return dy**2 + dx**2 <= radius**2
  if shape == "square":
    return (np.abs(dy) <= 0.8 * radius) & (np.abs(dx) <= 0.8 * radius)
  if shape == "triangle":  # apex up: inside where |dx| grows with the distance below the apex
    return (dy <= 0.8 * radius) & (np.abs(dx) <= 0.5 * (dy + radius))
  if shape == "ring":
    distance = np.sqrt(dy**2 + dx**2)
    return (distance <= radius) & (distance >= 0.55 * radius)
  raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def generate_example(seed: int, split: str, index: int, image_size: int) -> dict:
  """→ {"image": (S, S, 3) float32 in [-1, 1], "label": int32 shape class, "caption": e.g. "a red ring"}."""
  rng = np.random.default_rng([seed, _SPLIT_OFFSET[split], index])
  label = int(rng.integers(len(SHAPES)))
  colour_name = list(COLOURS)[rng.integers(len(COLOURS))]
  radius = rng.uniform(0.22, 0.35) * image_size
  centre = tuple(rng.uniform(radius, image_size - radius, size=2))
  image = rng.uniform(0.0, 0.3, size=(image_size, image_size, 3))
  image[shape_mask(SHAPES[label], image_size, centre, radius)] = COLOURS[colour_name]
  return {
    "image": (2.0 * image - 1.0).astype(np.float32),
    "label": np.int32(label),
    "caption": f"a {colour_name} {SHAPES[label]}",
  }


class ShapesSource:
  """Grain random-access source of `size` examples of split "train" or "test"."""

  def __init__(self, split: str, size: int, image_size: int, seed: int = 0):
    if split not in _SPLIT_OFFSET:
      raise ValueError(f"unknown split {split!r}; choose one of {tuple(_SPLIT_OFFSET)}")
    if image_size < 8:
      raise ValueError(f"image_size={image_size} is too small to draw a shape (at least 8)")
    self.split, self.size, self.image_size, self.seed = split, size, image_size, seed

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.size:
      raise IndexError(f"index {index} out of range for {self.size} examples")
    return generate_example(self.seed, self.split, index, self.image_size)
