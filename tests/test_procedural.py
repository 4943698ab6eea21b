"""Embedded procedural E.T. data: determinism, layout, E.T. conventions, and that E.T.'s tagger recovers the classes."""

import pickle
import re

import numpy as np
import pytest

from storyjax.data.et import camera, procedural, tagging

ID_PATTERN = re.compile(r"^20\d\d_[A-Za-z0-9_-]{11}_\d{5}_\d{5}$")


def samples(subset, count, split="train", **kwargs):
  return [procedural.generate_sample(0, subset, split, index, **kwargs) for index in range(count)]


@pytest.fixture(scope="module")
def pure():
  return samples("pure", 300)


@pytest.fixture(scope="module")
def mixed():
  return samples("mixed", 200)


def test_generate_sample_is_deterministic():
  first, again = (procedural.generate_sample(3, "mixed", "train", 7, max_frames=200) for _ in range(2))
  assert first.keys() == again.keys()
  for key in first:
    np.testing.assert_array_equal(first[key], again[key], err_msg=key)
  for other in (
    procedural.generate_sample(3, "mixed", "train", 8, max_frames=200),
    procedural.generate_sample(3, "mixed", "test", 7, max_frames=200),
    procedural.generate_sample(4, "mixed", "train", 7, max_frames=200),
    procedural.generate_sample(3, "pure", "train", 7, max_frames=200),
  ):
    assert other["id"] != first["id"]
    assert other["camera_pose"].shape != first["camera_pose"].shape or not np.allclose(
      other["camera_pose"], first["camera_pose"]
    )


def test_train_and_test_ids_are_disjoint_and_et_formatted():
  for subset in procedural.SUBSETS:
    ids = {
      split: [procedural.generate_sample(0, subset, split, index, max_frames=100)["id"] for index in range(300)]
      for split in procedural.SPLITS
    }
    assert all(len(set(split_ids)) == 300 for split_ids in ids.values())
    assert not set(ids["train"]) & set(ids["test"])
    for sample_id in ids["train"][:50]:
      assert ID_PATTERN.match(sample_id), sample_id
      assert len("_".join(sample_id.split("_")[1:-2])) == 11  # E.T.'s extract_frames.py parse


@pytest.mark.parametrize("subset", procedural.SUBSETS)
def test_samples_follow_et_conventions(subset, pure, mixed):
  for sample in pure if subset == "pure" else mixed:
    poses, char_pos = sample["camera_pose"], sample["char_pos"]
    num_frames = len(poses)
    assert poses.shape == (num_frames, 3, 4) and poses.dtype == np.float64
    assert char_pos.shape == (num_frames, 3) and char_pos.dtype == np.float64
    shortest, segment_counts = (41, (1,)) if subset == "pure" else (81, (2, 3))
    assert shortest <= num_frames <= camera.MAX_FRAMES
    for key in ("cam_segments", "char_segments"):
      assert sample[key].shape == (num_frames - 1,) and sample[key].dtype == np.int64
    assert sample["intrinsics"].shape == (4,) and sample["intrinsics"].dtype == np.float32
    np.testing.assert_array_equal(char_pos[0], 0.0)
    np.testing.assert_allclose(poses[0, :, :3], np.eye(3), atol=1e-12)
    rotations = poses[:, :, :3]
    np.testing.assert_allclose(
      rotations @ np.swapaxes(rotations, 1, 2), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-9
    )
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-9)
    start = poses[0, :, 3]
    assert -0.5 <= start[0] <= 0.5 and -0.6 <= start[1] <= -0.1 and -3.0 <= start[2] <= -1.0
    char_in_camera = poses[0, :, :3].T @ (char_pos[0] - start)
    assert char_in_camera[2] > 0.9  # the character is in front of the frame-0 camera
    assert np.abs(char_pos[:, 1]).max() <= 0.011  # walks on the ground plane (up = −y), bobbing ≤ 1 cm
    assert tagging.run_sequence(sample["cam_segments"]) == sample["cam_classes"]
    assert all(cls in procedural.CAMERA_MOTION_CLASSES for cls in sample["cam_classes"])
    assert len(sample["cam_classes"]) in segment_counts
    assert all(
      run_end - run_start >= procedural.MIN_SEGMENT_STEPS
      for _, run_start, run_end in tagging.runs(sample["cam_segments"])
    )


