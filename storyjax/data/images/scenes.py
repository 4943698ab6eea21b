"""Procedural scenes of 1–3 coloured shapes in the image's quadrants, captioned with a known coherence.

The embedded dataset of Coherence-Aware Diffusion (CAD, thesis §3.1), which trains on image–caption pairs that
each carry a coherence score c ∈ [0, 1] (how well the caption matches the image; CAD uses a CLIP score). Here c
is known by construction. An image has one object in each of 1..max_objects (at most 3) of the four quadrant
SLOTS: a shape of storyjax/data/images/shapes.py with a colour, a size (SIZES) and a jittered position inside its
quadrant, on a dark noisy background. Its caption lists the objects in slot order from one of TEMPLATES, e.g.
"a large red circle at the top left and a small blue ring at the bottom right"; every caption word is in
SCENE_VOCABULARY.

A fraction `corrupt_fraction` of captions is corrupted. The caption of n objects makes 4·n attribute claims
(each object's colour, shape, size and position); k of them, k uniform in 1..max_wrong_claims(n), are made wrong:
another colour, shape or size, or for a position another slot that is empty in the image and in the caption
(moved objects keep their slot order, so the i-th slot the caption wrongly claims, in slot order, describes the
i-th image object the caption leaves out). coherence = 1 − k / (4·n), the fraction of claims still true; 1 for
a clean caption.

Item i of (seed, split) comes from two generators of its own: one for the layout (objects, caption, corruption;
`scene_layout`, cheap, so the coherence of a whole split is known without rendering) and one for the pixel
noise. The truth is drawn before the corruption, so an image does not depend on `corrupt_fraction`.
"""

import numpy as np

from storyjax.data.images.shapes import COLOURS, SHAPES, shape_mask

SLOTS = ("top left", "top right", "bottom left", "bottom right")  # slot = 2·row + column of the quadrant
SIZES = ("small", "large")
# Radius ranges in quadrant half-widths (image_size / 4): both fit their quadrant, leaving room to jitter.
SIZE_RADII = {"small": (0.45, 0.6), "large": (0.75, 0.95)}
MAX_OBJECTS = 3  # objects per scene at most (max_objects=1 gives the one-object scenes of class conditioning)
TEMPLATES = ("{objects}", "there is {objects}", "a picture of {objects}")
CLAIMS_PER_OBJECT = ("colour", "shape", "size", "position")
SCENE_VOCABULARY = tuple(
  sorted(
    {",", "a", "and", "at", "the"}
    | {word for template in TEMPLATES for word in template.format(objects="").split()}
    | {word for slot in SLOTS for word in slot.split()}
    | set(SIZES)
    | set(COLOURS)
    | set(SHAPES)
  )
)
PER_SLOT_KEYS = ("present", "colour", "shape", "size")  # the image's truth; the caption's claims add "caption_"
_SPLIT_OFFSET = {"train": 0, "test": 1}
_LAYOUT_STREAM, _NOISE_STREAM = 0, 1


def max_wrong_claims(num_objects: int) -> int:
  """Most claims a caption of `num_objects` objects can get wrong: all colours, shapes and sizes, and one
  position per slot empty in the image (so 4·n for n = 1, 2 and 10 for n = 3)."""
  return 3 * num_objects + min(num_objects, len(SLOTS) - num_objects)


def caption_text(present, colour, shape, size, template: int) -> str:
  """The caption of objects at the `present` slots (4,) with colour, shape, size indices (4,), in slot order."""
  phrases = [
    f"a {SIZES[size[slot]]} {list(COLOURS)[colour[slot]]} {SHAPES[shape[slot]]} at the {SLOTS[slot]}"
    for slot in np.flatnonzero(present)
  ]
  objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
  return TEMPLATES[template].format(objects=objects)


