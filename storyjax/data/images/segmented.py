"""Segmented images: the embedded dataset of SCAM's subject transfer (facts B.7–B.8), and real segmentation datasets.

`SegmentedSceneSource` draws a subject on a background with an exact label map over LABELS: a body (a rounded
rectangle) under a head (a disc), and each with probability ACCESSORY_PROBABILITY a hat on the head, a bag beside
the body and a belt across it. Every present region gets a colour (PALETTE) and a texture (TEXTURES) of its own,
touching regions always in different colours; the image is `render_regions` of that truth plus uniform integer
noise of at most NOISE_AMPLITUDE, so the expected image of any (label map, colours, textures), e.g. a subject's
regions moved onto another scene's map, is known exactly.

`SegmentationFolderSource` reads the common layout of CelebAMask-HQ (as processed by SEAN), ADE20K and iDesigner,
`<root>/<split>/images/<stem>.<jpg|png>` beside `<root>/<split>/labels/<stem>.png` (8-bit label ids), resized like
SCAM's loader (S:data/image_dataset.py): images bilinearly, labels with NEAREST. `write_segmentation_folder`
writes any source in that layout.
"""

import functools
import pathlib

import numpy as np
from PIL import Image

from storyjax.data.images.captioned import IMAGE_EXTENSIONS
from storyjax.data.images.shapes import shape_mask
from storyjax.errors import ConfigError, DataError

LABELS = ("background", "body", "head", "hat", "bag", "belt")
NUM_LABELS = len(LABELS)
# Pairs of labels whose regions can touch: their colours always differ. The layout keeps the others apart.
TOUCHING = (
  ("background", "body"),
  ("background", "head"),
  ("background", "hat"),
  ("background", "bag"),
  ("background", "belt"),
  ("body", "head"),
  ("body", "bag"),
  ("body", "belt"),
  ("head", "hat"),
  ("bag", "belt"),
)
# RGB, pairwise at least 97 apart, and at least 90 from any colour's shade; channels in [20, 250] so the noise never
# clips (a lit pixel stays <= 255, a shaded one >= 0).
PALETTE = {
  "red": (220, 40, 40),
  "orange": (250, 130, 20),
  "yellow": (235, 235, 60),
  "green": (40, 170, 50),
  "cyan": (40, 210, 230),
  "blue": (40, 70, 220),
  "magenta": (220, 50, 210),
  "white": (240, 240, 240),
}
PALETTE_RGB = np.array(list(PALETTE.values()), np.uint8)  # (8, 3)
SHADE_RGB = PALETTE_RGB // 2  # (8, 3): the darker half of every texture but "flat"
TEXTURES = ("flat", "horizontal_stripes", "vertical_stripes", "checker")
TEXTURE_PERIOD = 4  # pixels: 2 in the colour, then 2 in its shade, counted from the image's top-left corner
NOISE_AMPLITUDE = 5  # the noise is uniform over the integers in [-5, 5], per pixel and channel
ACCESSORY_PROBABILITY = 0.5  # of each of hat, bag and belt
SPLITS = ("train", "test")
for _table in (PALETTE_RGB, SHADE_RGB):
  _table.flags.writeable = False

# (TEXTURES, 4 phases) bool: whether a texture shows the shade at a pixel phase (_pixel_phases)
_PHASE_SHADED = np.array(
  [
    [False, False, False, False],  # flat
    [False, True, False, True],  # horizontal stripes: the shaded rows
    [False, False, True, True],  # vertical stripes: the shaded columns
    [False, True, True, False],  # checker: shaded where exactly one of row and column is
  ]
)
_PHASE_SHADED.flags.writeable = False
_TOUCHING_PAIRS = [sorted((LABELS.index(first), LABELS.index(second))) for first, second in TOUCHING]
# for each label, the labels before it (in LABELS order, the order colours are drawn in) that it may touch
_TOUCHING_EARLIER = tuple(
  tuple(earlier for earlier, later in _TOUCHING_PAIRS if later == label) for label in range(NUM_LABELS)
)
_LAYOUT = "<root>/<split>/images/<stem>.{" + ",".join(IMAGE_EXTENSIONS) + "} and <root>/<split>/labels/<stem>.png"


@functools.lru_cache(maxsize=16)
def _pixel_phases(image_size: int) -> np.ndarray:
  """(S, S) int, read-only: a pixel's phase in the textures, 1 in the shaded half-period of rows + 2 of columns."""
  shaded_half = np.arange(image_size) // (TEXTURE_PERIOD // 2) % 2
  phases = shaded_half[:, None] + 2 * shaded_half[None, :]
  phases.flags.writeable = False
  return phases