def test_classes_are_drawn_uniformly():
  classes = [sample["cam_classes"][0] for sample in samples("pure", 1900, max_frames=41)]
  counts = np.array([classes.count(cls) for cls in procedural.CAMERA_MOTION_CLASSES])
  assert counts.sum() == len(classes)
  shares = counts / counts.sum()
  assert shares.min() > 0.035 and shares.max() < 0.07, shares  # chance level 1/19 ≈ 0.053


def test_et_tagger_recovers_pure_classes(pure):
  tags = [tagging.tag_camera(sample["camera_pose"]) for sample in pure]
  recovered = np.mean([tagging.run_sequence(tag) == sample["cam_classes"] for tag, sample in zip(tags, pure)])
  step_agreement = np.mean(np.concatenate([tag == sample["cam_segments"] for tag, sample in zip(tags, pure)]))
  char_agreement = np.mean(
    np.concatenate([tagging.tag_character(sample["char_pos"]) == sample["char_segments"] for sample in pure])
  )
  print(
    f"pure: sequence recovered {recovered:.4f}, step agreement {step_agreement:.4f}, "
    f"character step agreement {char_agreement:.4f}"
  )
  assert recovered >= 0.99
  assert step_agreement >= 0.95
  assert char_agreement >= 0.9


def test_et_tagger_recovers_mixed_sequences(mixed):
  tags = [tagging.tag_camera(sample["camera_pose"]) for sample in mixed]
  recovered = np.mean([tagging.run_sequence(tag) == sample["cam_classes"] for tag, sample in zip(tags, mixed)])
  step_agreement = np.mean(np.concatenate([tag == sample["cam_segments"] for tag, sample in zip(tags, mixed)]))
  print(f"mixed: sequence recovered {recovered:.4f}, step agreement {step_agreement:.4f}")
  assert recovered >= 0.95
  assert step_agreement >= 0.9


def test_pans_and_tilts_turn_the_optical_axis_the_named_way(pure):
  # Pans are tagged static by E.T.; only the caption says which way the camera turned.
  expected = {"pan_left": (0, -1.0), "pan_right": (0, 1.0), "tilt_up": (1, -1.0), "tilt_down": (1, 1.0)}
  seen = set()
  for sample in pure:
    names = [
      name
      for name, pan in procedural._PANS.items()
      if any(re.search(rf"\b{phrase}\.", sample["caption_cam"]) for phrase in pan.phrases)
    ]
    if not names:
      continue
    assert sample["cam_classes"] == (0,)
    axis, sign = expected[names[0]]
    optical_axis = sample["camera_pose"][-1, :, 2]
    assert sign * optical_axis[axis] > np.sin(np.deg2rad(7.0)), (names, optical_axis)
    seen.add(names[0])
  assert seen == set(expected)


