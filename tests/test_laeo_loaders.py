"""UCO-LAEO and AVA-LAEO loaders on tiny datasets written in the released layouts.

The UCO-LAEO tree has heads drawn as coloured squares that move a pixel per frame (one vanishes, one frame is
ambiguous), so track linking, the sample count, middle-frame labels, the split, crop colours and map channels are
all known by construction; bad files must fail with DataError naming the file.
"""

import grain
import numpy as np
import pytest

from storyjax.data.laeo import ava, uco
from storyjax.data.laeo.head_map import draw_head_map
from storyjax.data.laeo.windows import smooth_boxes
from storyjax.data.pipeline import RandomAccessSource
from storyjax.errors import ConfigError, DataError

HEIGHT, WIDTH, SIDE = 80, 160, 30
GREY = 128
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def draw(frames: np.ndarray, boxes, colours) -> np.ndarray:
  """frames (F, H, W, 3) with box k of frame f (inclusive pixels) filled with colours[k]."""
  for frame, frame_boxes in zip(frames, boxes):
    for (x1, y1, x2, y2), colour in zip(frame_boxes, colours):
      frame[int(y1) : int(y2) + 1, int(x1) : int(x2) + 1] = colour
  return frames


def square(x1, y1, side=SIDE):
  return [x1, y1, x1 + side - 1, y1 + side - 1]


def moving_heads_video() -> dict:
  """14 frames: red moving right and green moving left (LAEO in frames 0–6), blue still and present in frames 0–10,
  frame 8 ambiguous; heads listed in a different order in odd frames."""
  num_frames = 14
  heads, pairs, colours_per_frame = [], [], []
  for frame in range(num_frames):
    red, green, blue = square(10 + frame, 20), square(120 - frame, 25), square(65, 40)
    boxes, colours = ([red, green, blue], [RED, GREEN, BLUE]) if frame <= 10 else ([red, green], [RED, GREEN])
    if frame % 2:
      boxes, colours = boxes[::-1], colours[::-1]
    red_index, green_index = colours.index(RED), colours.index(GREEN)
    heads.append(np.array(boxes))
    pairs.append([(red_index, green_index)] if frame <= 6 else [])
    colours_per_frame.append(colours)
  frames = np.full((num_frames, HEIGHT, WIDTH, 3), GREY, np.uint8)
  for frame in range(num_frames):
    draw(frames[frame : frame + 1], [heads[frame]], colours_per_frame[frame])
  labels = [1 if frame <= 6 else 0 for frame in range(num_frames)]
  labels[8] = 9
  return {"frames": frames, "heads": heads, "pairs": pairs, "labels": labels}


def still_pair_video(num_frames: int = 12) -> dict:
  """Two still heads (green left, red right), LAEO in every frame."""
  boxes = np.array([square(20, 20), square(100, 30)])
  frames = draw(np.full((num_frames, HEIGHT, WIDTH, 3), GREY, np.uint8), [boxes] * num_frames, [GREEN, RED])
  return {"frames": frames, "heads": [boxes] * num_frames, "pairs": [[(0, 1)]] * num_frames}


@pytest.fixture(scope="module")
def uco_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("ucolaeo")
  videos = {"got02": moving_heads_video(), "got01": still_pair_video(), "got05": still_pair_video(11)}
  return uco.write_uco_laeo_tree(root, videos)


def test_annotation_files_round_trip(uco_root):
  video = moving_heads_video()
  annotations = uco_root / "annotations"
  np.testing.assert_array_equal(uco.read_frame_labels(annotations / "annotations_frame" / "got02.txt"), video["labels"])
  heads = uco.read_head_boxes(annotations / "annotations_head" / "got02_heads.txt")
  assert len(heads) == 14 and [len(boxes) for boxes in heads] == [3] * 11 + [2] * 3
  for read, written in zip(heads, video["heads"]):
    np.testing.assert_array_equal(read, written)
  pairs = uco.read_laeo_pairs(annotations / "annotations_pair" / "pair_got02.txt")
  # 1-indexed in the file, 0-based and sorted here; odd frames list blue, green, red
  assert pairs[0] == {(0, 1)} and pairs[1] == {(1, 2)} and pairs[7] == frozenset()
  assert (annotations / "annotations_pair" / "pair_got02.txt").read_text().splitlines()[-2:] == ["13", "-1 -1"]


