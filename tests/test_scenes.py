"""Procedural scenes with known coherence (CAD's embedded data), coherence binning, and the scene judge.

The data against independent recounts (coherence, corruption rate, positions, vocabulary, filtering), CAD's
binning and caption accuracy against hand examples, the judge's masked loss, its learning through the generic
loop, and SceneJudge on the trained run.
"""

import re

import jax
import numpy as np
import pytest

from configs import scene_attributes as scene_config
from storyjax import train as train_lib
from storyjax.data.coherence import bin_coherence, coherence_bin_edges
from storyjax.data.images.scenes import (
  PER_SLOT_KEYS,
  SCENE_VOCABULARY,
  SIZES,
  SceneSource,
  caption_text,
  max_wrong_claims,
  scene_layout,
)
from storyjax.data.images.shapes import COLOURS, SHAPES
from storyjax.errors import CheckpointError
from storyjax.metrics.scenes import SceneJudge, caption_accuracy, claim_accuracies, fid
from storyjax.tasks import load_trained_task
from storyjax.text.tokenizer import UNK, build_caption_tokenizer

pytestmark = pytest.mark.usefixtures("fast_compile")


@pytest.fixture(scope="module")
def layouts() -> list[dict]:
  return [scene_layout(5, "train", index, corrupt_fraction=0.3) for index in range(2000)]


def recounted_coherence(layout: dict) -> float:
  """The fraction of the caption's 4·n claims true for the image, pairing caption objects with image objects:
  on a slot both have, the same object; the caption's other slots, in order, with the image's other slots."""
  image_slots, caption_slots = np.flatnonzero(layout["present"]), np.flatnonzero(layout["caption_present"])
  shared = np.intersect1d(image_slots, caption_slots)
  pairs = [(slot, slot) for slot in shared] + list(
    zip(np.setdiff1d(image_slots, caption_slots), np.setdiff1d(caption_slots, image_slots))
  )
  true_claims = sum(
    (image_slot == caption_slot)
    + sum(layout[key][image_slot] == layout[f"caption_{key}"][caption_slot] for key in ("colour", "shape", "size"))
    for image_slot, caption_slot in pairs
  )
  return true_claims / (4 * len(image_slots))


def test_examples_are_reproducible_typed_and_in_range():
  source = SceneSource("train", 40, image_size=32, seed=3)
  example = source[7]
  again = SceneSource("train", 40, image_size=32, seed=3, corrupt_fraction=1.0)[7]
  np.testing.assert_array_equal(example["image"], again["image"])  # corruption never changes the image
  assert example["true_caption"] == again["true_caption"]
  assert not np.array_equal(example["image"], source[8]["image"])
  assert not np.array_equal(example["image"], SceneSource("test", 40, image_size=32, seed=3)[7]["image"])
  assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.float32
  assert example["coherence"].dtype == np.float32 and example["corrupted"].dtype == np.bool_
  for index in range(len(source)):
    example = source[index]
    assert example["image"].min() >= -1.0 and example["image"].max() <= 1.0
    assert isinstance(example["caption"], str) and isinstance(example["true_caption"], str)
    for key in PER_SLOT_KEYS:
      for prefix in ("", "caption_"):
        values = example[prefix + key]
        assert values.shape == (4,) and values.dtype == (bool if key == "present" else np.int32), key
        if key != "present":
          np.testing.assert_array_equal(values[~example[prefix + "present"]], 0)
          assert values.max() < {"colour": len(COLOURS), "shape": len(SHAPES), "size": 2}[key]
    assert 1 <= example["present"].sum() <= 3
  with pytest.raises(IndexError):
    source[40]
  single = SceneSource("train", 40, image_size=16, max_objects=1)
  assert all(single[index]["present"].sum() == 1 for index in range(40))
  for bad_arguments in (
    {"split": "val"},
    {"image_size": 15},
    {"corrupt_fraction": 1.5},
    {"min_coherence": -0.1},
    {"max_objects": 4},
  ):
    with pytest.raises(ValueError):
      SceneSource(**{"split": "train", "size": 10, **bad_arguments})