def render_regions(labels: np.ndarray, colour_ids: np.ndarray, texture_ids: np.ndarray) -> np.ndarray:
  """The noiseless image (S, S, 3) uint8 of a label map (S, S) whose label k has colour colour_ids[k] (a PALETTE
  index) in texture texture_ids[k] (a TEXTURES index); (NUM_LABELS,) ids, −1 for labels absent from the map."""
  labels = np.asarray(labels)
  colour_ids, texture_ids = np.asarray(colour_ids), np.asarray(texture_ids)
  unpainted = (np.bincount(labels.ravel(), minlength=NUM_LABELS) > 0) & ((colour_ids < 0) | (texture_ids < 0))
  if unpainted.any():
    names = [LABELS[label] for label in np.flatnonzero(unpainted)]
    raise DataError(f"labels {names} occur in the label map but have colour or texture id −1; give them ids")
  # (L, 4, 3): each label's RGB at each pixel phase, then one gather for the whole image
  region_rgb = np.where(
    _PHASE_SHADED[texture_ids][:, :, None], SHADE_RGB[colour_ids][:, None], PALETTE_RGB[colour_ids][:, None]
  )
  return np.take(region_rgb.reshape(-1, 3), 4 * labels + _pixel_phases(labels.shape[0]), axis=0)


def _box(size: int, top: float, bottom: float, left: float, right: float) -> np.ndarray:
  """(S, S) bool: the pixels whose centres lie in rows [top, bottom] and columns [left, right]."""
  centres = np.arange(size) + 0.5
  return ((centres >= top) & (centres <= bottom))[:, None] & ((centres >= left) & (centres <= right))[None, :]


def scene_labels(rng: np.random.Generator, image_size: int) -> np.ndarray:
  """A random subject's label map (S, S) int32 over LABELS; every drawn region keeps at least one pixel.

  In a subject of height H (hat included) from row `top`: a head of radius r centred 1.6·r below `top`, a body
  (superellipse of exponent 4) of half-height b = (H − 2.4·r) / 2 from 0.8·r below the head's centre, overlapping
  the head's bottom; a hat above 0.45·r over the head's centre, a bag against one side of the body from 0.1·b above
  its centre, a belt across the body 0.15·b below its centre. Lengths in pixels, each region at least one pixel
  wide where the layout could make it thinner; the subject keeps a 1-pixel margin of background.
  """
  size = image_size
  # one draw for the layout: height, body width, top, centre, hat, bag, belt, bag side
  height_draw, width_draw, top_draw, centre_draw, *accessory_draws, side_draw = rng.uniform(size=8)
  height = (0.55 + 0.3 * height_draw) * size
  head_radius = max(0.14 * height, 2.0)
  body_half_height = (height - 2.4 * head_radius) / 2
  body_half_width = max((0.5 + 0.3 * width_draw) * body_half_height, 1.0)
  bag_width = max(0.6 * body_half_width, 1.0)
  half_span = max(0.85 * body_half_width + bag_width, 1.3 * head_radius)
  top = 1.0 + top_draw * (size - 2.0 - height)
  centre_x = 1.0 + half_span + centre_draw * (size - 2.0 - 2.0 * half_span)
  has_hat, has_bag, has_belt = np.array(accessory_draws) < ACCESSORY_PROBABILITY
  bag_side = 1.0 if side_draw < 0.5 else -1.0  # right or left of the body
  head_y = top + 1.6 * head_radius
  body_y = head_y + 0.8 * head_radius + body_half_height
  centres = np.arange(size) + 0.5
  body = (np.abs(centres - body_y)[:, None] / body_half_height) ** 4 + (
    np.abs(centres - centre_x)[None, :] / body_half_width
  ) ** 4 <= 1.0
  labels = body.astype(np.int32)  # background 0, body 1
  if has_belt:
    belt_y, belt_half_width = body_y + 0.15 * body_half_height, max(0.1 * body_half_height, 0.5)
    labels[body & _box(size, belt_y - belt_half_width, belt_y + belt_half_width, 0.0, size)] = LABELS.index("belt")
  labels[shape_mask("circle", size, (head_y, centre_x), head_radius)] = LABELS.index("head")
  if has_hat:
    crown_half_width, brim_half_width = 0.75 * head_radius, 1.3 * head_radius
    crown = _box(
      size,
      head_y - 1.6 * head_radius,
      head_y - 0.5 * head_radius,
      centre_x - crown_half_width,
      centre_x + crown_half_width,
    )
    brim = _box(
      size,
      head_y - 0.75 * head_radius,
      head_y - 0.45 * head_radius,
      centre_x - brim_half_width,
      centre_x + brim_half_width,
    )
    labels[crown | brim] = LABELS.index("hat")
  if has_bag:
    bag_top = body_y - 0.1 * body_half_height
    inner = centre_x + bag_side * 0.85 * body_half_width  # inside the body's edge, so the bag touches it
    outer = inner + bag_side * bag_width
    bag = _box(size, bag_top, bag_top + max(0.6 * body_half_height, 1.0), min(inner, outer), max(inner, outer))
    labels[bag] = LABELS.index("bag")
  return labels