def test_split_is_partition_1(uco_root):
  dataset = uco.UcoLaeo(uco_root)
  assert dataset.videos == ("got01", "got02", "got05")
  assert dataset.split_videos("train") == ("got02",)
  assert dataset.split_videos("val") == ("got01",)
  assert dataset.split_videos("test") == ("got05",)
  assert "got01" in uco.VAL_VIDEOS and "got05" in uco.TEST_VIDEOS and "got02" not in uco.VAL_VIDEOS + uco.TEST_VIDEOS
  assert len(uco.VAL_VIDEOS) == 8 and len(uco.TEST_VIDEOS) == 15
  with pytest.raises(ConfigError, match="unknown UCO-LAEO split"):
    dataset.split_videos("training")


def test_tracks_link_by_iou_with_the_first_box():
  heads = [np.array([square(10 + frame, 20), square(120 - frame, 25)])[:: 1 - 2 * (frame % 2)] for frame in range(12)]
  # the red head is index 0 in even frames, 1 in odd ones (the order is reversed)
  red, green = uco.link_tracks(heads, 0, 10)
  np.testing.assert_array_equal(red, [0, 1] * 5)
  np.testing.assert_array_equal(green, [1, 0] * 5)
  assert uco.link_tracks(heads, 3, 10) == [None, None]  # the video ends first
  # 2 px a frame: each step overlaps well, but at frame 5 the head has moved 10 of its 30 px from the first box,
  # IoU 20·30 / (2·900 − 20·30) = 0.5, not above it
  drifting = [np.array([square(10 + 2 * frame, 20)]) for frame in range(12)]
  assert uco.box_iou(drifting[4], drifting[5]) > 0.5
  assert uco.box_iou(drifting[0], drifting[5]) == 0.5
  np.testing.assert_array_equal(uco.link_tracks(drifting, 0, 5)[0], [0] * 5)
  assert uco.link_tracks(drifting, 0, 6) == [None]
  # a frame without heads breaks every track
  assert uco.link_tracks(heads[:5] + [np.zeros((0, 4))] + heads[6:], 0, 10) == [None, None]
  # IoU against a brute-force count of shared pixels
  rng = np.random.default_rng(1)

  def random_boxes(count):
    xs, ys = np.sort(rng.integers(0, 20, size=(2, count, 2)), axis=-1)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)

  def mask(box):
    pixels = np.zeros((20, 20), bool)
    pixels[box[1] : box[3] + 1, box[0] : box[2] + 1] = True
    return pixels

  boxes_a, boxes_b = random_boxes(5), random_boxes(4)
  expected = [[np.sum(mask(a) & mask(b)) / np.sum(mask(a) | mask(b)) for b in boxes_b] for a in boxes_a]
  np.testing.assert_allclose(uco.box_iou(boxes_a, boxes_b), expected)


def authors_track(heads, start, head):
  """`mj_generateTracks`' loop for one (frame, head): the head index in each frame until the link breaks."""
  track, reference = [head], heads[start][head]
  for frame in range(start + 1, len(heads)):
    best_iou, best = -1, -1
    for index, box in enumerate(heads[frame]):
      iou = uco.box_iou(reference, box)[0, 0]
      if iou > best_iou:
        best_iou, best = iou, index
    if best_iou <= 0.5:
      break
    track.append(best)
  return track


def test_tracks_match_the_authors_loop():
  rng = np.random.default_rng(2)
  people = rng.integers(0, 300, size=(5, 2))
  heads = []
  for _ in range(40):
    people = people + rng.integers(-3, 4, size=people.shape)  # a random walk: tracks last a few to many frames
    present = people[rng.random(len(people)) < 0.9]
    heads.append(np.concatenate([present, present + 30], axis=1)[rng.permutation(len(present))])
  for length in (1, 4, 10):
    for start in range(len(heads)):
      for head, track in enumerate(uco.link_tracks(heads, start, length)):
        reference = authors_track(heads, start, head)
        if len(reference) >= length:
          np.testing.assert_array_equal(track, reference[:length])
        else:
          assert track is None


