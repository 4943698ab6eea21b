"""Segmented scenes (SCAM's embedded data) and the segmentation-folder loader.

The scenes against a plain per-pixel reference of their truth (colours, textures, noise), their label statistics
and touching regions recounted from the label maps; the loader against what the writer wrote, PIL-independent
nearest-neighbour references for resizing, and its errors.
"""

import pickle

import numpy as np
from PIL import Image
import pytest

from storyjax.data.images.segmented import (
  ACCESSORY_PROBABILITY,
  LABELS,
  NOISE_AMPLITUDE,
  NUM_LABELS,
  PALETTE,
  TEXTURE_PERIOD,
  TEXTURES,
  TOUCHING,
  SegmentationFolderSource,
  SegmentedSceneSource,
  render_regions,
  write_segmentation_folder,
)
from storyjax.errors import ConfigError, DataError

KEYS = {"image": np.uint8, "labels": np.int32, "colour_ids": np.int32, "texture_ids": np.int32, "present": np.int32}


def reference_image(example: dict) -> np.ndarray:
  """(S, S, 3) int: the noiseless image, pixel by pixel from the module's documented rule."""
  size = example["labels"].shape[0]
  rows, columns = np.mgrid[:size, :size]
  shaded_row = rows % TEXTURE_PERIOD >= TEXTURE_PERIOD // 2
  shaded_column = columns % TEXTURE_PERIOD >= TEXTURE_PERIOD // 2
  shaded_by_texture = {
    "flat": np.zeros_like(shaded_row),
    "horizontal_stripes": shaded_row,
    "vertical_stripes": shaded_column,
    "checker": shaded_row != shaded_column,
  }
  expected = np.full((size, size, 3), -1000)
  for label in np.unique(example["labels"]):
    region = example["labels"] == label
    colour = np.array(list(PALETTE.values())[example["colour_ids"][label]])
    shaded = shaded_by_texture[TEXTURES[example["texture_ids"][label]]]
    expected[region & ~shaded] = colour
    expected[region & shaded] = colour // 2
  return expected


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
  """The (smaller, larger) label pairs of 4-neighbouring pixels."""
  pairs = np.concatenate(
    [
      np.stack([labels[1:].ravel(), labels[:-1].ravel()], 1),
      np.stack([labels[:, 1:].ravel(), labels[:, :-1].ravel()], 1),
    ]
  )
  pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1)
  return set(map(tuple, np.unique(pairs, axis=0).tolist()))


def test_examples_are_typed_deterministic_and_differ_by_index_split_and_seed():
  for image_size in (16, 48, 64, 128):
    example = SegmentedSceneSource("train", 3, image_size)[2]
    assert set(example) == set(KEYS)
    for key, dtype in KEYS.items():
      assert example[key].dtype == dtype, key
    assert example["image"].shape == (image_size, image_size, 3)
    assert example["labels"].shape == (image_size, image_size)
    assert example["labels"].min() >= 0 and example["labels"].max() < NUM_LABELS
  source = SegmentedSceneSource("train", 10, 32, seed=4)
  for key, value in source[3].items():
    np.testing.assert_array_equal(value, SegmentedSceneSource("train", 20, 32, seed=4)[3][key])
  for other in (source[4], SegmentedSceneSource("test", 10, 32, seed=4)[3], SegmentedSceneSource("train", 10, 32)[3]):
    assert not np.array_equal(source[3]["labels"], other["labels"])
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[5]["image"], source[5]["image"])
  with pytest.raises(IndexError):
    source[10]
  for split, num_examples, image_size in (("val", 4, 32), ("train", 0, 32), ("train", 4, 24), ("train", 4, 8)):
    with pytest.raises(ConfigError):
      SegmentedSceneSource(split, num_examples, image_size)