def scene_colours(rng: np.random.Generator, present: np.ndarray) -> np.ndarray:
  """(NUM_LABELS,) int32 PALETTE indices of the `present` (NUM_LABELS,) labels, uniform among the colours that the
  labels it may touch (TOUCHING) do not have yet; −1 for absent labels."""
  colour_ids = [-1] * NUM_LABELS
  for label, draw in zip(np.flatnonzero(present).tolist(), rng.uniform(size=NUM_LABELS).tolist()):
    taken = {colour_ids[other] for other in _TOUCHING_EARLIER[label]}
    choices = [colour for colour in range(len(PALETTE)) if colour not in taken]
    colour_ids[label] = choices[int(draw * len(choices))]
  return np.array(colour_ids, np.int32)


def generate_example(seed: int, split: str, index: int, image_size: int) -> dict:
  """→ {"image" (S, S, 3) uint8, "labels" (S, S) int32 in [0, NUM_LABELS), "colour_ids", "texture_ids" (NUM_LABELS,)
  int32 (−1 for absent labels), "present" (NUM_LABELS,) int32 (1 where the label occurs in the map)}."""
  rng = np.random.default_rng([seed, SPLITS.index(split), index])
  labels = scene_labels(rng, image_size)
  present = np.bincount(labels.ravel(), minlength=NUM_LABELS) > 0
  colour_ids = scene_colours(rng, present)
  texture_ids = np.where(present, rng.integers(len(TEXTURES), size=NUM_LABELS), -1).astype(np.int32)
  noise = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, size=(image_size, image_size, 3), dtype=np.int16)
  image = (render_regions(labels, colour_ids, texture_ids) + noise).astype(np.uint8)  # the palette never clips
  return {
    "image": image,
    "labels": labels,
    "colour_ids": colour_ids,
    "texture_ids": texture_ids,
    "present": present.astype(np.int32),
  }


class SegmentedSceneSource:
  """Grain random-access source of `num_examples` segmented scenes of split "train" or "test" (generate_example)."""

  def __init__(self, split: str, num_examples: int, image_size: int = 64, seed: int = 0):
    if split not in SPLITS:
      raise ConfigError(f"unknown split {split!r}; choose one of {SPLITS}")
    if num_examples < 1:
      raise ConfigError(f"num_examples={num_examples}: a source needs at least 1 example")
    if image_size < 16 or image_size % 16:
      raise ConfigError(f"image_size={image_size}: segmented scenes need a multiple of 16 (16, 32, 64, …)")
    self.split, self.num_examples, self.image_size, self.seed = split, num_examples, image_size, seed

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.num_examples:
      raise IndexError(f"index {index} out of range for {self.num_examples} examples")
    return generate_example(self.seed, self.split, index, self.image_size)


def _read_image(path: pathlib.Path, image_size: int, label_map: bool) -> np.ndarray:
  """(S, S, 3) uint8 RGB resized bilinearly, or for a label map (S, S) int32 ids resized with NEAREST."""
  try:
    with Image.open(path) as image:
      if label_map and image.mode not in ("L", "P"):
        raise DataError(
          f"{path} has mode {image.mode!r}; a label map is a single-channel 8-bit PNG (mode L or P) of label ids"
        )
      image = image if label_map else image.convert("RGB")
      if image.size != (image_size, image_size):
        resample = Image.Resampling.NEAREST if label_map else Image.Resampling.BILINEAR
        image = image.resize((image_size, image_size), resample)
      return np.asarray(image, np.int32 if label_map else np.uint8)
  except OSError as error:  # PIL's UnidentifiedImageError and truncated files are OSErrors
    raise DataError(f"{path} cannot be decoded ({error}); re-encode it or remove the pair") from error