def test_uco_samples_labels_and_ambiguous_frames(uco_root):
  source = uco.UcoLaeoSource(uco_root, "train")
  assert isinstance(source, RandomAccessSource)
  # starts 0 and 1: red, green and blue are tracked for 10 frames (3 pairs each); starts 2–4: blue is gone by the
  # window's end (red–green only); start 3's middle frame 8 is ambiguous
  starts = [sample.start for sample in source.samples]
  assert starts == [0, 0, 0, 1, 1, 1, 2, 4] and source.num_ambiguous == 1
  # red–green is LAEO up to frame 6: middle frames 5 and 6 positive, 7 and 9 negative; pairs with blue negative
  labels = {(sample.start, tuple(sample.heads[:, 0])): sample.label for sample in source.samples}
  assert labels == {
    (0, (0, 1)): 1,
    (0, (0, 2)): 0,
    (0, (1, 2)): 0,
    # odd frames list blue, green, red: start 1's pairs are blue–green, blue–red, green–red
    (1, (0, 1)): 0,
    (1, (0, 2)): 0,
    (1, (1, 2)): 1,
    (2, (0, 1)): 0,
    (4, (0, 1)): 0,
  }
  # the head indices follow each person through the reordered frames: red is 0 in even frames, 2 then 1 in odd ones
  red_green = source.samples[0]
  np.testing.assert_array_equal(red_green.heads[0], [0, 2, 0, 2, 0, 2, 0, 2, 0, 2])
  np.testing.assert_array_equal(red_green.heads[1], [1] * 10)
  assert len(uco.UcoLaeoSource(uco_root, "val")) == 3 and len(uco.UcoLaeoSource(uco_root, "test")) == 2
  assert len(uco.UcoLaeoSource(uco_root, "val", window=5)) == 8


def test_uco_example_crops_and_maps(uco_root):
  source = uco.UcoLaeoSource(uco_root, "train")
  example = source[0]  # red (left) – green (right), start 0, LAEO
  assert set(example) == {"head_left", "head_right", "head_map", "label"} and example["label"] == 1
  for key in ("head_left", "head_right", "head_map"):
    assert example[key].shape == (10, 64, 64, 3) and example[key].dtype == np.float32
  assert example["label"].dtype == np.int32
  # crops are BGR by default: red is channel 2, green channel 1 (JPEG blurs the colours a little)
  centre = example["head_left"][:, 24:40, 24:40]
  assert centre[..., 2].min() > 0.9 and centre[..., :2].max() < 0.1
  assert example["head_right"][:, 24:40, 24:40, 1].min() > 0.9
  rgb = uco.UcoLaeoSource(uco_root, "train", channel_order="rgb")[0]
  np.testing.assert_array_equal(rgb["head_left"], example["head_left"][..., ::-1])
  # the map: channel 0 (left = red) left of channel 1, blue in channel 2, values in [0, 1]
  head_map = example["head_map"]
  assert head_map.min() >= 0 and head_map.max() <= 1 and head_map[..., 2].max() > 0.5
  columns = np.arange(64)
  centroid = lambda channel: np.sum(head_map[..., channel].sum(1) * columns, -1) / head_map[..., channel].sum((1, 2))
  assert np.all(centroid(0) + 10 < centroid(1))
  # the map is draw_head_map of the annotated boxes / 255; frame 9 lists blue, green, red
  heads = moving_heads_video()["heads"][9]
  np.testing.assert_allclose(head_map[9], draw_head_map(heads[[2, 1]], heads[[0]], (HEIGHT, WIDTH)) / 255, atol=1e-6)
  # start 2: blue leaves after frame 10, so the window's last frame (11) has an empty channel 2
  late = source[6]
  assert late["head_map"][8, ..., 2].max() > 0.5 and late["head_map"][9, ..., 2].max() == 0
  # red–blue: red is left; the right crop is blue (channel 0 in BGR)
  assert source[1]["head_right"][:, 24:40, 24:40, 0].min() > 0.9
  # the still pair of the val video lists green first, but red is right of it
  val_example = uco.UcoLaeoSource(uco_root, "val")[0]
  assert val_example["head_left"][:, 24:40, 24:40, 1].min() > 0.9
  assert val_example["head_right"][:, 24:40, 24:40, 2].min() > 0.9
  # a mean map is subtracted before dividing by 255; one per frame or one for all
  mean = np.full((64, 64, 3), 51.0, np.float32)
  shifted = uco.UcoLaeoSource(uco_root, "train", map_mean=mean)[0]["head_map"]
  np.testing.assert_allclose(shifted, head_map - 0.2, atol=1e-6)
  stacked = uco.UcoLaeoSource(uco_root, "train", map_mean=np.tile(mean, (10, 1, 1)))[0]["head_map"]
  np.testing.assert_array_equal(stacked, shifted)
  batch = grain.MapDataset.source(source).batch(2)[0]
  assert batch["head_map"].shape == (2, 10, 64, 64, 3) and batch["label"].tolist() == [1, 0]