def test_regions_are_exactly_their_colour_and_texture_plus_mild_noise():
  examples = [SegmentedSceneSource("train", 60, 64, seed=1)[index] for index in range(60)]
  residuals = []
  for example in examples:
    expected = reference_image(example)
    np.testing.assert_array_equal(
      render_regions(example["labels"], example["colour_ids"], example["texture_ids"]), expected
    )
    residuals.append(example["image"].astype(int) - expected)
  residuals = np.concatenate([residual.ravel() for residual in residuals])
  # uniform over the integers in [-A, A]: every value about equally often, mean 0
  assert residuals.min() == -NOISE_AMPLITUDE and residuals.max() == NOISE_AMPLITUDE
  frequencies = np.bincount(residuals + NOISE_AMPLITUDE) / len(residuals)
  np.testing.assert_allclose(frequencies, 1 / (2 * NOISE_AMPLITUDE + 1), atol=0.003)
  assert abs(residuals.mean()) < 0.02

  # The truth as a model sees it: the mean colour of a flat region, and the period of stripes in row/column means.
  checked = {"flat": 0, "horizontal_stripes": 0, "vertical_stripes": 0}
  for example in examples:
    for label in np.flatnonzero(example["present"]):
      region = example["labels"] == label
      texture = TEXTURES[example["texture_ids"][label]]
      colour = np.array(list(PALETTE.values())[example["colour_ids"][label]])
      if texture not in checked or region.sum() < 200:
        continue
      checked[texture] += 1
      if texture == "flat":  # 200+ pixels of noise of std 3.2: the mean is within 1 (4.5 σ)
        np.testing.assert_allclose(example["image"][region].mean(0), colour, atol=1.0)
        continue
      axis = 1 if texture == "horizontal_stripes" else 0  # average along the stripes
      brightness = example["image"].astype(float).sum(-1)
      counts = region.sum(axis)
      means = (brightness * region).sum(axis)[counts >= 4] / counts[counts >= 4]
      positions = np.flatnonzero(counts >= 4)
      lit = positions % TEXTURE_PERIOD < TEXTURE_PERIOD // 2
      threshold = 0.75 * colour.sum()  # halfway between the colour (sum) and its shade (half the sum)
      np.testing.assert_array_equal(means > threshold, lit, err_msg=f"{texture} has no period {TEXTURE_PERIOD}")
  assert min(checked.values()) >= 10, checked


def test_labels_present_and_ids_agree_with_the_label_maps():
  examples = [SegmentedSceneSource("test", 1000, 16, seed=2)[index] for index in range(1000)]
  present = np.array([example["present"] for example in examples])
  for example in examples:
    counts = np.bincount(example["labels"].ravel(), minlength=NUM_LABELS)
    np.testing.assert_array_equal(example["present"], counts > 0)
    for key, num_ids in (("colour_ids", len(PALETTE)), ("texture_ids", len(TEXTURES))):
      ids = example[key]
      np.testing.assert_array_equal(ids[example["present"] == 0], -1)
      assert ids[example["present"] == 1].min() >= 0 and ids.max() < num_ids
  assert present[:, : LABELS.index("head") + 1].all()  # background, body and head in every scene
  assert present.sum(1).min() == 3 and present.sum(1).max() == 6
  # each accessory independently with probability 1/2: 1000 draws are within 0.05 (3.2 σ)
  np.testing.assert_allclose(present[:, 3:].mean(0), ACCESSORY_PROBABILITY, atol=0.05)
  all_accessories = present[:, 3:].all(1).mean()
  np.testing.assert_allclose(all_accessories, ACCESSORY_PROBABILITY**3, atol=0.035)
  textures = np.concatenate([example["texture_ids"][example["present"] == 1] for example in examples])
  np.testing.assert_allclose(np.bincount(textures) / len(textures), 1 / len(TEXTURES), atol=0.02)


def test_touching_regions_have_different_colours():
  allowed_pairs = {tuple(sorted((LABELS.index(first), LABELS.index(second)))) for first, second in TOUCHING}
  seen_pairs, shared_colours = set(), 0
  for image_size, count in ((16, 400), (32, 300), (64, 100)):
    source = SegmentedSceneSource("train", count, image_size, seed=3)
    for index in range(count):
      example = source[index]
      pairs = touching_pairs(example["labels"])
      assert pairs <= allowed_pairs, (image_size, index, pairs - allowed_pairs)
      seen_pairs |= pairs
      for first, second in pairs:
        assert example["colour_ids"][first] != example["colour_ids"][second], (image_size, index, first, second)
      colours = example["colour_ids"][example["present"] == 1]
      shared_colours += len(np.unique(colours)) < len(colours)
  assert seen_pairs == allowed_pairs  # TOUCHING lists exactly the pairs that do touch
  assert shared_colours > 100  # regions apart may share a colour (a hat like the body)


def test_folder_round_trip_is_lossless_and_resizes_labels_with_nearest(tmp_path):
  scenes = SegmentedSceneSource("test", 8, 32, seed=5)
  directory = write_segmentation_folder(scenes, tmp_path, "test", count=6)
  assert directory == tmp_path / "test"
  source = SegmentationFolderSource(tmp_path, "test", 32, NUM_LABELS)
  assert len(source) == 6 and source.stems == [f"{index:06d}" for index in range(6)]
  for index in range(6):
    item = source[index]
    assert set(item) == {"image", "labels"}
    assert item["image"].dtype == np.uint8 and item["labels"].dtype == np.int32
    np.testing.assert_array_equal(item["image"], scenes[index]["image"])
    np.testing.assert_array_equal(item["labels"], scenes[index]["labels"])
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[2]["labels"], scenes[2]["labels"])

  large = SegmentedSceneSource("test", 2, 48, seed=5)
  write_segmentation_folder(large, tmp_path / "large", "test", count=2)
  original = large[1]
  doubled = SegmentationFolderSource(tmp_path / "large", "test", 96, NUM_LABELS)[1]
  np.testing.assert_array_equal(doubled["labels"], original["labels"].repeat(2, 0).repeat(2, 1))
  assert doubled["image"].shape == (96, 96, 3) and doubled["image"].dtype == np.uint8
  np.testing.assert_allclose(doubled["image"].mean((0, 1)), original["image"].mean((0, 1)), atol=1.0)
  # 48 → 32: each output pixel takes the label of the input pixel under its centre (no ties: (y + ½)·1.5 ∉ ℤ)
  source_pixel = np.floor((np.arange(32) + 0.5) * 48 / 32).astype(int)
  shrunk = SegmentationFolderSource(tmp_path / "large", "test", 32, NUM_LABELS)[1]
  np.testing.assert_array_equal(shrunk["labels"], original["labels"][np.ix_(source_pixel, source_pixel)])
  np.testing.assert_allclose(shrunk["image"].mean((0, 1)), original["image"].mean((0, 1)), atol=2.0)