class SegmentationFolderSource:
  """Grain random-access source over the (image, label map) pairs of `<root>/<split>`, matched by stem, sorted.

  Item: {"image": (S, S, 3) uint8, bilinearly resized to S = image_size, "labels": (S, S) int32 in
  [0, num_labels), the label PNG's ids minus `label_offset`, resized with NEAREST}. An id outside
  [label_offset, label_offset + num_labels) raises DataError when its item is read.
  """

  def __init__(self, root, split: str, image_size: int, num_labels: int, label_offset: int = 0):
    if image_size < 1:
      raise ConfigError(f"image_size={image_size} must be positive")
    if not 1 <= num_labels <= 256 - label_offset or label_offset < 0:
      raise ConfigError(
        f"num_labels={num_labels}, label_offset={label_offset}: 8-bit label ids need label_offset >= 0 and "
        "1 <= num_labels <= 256 - label_offset"
      )
    self.image_size, self.num_labels, self.label_offset = image_size, num_labels, label_offset
    directory = pathlib.Path(root) / split
    image_dir, label_dir = directory / "images", directory / "labels"
    for folder in (image_dir, label_dir):
      if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; a segmentation dataset is laid out as {_LAYOUT}")
    images = [path for path in image_dir.iterdir() if path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS]
    labels = {path.stem: path for path in label_dir.iterdir() if path.suffix.lower() == ".png"}
    image_of = {path.stem: path for path in images}
    if len(image_of) < len(images):
      duplicates = sorted({path.name for path in images if image_of[path.stem] != path})
      raise DataError(f"{image_dir} holds several images of one stem, e.g. {duplicates[:3]}; keep one per stem")
    if not image_of:
      raise DataError(f"{image_dir} holds no images; a segmentation dataset is laid out as {_LAYOUT}")
    unpaired = sorted(image_of.keys() ^ labels.keys())
    if unpaired:
      raise DataError(
        f"{len(unpaired)} stems in {directory} have an image without a label map or the reverse, e.g. "
        f"{unpaired[:3]}; every <stem> needs images/<stem>.<jpg|png> and labels/<stem>.png"
      )
    self.stems = sorted(image_of)
    self.image_paths = [image_of[stem] for stem in self.stems]
    self.label_paths = [labels[stem] for stem in self.stems]

  def __len__(self) -> int:
    return len(self.stems)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} pairs")
    labels = _read_image(self.label_paths[index], self.image_size, label_map=True) - self.label_offset
    outside = (labels < 0) | (labels >= self.num_labels)
    if outside.any():
      raise DataError(
        f"{self.label_paths[index]} holds label id {labels[outside][0] + self.label_offset}, outside "
        f"[{self.label_offset}, {self.label_offset + self.num_labels}) = label_offset + [0, num_labels); "
        "fix num_labels or label_offset"
      )
    return {"image": _read_image(self.image_paths[index], self.image_size, label_map=False), "labels": labels}


def write_segmentation_folder(source, root, split: str, count: int) -> pathlib.Path:
  """Writes items 0..count−1 of `source` ({"image": (S, S, 3) uint8, "labels": (S, S) ids in [0, 256)}) as
  `<root>/<split>/images/<index:06d>.png` and `labels/<index:06d>.png`; → `<root>/<split>`."""
  if not 1 <= count <= len(source):
    raise ConfigError(f"count={count}: the source has {len(source)} examples; write 1 to {len(source)}")
  directory = pathlib.Path(root) / split
  for folder in ("images", "labels"):
    (directory / folder).mkdir(parents=True, exist_ok=True)
  for index in range(count):
    example = source[index]
    image, labels = np.asarray(example["image"]), np.asarray(example["labels"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise DataError(
        f"item {index}: image is {image.dtype} {image.shape}; write_segmentation_folder needs (H, W, 3) uint8"
      )
    if labels.shape != image.shape[:2] or labels.min() < 0 or labels.max() > 255:
      raise DataError(
        f"item {index}: labels of shape {labels.shape} in [{labels.min()}, {labels.max()}]; a label PNG holds "
        f"{image.shape[:2]} ids in [0, 256)"
      )
    Image.fromarray(image).save(directory / "images" / f"{index:06d}.png")
    Image.fromarray(labels.astype(np.uint8)).save(directory / "labels" / f"{index:06d}.png")
  return directory