def test_crop_boxes_are_smoothed_over_five_frames():
  rng = np.random.default_rng(0)
  boxes = np.sort(rng.integers(0, 200, size=(10, 4)), axis=1)
  reflected = np.concatenate([boxes[2:0:-1], boxes, boxes[-2:-4:-1]])  # x[2], x[1], x…, x[-2], x[-3]
  expected = [np.sum(reflected[frame : frame + 5], 0) // 5 for frame in range(10)]
  np.testing.assert_array_equal(smooth_boxes(boxes), expected)
  np.testing.assert_array_equal(smooth_boxes(boxes[:4]), boxes[:4])  # shorter than the window: unchanged


def test_uco_errors(uco_root, tmp_path):
  with pytest.raises(DataError, match="annotations_frame is not a folder"):
    uco.UcoLaeo(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match="channel_order"):
    uco.UcoLaeoSource(uco_root, "train", channel_order="brg")
  with pytest.raises(DataError, match="map_mean has shape"):
    uco.UcoLaeoSource(uco_root, "train", map_mean=np.zeros((64, 64)))

  def broken_tree(name: str, edit) -> uco.UcoLaeo:
    root = uco.write_uco_laeo_tree(tmp_path / name, {"got02": still_pair_video()})
    edit(root / "annotations")
    return root

  root = broken_tree("no_heads", lambda annotations: (annotations / "annotations_head" / "got02_heads.txt").unlink())
  with pytest.raises(DataError, match="got02_heads.txt does not exist"):
    uco.UcoLaeoSource(root, "train")

  def corrupt(path, line: int, text: str):
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")

  cases = [
    ("annotations_head/got02_heads.txt", 5, "20 20 49", r"got02_heads.txt line 5: '20 20 49' is not x1 y1 x2 y2"),
    ("annotations_head/got02_heads.txt", 2, "20 20 x 49", r"got02_heads.txt line 2: .* is not x1 y1 x2 y2"),
    ("annotations_head/got02_heads.txt", 2, "49 20 20 49", r"got02_heads.txt line 2: box 49 20 20 49 has x2 < x1"),
    ("annotations_head/got02_heads.txt", 1, "20 20 49 49", r"got02_heads.txt line 1: x1 y1 x2 y2 before the first"),
    ("annotations_pair/pair_got02.txt", 4, "0 2", r"pair_got02.txt line 4: pair 0 2 is not two distinct"),
    ("annotations_pair/pair_got02.txt", 4, "1 3", r"pair_got02.txt frame 1: pair 1 3 names a head"),
    ("annotations_frame/got02.txt", 3, "2 5", r"got02.txt line 3: '2 5' has no label 0, 1 or 9"),
    ("annotations_frame/got02.txt", 3, "2", r"got02.txt line 3: '2' has no label"),
  ]
  for index, (file, line, text, message) in enumerate(cases):
    root = broken_tree(f"case{index}", lambda annotations: corrupt(annotations / file, line, text))
    with pytest.raises(DataError, match=message):
      uco.UcoLaeoSource(root, "train")

  def truncate(path):
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:5]))

  root = broken_tree("short_labels", lambda annotations: truncate(annotations / "annotations_frame/got02.txt"))
  with pytest.raises(DataError, match="head boxes for 12 frames but 5 frame labels"):
    uco.UcoLaeoSource(root, "train")
  root = uco.write_uco_laeo_tree(tmp_path / "no_frame", {"got02": still_pair_video()})
  (root / "frames" / "got02" / "000011.jpg").unlink()
  with pytest.raises(DataError, match="000011.jpg does not exist"):
    uco.UcoLaeoSource(root, "train")
  root = uco.write_uco_laeo_tree(tmp_path / "bad_frame", {"got02": still_pair_video()})
  (root / "frames" / "got02" / "000003.jpg").write_bytes(b"not a jpeg")
  source = uco.UcoLaeoSource(root, "train")
  with pytest.raises(DataError, match="000003.jpg is not a readable image"):
    source[0]
  with pytest.raises(DataError, match="no video of the val split"):
    uco.UcoLaeoSource(root, "val")
  with pytest.raises(IndexError):
    source[len(source)]