def test_corruption_rate_and_coherence_match_a_recount(layouts):
  corrupted = np.array([layout["corrupted"] for layout in layouts])
  assert abs(corrupted.mean() - 0.3) < 0.03, corrupted.mean()
  num_moved = 0
  for layout in layouts:
    claims = [layout[f"caption_{key}"] for key in PER_SLOT_KEYS]
    assert layout["caption"] == caption_text(*claims, template=_template(layout))
    assert layout["coherence"] == pytest.approx(recounted_coherence(layout), abs=1e-6)
    assert layout["caption_present"].sum() == layout["present"].sum()  # a moved object never lands on another
    if not layout["corrupted"]:
      assert layout["coherence"] == 1.0 and layout["caption"] == layout["true_caption"]
      continue
    assert layout["coherence"] < 1.0 and layout["caption"] != layout["true_caption"]
    num_objects = layout["present"].sum()
    assert layout["coherence"] >= 1.0 - max_wrong_claims(num_objects) / (4 * num_objects) - 1e-6
    moved_to = layout["caption_present"] & ~layout["present"]
    num_moved += moved_to.sum()
  assert num_moved > 50  # positions are corrupted too, always onto a slot that is empty in the image
  lowest = min(layout["coherence"] for layout in layouts if layout["present"].sum() == 3)
  assert lowest == pytest.approx(1.0 - 10 / 12)  # three objects: at most 9 values and 1 position wrong


def _template(layout: dict) -> int:
  for template in range(3):
    if layout["true_caption"] == caption_text(*(layout[key] for key in PER_SLOT_KEYS), template=template):
      return template
  raise AssertionError(f"no template gives {layout['true_caption']!r}")


def test_every_caption_word_is_in_the_vocabulary(layouts):
  captions = [layout[key] for layout in layouts[:300] for key in ("caption", "true_caption")]
  assert {word for caption in captions for word in re.findall(r"\w+|,", caption)} == set(SCENE_VOCABULARY)
  tokenizer = build_caption_tokenizer(SCENE_VOCABULARY)
  assert tokenizer.convert_tokens_to_ids(UNK) not in {
    token for caption in captions for token in tokenizer(caption)["input_ids"]
  }


def test_min_coherence_keeps_the_coherent_examples_in_order():
  everything = SceneSource("train", 400, image_size=16, seed=2)
  coherence = everything.coherences()
  np.testing.assert_array_equal(coherence[:50], [everything[index]["coherence"] for index in range(50)])
  filtered = SceneSource("train", 400, image_size=16, seed=2, min_coherence=5 / 6)
  kept = np.flatnonzero(coherence >= np.float32(5 / 6))
  assert len(filtered) == len(kept) and 0 < len(kept) < 400
  assert np.any(coherence == np.float32(5 / 6))  # kept, although float32(5/6) < 5/6 in float64
  np.testing.assert_array_equal(filtered.coherences(), coherence[kept])
  for index in (0, len(kept) - 1):
    np.testing.assert_array_equal(filtered[index]["image"], everything[int(kept[index])]["image"])
  with pytest.raises(ValueError, match="lower min_coherence"):
    SceneSource("train", 20, corrupt_fraction=1.0, min_coherence=1.0)


def test_coherence_binning_follows_cad():
  scores = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
  edges = coherence_bin_edges(scores, num_bins=4)
  np.testing.assert_allclose(edges, [0.0, 0.175, 0.35, 0.525, 1.0])  # quantiles 1.75, 3.5, 5.25 of 7 steps
  np.testing.assert_allclose(bin_coherence(scores, edges), [0, 0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1], rtol=1e-6)
  # torch.bucketize(right=False): a score on an edge belongs to the bin that edge closes; beyond the ends: clipped.
  np.testing.assert_allclose(bin_coherence([0.175, 0.35, 1.0, 1.5, -0.2], edges), [0, 1 / 3, 1, 1, 0], rtol=1e-6)
  # Ties: with most scores exactly 1, several edges are 1 and a score of 1 lands in the first bin they close.
  tied_edges = coherence_bin_edges([0.5, 0.5, 1, 1, 1, 1, 1, 1], num_bins=4)
  np.testing.assert_allclose(tied_edges, [0.0, 0.875, 1, 1, 1])
  np.testing.assert_allclose(bin_coherence([0.5, 1.0], tied_edges), [0, 1 / 3], rtol=1e-6)
  with pytest.raises(ValueError, match="at least 2 bins"):
    coherence_bin_edges(scores, num_bins=1)