class ShiftedLabels:
  """The scenes with every label id + 1, as a dataset whose ids start at 1."""

  def __init__(self, scenes):
    self.scenes = scenes

  def __len__(self) -> int:
    return len(self.scenes)

  def __getitem__(self, index: int) -> dict:
    return {"image": self.scenes[index]["image"], "labels": self.scenes[index]["labels"] + 1}


def test_label_offset_and_out_of_range_ids(tmp_path):
  scenes = SegmentedSceneSource("train", 4, 16)
  write_segmentation_folder(ShiftedLabels(scenes), tmp_path, "train", count=4)
  shifted = SegmentationFolderSource(tmp_path, "train", 16, NUM_LABELS, label_offset=1)
  for index in range(4):
    np.testing.assert_array_equal(shifted[index]["labels"], scenes[index]["labels"])
  with_belt = next(index for index in range(4) if scenes[index]["present"][LABELS.index("belt")])
  unshifted = SegmentationFolderSource(tmp_path, "train", 16, NUM_LABELS)
  with pytest.raises(DataError, match=rf"labels/{with_belt:06d}\.png holds label id 6, outside \[0, 6\)"):
    unshifted[with_belt]
  write_segmentation_folder(scenes, tmp_path, "test", count=1)
  with pytest.raises(DataError, match=r"labels/000000\.png holds label id 0, outside \[1, 7\)"):
    SegmentationFolderSource(tmp_path, "test", 16, NUM_LABELS, label_offset=1)[0]


def test_folder_errors_name_the_path_and_the_layout(tmp_path):
  layout = r"laid out as <root>/<split>/images/<stem>\..* and <root>/<split>/labels/<stem>\.png"
  with pytest.raises(ConfigError, match=rf"nowhere/train/images is not a folder; .*{layout}"):
    SegmentationFolderSource(tmp_path / "nowhere", "train", 16, NUM_LABELS)
  (tmp_path / "empty" / "train" / "images").mkdir(parents=True)
  with pytest.raises(ConfigError, match=r"empty/train/labels is not a folder"):
    SegmentationFolderSource(tmp_path / "empty", "train", 16, NUM_LABELS)
  (tmp_path / "empty" / "train" / "labels").mkdir()
  with pytest.raises(DataError, match=rf"empty/train/images holds no images; .*{layout}"):
    SegmentationFolderSource(tmp_path / "empty", "train", 16, NUM_LABELS)
  with pytest.raises(ConfigError, match="num_labels=0"):
    SegmentationFolderSource(tmp_path / "empty", "train", 16, 0)

  scenes = SegmentedSceneSource("train", 3, 16)
  directory = write_segmentation_folder(scenes, tmp_path / "data", "train", count=3)
  (directory / "labels" / "000001.png").unlink()
  with pytest.raises(DataError, match=r"1 stems in .*data/train have an image without a label map .*\['000001'\]"):
    SegmentationFolderSource(tmp_path / "data", "train", 16, NUM_LABELS)
  Image.fromarray(scenes[1]["image"]).save(directory / "labels" / "000001.png")  # an RGB "label map"
  with pytest.raises(DataError, match=r"labels/000001\.png has mode 'RGB'; a label map is a single-channel"):
    SegmentationFolderSource(tmp_path / "data", "train", 16, NUM_LABELS)[1]
  (directory / "images" / "000002.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=r"images/000002\.png cannot be decoded"):
    SegmentationFolderSource(tmp_path / "data", "train", 16, NUM_LABELS)[2]

  with pytest.raises(ConfigError, match="count=4: the source has 3 examples"):
    write_segmentation_folder(scenes, tmp_path / "more", "train", count=4)
  float_images = [{"image": np.zeros((16, 16, 3), np.float32), "labels": np.zeros((16, 16), np.int32)}]
  with pytest.raises(DataError, match=r"item 0: image is float32 \(16, 16, 3\); .* needs \(H, W, 3\) uint8"):
    write_segmentation_folder(float_images, tmp_path / "floats", "train", count=1)