def person_box(x1: float, y1: float, x2: float, y2: float):
  """A normalised box on the 160×80 frames."""
  return (x1 / WIDTH, y1 / HEIGHT, (x2 + 1) / WIDTH, (y2 + 1) / HEIGHT)


@pytest.fixture(scope="module")
def ava_files(tmp_path_factory):
  """vidA at 902 s: persons 0 (red, left), 1 (green, right), 2 (blue); vidB at 1000 s: persons 3 (blue), 4 (red)."""
  boxes_a = {0: person_box(10, 10, 39, 69), 1: person_box(110, 10, 139, 69), 2: person_box(60, 20, 79, 59)}
  boxes_b = {3: person_box(20, 10, 49, 69), 4: person_box(100, 10, 129, 69)}
  pixels_a = [[10, 10, 39, 69], [110, 10, 139, 69], [60, 20, 79, 59]]
  pixels_b = [[20, 10, 49, 69], [100, 10, 129, 69]]
  frames_a = draw(np.full((10, HEIGHT, WIDTH, 3), GREY, np.uint8), [pixels_a] * 10, [RED, GREEN, BLUE])
  frames_b = draw(np.full((10, HEIGHT, WIDTH, 3), GREY, np.uint8), [pixels_b] * 10, [BLUE, RED])
  keyframes = [
    {
      "video": "vidA",
      "timestamp": 902,
      "frames": frames_a,
      "boxes": boxes_a,
      "pairs": [(1, 0, 1), (0, 2, 0), (1, 2, 9)],
      "actions": {0: (12, 80, 17)},
    },
    {"video": "vidB", "timestamp": 1000, "frames": frames_b, "boxes": boxes_b, "pairs": [(4, 3, 0)]},
    # a keyframe no LAEO row uses
    {"video": "vidC", "timestamp": 905, "frames": frames_b[:1], "boxes": boxes_b, "pairs": []},
  ]
  return ava.write_ava_laeo_files(tmp_path_factory.mktemp("avalaeo"), keyframes)