def _corrupted_claims(rng: np.random.Generator, truth: dict) -> tuple[dict, int]:
  """(per-slot claims with k wrong attribute claims, k); see the module docstring."""
  object_slots = np.flatnonzero(truth["present"])
  num_objects = len(object_slots)
  num_wrong = int(rng.integers(1, max_wrong_claims(num_objects) + 1))
  # The wrong claims: the first num_wrong (object, attribute) pairs in a random order, skipping position claims
  # once every empty slot has received a moved object.
  wrong, num_moved = [], 0
  for claim in rng.permutation(len(CLAIMS_PER_OBJECT) * num_objects):
    object_index, attribute = divmod(int(claim), len(CLAIMS_PER_OBJECT))
    if CLAIMS_PER_OBJECT[attribute] == "position":
      if num_moved == len(SLOTS) - num_objects:
        continue
      num_moved += 1
    wrong.append((object_index, CLAIMS_PER_OBJECT[attribute]))
    if len(wrong) == num_wrong:
      break
  values = {key: truth[key][object_slots].copy() for key in ("colour", "shape", "size")}
  num_values = {"colour": len(COLOURS), "shape": len(SHAPES), "size": len(SIZES)}
  moved = []
  for object_index, attribute in wrong:
    if attribute == "position":
      moved.append(object_index)
    else:  # another value, uniformly
      values[attribute][object_index] += rng.integers(1, num_values[attribute])
      values[attribute][object_index] %= num_values[attribute]
  claimed_slots = object_slots.copy()
  empty_slots = np.flatnonzero(~truth["present"])
  claimed_slots[sorted(moved)] = np.sort(rng.choice(empty_slots, len(moved), replace=False))
  claims = {f"caption_{key}": np.zeros(len(SLOTS), np.int32) for key in ("colour", "shape", "size")}
  claims["caption_present"] = np.zeros(len(SLOTS), bool)
  claims["caption_present"][claimed_slots] = True
  for key, value in values.items():
    claims[f"caption_{key}"][claimed_slots] = value
  return claims, num_wrong


def scene_layout(seed: int, split: str, index: int, corrupt_fraction: float, max_objects: int = MAX_OBJECTS) -> dict:
  """Everything about item `index` but its pixels: the image's truth, the caption's claims, the captions.

  → {"present" (4,) bool, "colour", "shape", "size" (4,) int32 (0 where empty), the same four keys prefixed
  "caption_" for the caption's claims, "offset" (4, 2) float64 (row, column) of each object's centre from its
  quadrant's centre and "radius" (4,) float64, both in quadrant half-widths, "caption", "true_caption" str,
  "coherence" float32, "corrupted" bool}.
  """
  rng = np.random.default_rng([seed, _SPLIT_OFFSET[split], index, _LAYOUT_STREAM])
  num_objects = int(rng.integers(1, max_objects + 1))
  truth = {"present": np.zeros(len(SLOTS), bool)}
  truth["present"][rng.choice(len(SLOTS), num_objects, replace=False)] = True
  for key, num_values in (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("size", len(SIZES))):
    truth[key] = np.where(truth["present"], rng.integers(num_values, size=len(SLOTS)), 0).astype(np.int32)
  radius = np.zeros(len(SLOTS))
  for slot in np.flatnonzero(truth["present"]):
    radius[slot] = rng.uniform(*SIZE_RADII[SIZES[truth["size"][slot]]])
  offset = rng.uniform(-1.0, 1.0, size=(len(SLOTS), 2)) * (1.0 - radius)[:, None] * truth["present"][:, None]
  template = int(rng.integers(len(TEMPLATES)))
  true_caption = caption_text(truth["present"], truth["colour"], truth["shape"], truth["size"], template)
  corrupted = bool(rng.uniform() < corrupt_fraction)
  if corrupted:
    claims, num_wrong = _corrupted_claims(rng, truth)
  else:
    claims, num_wrong = {f"caption_{key}": truth[key].copy() for key in PER_SLOT_KEYS}, 0
  caption = caption_text(
    claims["caption_present"], claims["caption_colour"], claims["caption_shape"], claims["caption_size"], template
  )
  return {
    **truth,
    **claims,
    "offset": offset,
    "radius": radius,
    "caption": caption,
    "true_caption": true_caption,
    "coherence": np.float32(1.0 - num_wrong / (len(CLAIMS_PER_OBJECT) * num_objects)),
    "corrupted": np.bool_(corrupted),
  }