def test_caption_accuracy_counts_claims_per_prompt():
  claims = {
    "present": [[True, False, False, True], [False, False, True, False]],
    "colour": [[1, 0, 0, 0], [0, 0, 3, 0]],
    "shape": [[2, 0, 0, 1], [0, 0, 3, 0]],
    "size": [[0, 0, 0, 1], [0, 0, 1, 0]],
  }
  predicted = {
    "present": [[True, True, False, False], [False, False, True, False]],
    "colour": [[1, 2, 0, 0], [1, 1, 3, 1]],  # slot 3 of prompt 0 matches, but the judge finds no object there
    "shape": [[2, 0, 0, 1], [0, 0, 3, 0]],
    "size": [[1, 0, 0, 1], [0, 0, 1, 0]],
  }
  # Prompt 0: slot 0 present, colour, shape right, size wrong (3); slot 3 missed (0); slot 1 not empty (0),
  # slot 2 empty (1) → 4 of 4·2 + 2 claims. Prompt 1: all 4 + 3 claims right.
  assert caption_accuracy(predicted, claims) == pytest.approx((4 / 10 + 7 / 7) / 2)
  # By kind over both prompts: 3 filled slots (2 found), 5 empty ones (4 found empty); colour and shape right at
  # the 2 found, size at 1.
  assert claim_accuracies(predicted, claims) == pytest.approx(
    {"present": 2 / 3, "empty": 4 / 5, "colour": 2 / 3, "shape": 2 / 3, "size": 1 / 3}
  )
  with pytest.raises(ValueError, match="lacks"):
    caption_accuracy({"present": predicted["present"]}, claims)


@pytest.fixture(scope="module")
def judge_run(runs_dir):
  """The smoke config through the generic loop, long enough to learn: (config, workdir, evaluation)."""
  config = scene_config.get_config("smoke")
  config.mesh.update({"data": 1})
  config.update({"total_steps": 150, "batch_size": 32, "log_every": 50, "checkpoint_every": 150})
  config.data.update({"train_size": 5000, "test_size": 200})
  config.eval.update({"at_end": True, "batch_size": 100})
  workdir = runs_dir / "scene_attributes"
  return config, workdir, train_lib.train(config, workdir)


def test_judge_learns(judge_run):
  """Chance: present 0.5 (half the slots hold an object), colour 0.25."""
  _, _, evaluation = judge_run
  # Measured: present 0.976, colour 0.963 (shape and size need longer).
  assert evaluation["present_accuracy"] > 0.9 and evaluation["colour_accuracy"] > 0.8, evaluation
  assert evaluation["num_samples"] == 200


def test_scene_judge_reads_the_trained_run(judge_run):
  config, workdir, evaluation = judge_run
  judge = SceneJudge(workdir)
  examples = [SceneSource("test", 200, config.data.image_size, corrupt_fraction=1.0)[index] for index in range(200)]
  images = np.stack([example["image"] for example in examples])
  train_source = SceneSource("train", 200, config.data.image_size)
  train_images = np.stack([train_source[index]["image"] for index in range(200)])
  predicted = judge.attributes(images)
  truth = {key: np.stack([example[key] for example in examples]) for key in PER_SLOT_KEYS}
  assert np.mean(predicted["present"] == truth["present"]) == evaluation["present_accuracy"]
  corrupted_claims = {key: np.stack([example[f"caption_{key}"] for example in examples]) for key in PER_SLOT_KEYS}
  assert caption_accuracy(predicted, truth) > caption_accuracy(predicted, corrupted_claims) + 0.1
  features = judge.features(images)
  assert features.shape == (200, 4 * config.model.width * 2 ** (config.model.num_stages - 1))
  # Shifted by a quarter, objects straddle the quadrants: measured FID 7.2 against 1.4 for unshifted train images.
  shifted = np.roll(train_images, config.data.image_size // 4, axis=1)
  assert fid(features, judge.features(train_images)) < 0.4 * fid(features, judge.features(shifted))


def test_colour_shape_size_losses_ignore_empty_slots(judge_run):
  _, workdir, _ = judge_run
  task, variables = load_trained_task(workdir, "scene_attributes")
  examples = [task.preprocess(example) for example in (task.source("train")[index] for index in range(8))]
  batch = {key: np.stack([example[key] for example in examples]) for key in examples[0]}
  relabelled = dict(batch)
  for key, num_values in (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("size", len(SIZES))):
    relabelled[key] = np.where(batch["present"] == 1, batch[key], num_values - 1).astype(np.int32)
  assert np.any(relabelled["colour"] != batch["colour"])
  loss = jax.jit(lambda batch: task.loss(variables, batch, None)[0])
  np.testing.assert_allclose(loss(relabelled), loss(batch), rtol=1e-6)
  moved = dict(batch, colour=np.where(batch["present"] == 1, (batch["colour"] + 1) % len(COLOURS), 0).astype(np.int32))
  assert abs(loss(moved) - loss(batch)) > 0.1  # while the colours of the objects count


def test_a_missing_judge_names_the_train_command(tmp_path):
  with pytest.raises(CheckpointError, match=f"{tmp_path}.*--config=configs/scene_attributes.py --workdir={tmp_path}"):
    SceneJudge(tmp_path)