def test_ava_join_labels_and_examples(ava_files):
  laeo_csv, ava_csv, frames_root = ava_files
  assert ava_csv.read_text().splitlines()[:3] == [
    "vidA,0902,0.062,0.125,0.250,0.875,12,0",
    "vidA,0902,0.062,0.125,0.250,0.875,80,0",
    "vidA,0902,0.062,0.125,0.250,0.875,17,0",
  ]
  source = ava.AvaLaeoSource(laeo_csv, ava_csv, frames_root)
  assert isinstance(source, RandomAccessSource)
  assert source.samples == [
    ava.AvaLaeoSample("vidA", 902, (1, 0), 1),
    ava.AvaLaeoSample("vidA", 902, (0, 2), 0),
    ava.AvaLaeoSample("vidB", 1000, (4, 3), 0),
  ]
  assert source.num_ambiguous == 1 and set(source.boxes) == {("vidA", 902), ("vidB", 1000)}
  assert sorted(source.boxes["vidA", 902]) == [0, 1, 2]  # three action rows of person 0 are one box
  np.testing.assert_allclose(source.boxes["vidA", 902][0], [0.062, 0.125, 0.25, 0.875])
  example = source[0]
  assert example["label"] == 1 and example["head_map"].shape == (10, 64, 64, 3)
  # person 0 (red) is left although listed second; BGR crops
  assert example["head_left"][:, 28:36, 28:36, 2].min() > 0.9
  assert example["head_right"][:, 28:36, 28:36, 1].min() > 0.9
  # the keyframe's boxes for every frame: one map repeated, the third person (blue) in channel 2
  np.testing.assert_array_equal(example["head_map"], np.broadcast_to(example["head_map"][5], (10, 64, 64, 3)))
  pixels = ava.to_pixels([source.boxes["vidA", 902][person] for person in (0, 1, 2)], (HEIGHT, WIDTH))
  np.testing.assert_allclose(pixels[0], [9.92, 10, 39, 69])
  np.testing.assert_allclose(
    example["head_map"][0], draw_head_map(pixels[:2], pixels[2:], (HEIGHT, WIDTH)) / 255, atol=1e-6
  )
  assert example["head_map"][..., 2].max() > 0.5
  assert source[1]["head_map"][..., 2].max() > 0.5  # person 1 is the other one now
  vid_b = source[2]
  assert vid_b["label"] == 0 and vid_b["head_map"][..., 2].max() == 0  # nobody else at that keyframe
  assert vid_b["head_left"][:, 28:36, 28:36, 0].min() > 0.9  # blue (person 3) is left
  rgb = ava.AvaLaeoSource(laeo_csv, ava_csv, frames_root, channel_order="rgb")[2]
  np.testing.assert_array_equal(rgb["head_left"], vid_b["head_left"][..., ::-1])


def test_ava_errors(ava_files, tmp_path):
  laeo_csv, ava_csv, frames_root = ava_files
  missing_person = tmp_path / "missing.csv"
  missing_person.write_text(laeo_csv.read_text() + "9,vidB,1000,3,7,1\n")
  with pytest.raises(DataError, match=r"missing.csv line 5: person 7 of vidB at 1000 s is not in .*ava_v2.2.csv"):
    ava.AvaLaeoSource(missing_person, ava_csv, frames_root)
  unknown_keyframe = tmp_path / "keyframe.csv"
  unknown_keyframe.write_text("0,vidB,1001,3,4,1\n")
  with pytest.raises(DataError, match="keyframe.csv line 1: person 3 of vidB at 1001 s"):
    ava.AvaLaeoSource(unknown_keyframe, ava_csv, frames_root)
  for index, (row, message) in enumerate(
    [("0,vidA,902,0,1,2", "a label other than 0, 1, 9"), ("0,vidA,902,0,1", "5 fields, not 6")]
  ):
    bad = tmp_path / f"bad{index}.csv"
    bad.write_text(f"{row}\n")
    with pytest.raises(DataError, match=rf"bad{index}.csv line 1: .*{message}"):
      ava.AvaLaeoSource(bad, ava_csv, frames_root)
  bad_ava = tmp_path / "ava.csv"
  bad_ava.write_text(ava_csv.read_text() + "vidA,0902,0.5,0.5,0.2,0.9,12,5\n")
  with pytest.raises(DataError, match=r"ava.csv line 10: .*x2 >= x1"):
    ava.AvaLaeoSource(laeo_csv, bad_ava, frames_root)
  with pytest.raises(DataError, match="nope.csv does not exist"):
    ava.AvaLaeoSource(tmp_path / "nope.csv", ava_csv, frames_root)
  with pytest.raises(DataError, match="is not a folder"):
    ava.AvaLaeoSource(laeo_csv, ava_csv, tmp_path / "frames")
  source = ava.AvaLaeoSource(laeo_csv, ava_csv, frames_root, window=12)
  with pytest.raises(DataError, match="0902/10.jpg does not exist"):
    source[0]