def test_captions_name_the_classes_in_a_closed_vocabulary(pure, mixed):
  vocabulary = set(procedural.caption_vocabulary())
  for cls in procedural.CAMERA_MOTION_CLASSES:
    assert len(set(procedural.camera_phrases(cls))) >= 3, tagging.CAMERA_CLASS_NAMES[cls]
  for cls in procedural.CHARACTER_MOTION_CLASSES:
    assert len(set(procedural.character_phrases(cls))) >= 3, tagging.CHARACTER_CLASS_NAMES[cls]
  for sample in pure + mixed:
    for text in (sample["caption"], sample["caption_cam"]):
      words = re.findall(r"\w+|[^\w\s]", text.lower())
      assert set(words) <= vocabulary, set(words) - vocabulary
    assert sample["caption_cam"].lower().rstrip(".") in sample["caption"].lower()
    # The camera phrases appear in segment order.
    position = 0
    for cls in sample["cam_classes"]:
      matches = [sample["caption_cam"].find(f" {phrase}", position) for phrase in procedural.camera_phrases(cls)]
      matches = [match for match in matches if match >= 0]
      assert matches, (sample["caption_cam"], sample["cam_classes"])
      position = min(matches) + 1
  for cls in procedural.CAMERA_MOTION_CLASSES[1:]:  # the phrase tables follow E.T.'s tag names
    name = tagging.CAMERA_CLASS_NAMES[cls]
    assert "-".join(procedural._CAMERA_MOTIONS[cls]) == name


@pytest.mark.parametrize("subset", procedural.SUBSETS)
def test_embedded_items_are_padded_model_features(subset):
  source = procedural.EmbeddedET(subset, "test", size=5, seed=2, max_frames=150, min_frames=90)
  assert len(source) == 5
  assert pickle.loads(pickle.dumps(source)).__dict__ == source.__dict__
  for index in range(len(source)):
    item = source[index]
    sample = procedural.generate_sample(2, subset, "test", index, max_frames=150, min_frames=90)
    num_frames = len(sample["camera_pose"])
    assert 90 <= num_frames <= 150 and item["num_frames"] == num_frames and item["num_frames"].dtype == np.int32
    assert item["camera_traj"].shape == (150, 9) and item["camera_traj"].dtype == np.float32
    assert item["char_traj"].shape == (150, 3) and item["char_traj"].dtype == np.float32
    np.testing.assert_array_equal(item["camera_traj"][:num_frames], camera.encode_camera(sample["camera_pose"]))
    np.testing.assert_array_equal(item["char_traj"][:num_frames], camera.encode_character(sample["char_pos"]))
    np.testing.assert_array_equal(item["camera_traj"][num_frames:], 0.0)
    np.testing.assert_array_equal(item["char_traj"][num_frames:], 0.0)
    np.testing.assert_array_equal(item["mask"], np.arange(150) < num_frames)
    assert item["mask"].dtype == bool
    assert item["cam_classes"].shape == (3,) and item["cam_classes"].dtype == np.int32
    classes = sample["cam_classes"]
    assert item["cam_classes"].tolist() == list(classes) + [tagging.PAD_CLASS] * (3 - len(classes))
    assert (item["caption"], item["caption_cam"], item["id"]) == (
      sample["caption"],
      sample["caption_cam"],
      sample["id"],
    )
    assert all(isinstance(value, (np.ndarray, np.integer, str)) for value in item.values())
    round_trip = camera.decode_camera(item["camera_traj"][:num_frames])
    np.testing.assert_allclose(round_trip, sample["camera_pose"], atol=1e-3)


def test_bad_arguments_raise_value_errors_naming_them():
  with pytest.raises(ValueError, match="'impure'"):
    procedural.generate_sample(0, "impure", "train", 0)
  with pytest.raises(ValueError, match="'val'"):
    procedural.EmbeddedET("pure", "val", size=3)
  with pytest.raises(ValueError, match="index 3"):
    procedural.EmbeddedET("pure", "train", size=3)[3]
  with pytest.raises(ValueError, match="index=-1"):
    procedural.generate_sample(0, "pure", "train", -1)
  with pytest.raises(ValueError, match="min_frames=60"):
    procedural.EmbeddedET("mixed", "train", size=3, max_frames=100, min_frames=60)
  with pytest.raises(ValueError, match="max_frames=301"):
    procedural.generate_sample(0, "pure", "train", 0, max_frames=301)
  with pytest.raises(ValueError, match="max_segments=2"):
    procedural.EmbeddedET("mixed", "train", size=3, max_segments=2)