def render_scene(layout: dict, image_size: int, rng: np.random.Generator) -> np.ndarray:
  """The image (S, S, 3) float32 in [-1, 1] of a `scene_layout`, background noise from `rng`; S is even."""
  quadrant_size = image_size // 2
  half_width = quadrant_size / 2
  image = rng.uniform(0.0, 0.3, size=(image_size, image_size, 3))
  for slot in np.flatnonzero(layout["present"]):
    row, column = divmod(int(slot), 2)
    centre = tuple(half_width + layout["offset"][slot] * half_width)  # in the quadrant, which holds the object
    mask = shape_mask(SHAPES[layout["shape"][slot]], quadrant_size, centre, layout["radius"][slot] * half_width)
    quadrant = image[
      row * quadrant_size : (row + 1) * quadrant_size, column * quadrant_size : (column + 1) * quadrant_size
    ]
    quadrant[mask] = list(COLOURS.values())[layout["colour"][slot]]
  return (2.0 * image - 1.0).astype(np.float32)


def generate_example(
  seed: int, split: str, index: int, image_size: int, corrupt_fraction: float, max_objects: int = MAX_OBJECTS
) -> dict:
  """→ {"image" (S, S, 3) float32 in [-1, 1], and scene_layout's keys but "offset" and "radius"}."""
  layout = scene_layout(seed, split, index, corrupt_fraction, max_objects)
  noise_rng = np.random.default_rng([seed, _SPLIT_OFFSET[split], index, _NOISE_STREAM])
  image = render_scene(layout, image_size, noise_rng)
  return {"image": image, **{key: value for key, value in layout.items() if key not in ("offset", "radius")}}


class SceneSource:
  """Grain random-access source over items 0..size−1 of split "train" or "test".

  min_coherence > 0 keeps only the items whose coherence is at least min_coherence (CAD's "filtered" baseline):
  index i is then the i-th kept item, and len() counts the kept ones.
  """

  def __init__(
    self,
    split: str,
    size: int,
    image_size: int = 32,
    seed: int = 0,
    corrupt_fraction: float = 0.3,
    min_coherence: float = 0.0,
    max_objects: int = MAX_OBJECTS,
  ):
    if split not in _SPLIT_OFFSET:
      raise ValueError(f"unknown split {split!r}; choose one of {tuple(_SPLIT_OFFSET)}")
    if size < 1:
      raise ValueError(f"size={size}: a source needs at least 1 example")
    if image_size < 16 or image_size % 2:
      raise ValueError(f"image_size={image_size}: four quadrants of shapes need an even size of at least 16")
    if not 0.0 <= corrupt_fraction <= 1.0:
      raise ValueError(f"corrupt_fraction={corrupt_fraction} is not a fraction; choose it in [0, 1]")
    if not 1 <= max_objects <= MAX_OBJECTS:
      raise ValueError(f"max_objects={max_objects}; a scene holds 1 to {MAX_OBJECTS} objects")
    if not 0.0 <= min_coherence <= 1.0:
      raise ValueError(f"min_coherence={min_coherence} is not a coherence; choose it in [0, 1] (0 keeps all)")
    self.split, self.image_size, self.seed = split, image_size, seed
    self.corrupt_fraction, self.max_objects = corrupt_fraction, max_objects
    self.items = range(size)
    if min_coherence > 0.0:
      # Compared in float32, the coherence's own precision, so that e.g. min_coherence=5/6 keeps coherence 5/6.
      self.items = np.flatnonzero(self._coherence_of(range(size)) >= np.float32(min_coherence))
      if not len(self.items):
        raise ValueError(f"no {split} example of {size} has coherence >= {min_coherence}; lower min_coherence")

  def _coherence_of(self, items) -> np.ndarray:
    return np.array(
      [
        scene_layout(self.seed, self.split, item, self.corrupt_fraction, self.max_objects)["coherence"]
        for item in items
      ],
      np.float32,
    )

  def coherences(self) -> np.ndarray:
    """(len(self),) float32: the coherence of every example, without rendering (e.g. for coherence_bin_edges)."""
    return self._coherence_of(self.items)

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self.items):
      raise IndexError(f"index {index} out of range for {len(self.items)} examples")
    return generate_example(
      self.seed, self.split, int(self.items[index]), self.image_size, self.corrupt_fraction, self.max_objects
    )
