"""Real-data image sources: webdataset shards as CAD's preprocessing writes them, an image folder with metadata.csv,
and TFDS (mocked cifar10, and a tiny cifar10 prepared as array_record by TFDS's own builder, without TensorFlow).

Items are checked against a reference built from what the test wrote (numpy crops, numpy padding), in any order,
from threads and after pickling.
"""

from concurrent.futures import ThreadPoolExecutor
import io
import json
import pickle
import tarfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from storyjax.data.images.captioned import T5_WIDTH, ImageFolderSource, WebDatasetSource
from storyjax.data.images.tfds_images import TfdsImageSource
from storyjax.errors import ConfigError, DataError

RESOLUTION, MAX_TOKENS = 16, 8
# (shard, key, image format, (height, width), number of T5 tokens); shards are written out of name order
SAMPLES = [
  ("b.tar", "s3", "PNG", (48, 64), 1),
  ("a.tar", "s0", "PNG", (24, 40), 3),
  ("a.tar", "s1", "JPEG", (40, 24), 12),
  ("a.tar", "sub/s2", "WEBP", (33, 33), 8),
]
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}


def encoded(image: np.ndarray, image_format: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=image_format)
  return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  np.save(buffer, array)
  return buffer.getvalue()


def write_shard(path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
  with tarfile.open(path, "w") as tar:
    for key, members in samples:
      for extension, data in members.items():
        info = tarfile.TarInfo(f"{key}.{extension}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def reference_image(data: bytes, resolution: int) -> np.ndarray:
  """Centre square by numpy slicing, then PIL's bicubic resize."""
  with Image.open(io.BytesIO(data)) as image:
    pixels = np.asarray(image.convert("RGB"))
  height, width = pixels.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  square = Image.fromarray(pixels[top : top + side, left : left + side])
  return np.asarray(square.resize((resolution, resolution), Image.Resampling.BICUBIC), np.float32) / 127.5 - 1


@pytest.fixture(scope="module")
def webdataset(tmp_path_factory):
  """(directory, {key: reference item at RESOLUTION with t5}, {key: (4, 32, 32) latents}); b.tar ends with a
  sample "broken" that has no .txt."""
  directory = tmp_path_factory.mktemp("webdataset")
  rng = np.random.default_rng(0)
  shards, references, latents = {}, {}, {}
  for shard, key, image_format, size, tokens in SAMPLES:
    image = encoded(rng.integers(0, 256, (*size, 3), dtype=np.uint8), image_format)
    clip_score = float(rng.uniform(10, 40))
    features = rng.normal(size=(tokens, T5_WIDTH)).astype(np.float32)
    latents[key] = rng.normal(size=(4, 32, 32)).astype(np.float32)
    caption = f"caption of {key} ✓"
    members = {
      EXTENSIONS[image_format]: image,
      "txt": caption.encode(),
      "json": json.dumps(
        {"clip_score": clip_score, "aesthetic_score": 5.0, "width": size[1], "height": size[0]}
      ).encode(),
      "flan_t5_xl_embeddings.npy": npy(features),
      "vae_embeddings_256.npy": npy(latents[key]),
    }
    shards.setdefault(shard, []).append((key, members))
    text_features = np.zeros((MAX_TOKENS, T5_WIDTH), np.float32)
    text_features[: min(tokens, MAX_TOKENS)] = features[:MAX_TOKENS]
    references[key] = {
      "image": reference_image(image, RESOLUTION),
      "caption": caption,
      "coherence": np.float32(clip_score / 100),
      "text_features": text_features,
      "text_mask": np.arange(MAX_TOKENS) < tokens,
      "key": key,
    }
  shards["b.tar"].append(("broken", {"png": encoded(np.zeros((8, 8, 3), np.uint8), "PNG"), "json": b"{}"}))
  for shard, samples in shards.items():
    write_shard(directory / shard, samples)
  (directory / "notes.md").write_text("not a shard")
  return directory, references, latents


def assert_items_equal(item, expected):
  assert set(item) == set(expected)
  for name, value in expected.items():
    if isinstance(value, str):
      assert item[name] == value, name
    else:
      assert np.asarray(item[name]).dtype == np.asarray(value).dtype, name
      np.testing.assert_array_equal(item[name], value, err_msg=name)


def test_webdataset_items_match_what_was_written_in_any_order(webdataset):
  directory, references, _ = webdataset
  source = WebDatasetSource(directory, RESOLUTION, use_t5=True, max_text_tokens=MAX_TOKENS)
  keys = ["s0", "s1", "sub/s2", "s3", "broken"]  # shards by name, samples in tar order
  assert len(source) == len(keys)
  sequential = [source[index] for index in range(len(keys) - 1)]
  for item, key in zip(sequential, keys):
    assert_items_equal(item, references[key])
  order = [3, 0, 2, 1, 2, 3]
  with ThreadPoolExecutor(4) as pool:
    for index, item in zip(order, pool.map(source.__getitem__, order)):
      assert_items_equal(item, sequential[index])
  restored = pickle.loads(pickle.dumps(source))
  for index in order:
    assert_items_equal(restored[index], sequential[index])
  with pytest.raises(DataError, match=r"b\.tar, sample 'broken' lacks \.txt"):
    source[4]
  with pytest.raises(IndexError):
    source[5]


def test_webdataset_without_t5_reads_no_text_features(webdataset):
  directory, references, _ = webdataset
  item = WebDatasetSource(directory, RESOLUTION)[0]
  assert_items_equal(item, {name: references["s0"][name] for name in ("image", "caption", "coherence", "key")})


def test_webdataset_latents_are_channels_last(webdataset):
  directory, references, latents = webdataset
  source = WebDatasetSource(directory, 256, use_latents=True)
  for index, key in enumerate(["s0", "s1", "sub/s2", "s3"]):
    item = source[index]
    assert set(item) == {"latents", "caption", "coherence", "key"}
    assert item["latents"].shape == (32, 32, 4)
    np.testing.assert_array_equal(item["latents"], np.moveaxis(latents[key], 0, -1))
    assert item["coherence"] == references[key]["coherence"]
  with pytest.raises(DataError, match=r"'s0' lacks \.vae_embeddings_512\.npy.*use_latents=False"):
    WebDatasetSource(directory, 512, use_latents=True)[0]


def test_centre_crop_and_bicubic_resize_on_hand_made_images(tmp_path):
  red, green, blue = (255, 0, 0), (0, 255, 0), (0, 0, 255)
  bands = np.zeros((20, 60, 3), np.uint8)  # red | green | blue thirds: the centre square is all green
  bands[:, :20], bands[:, 20:40], bands[:, 40:] = red, green, blue
  halves = np.zeros((40, 20, 3), np.uint8)  # tall: top half red, bottom half blue; the square is rows 10..29
  halves[:20], halves[20:] = red, blue
  clip = json.dumps({"clip_score": 30.0}).encode()
  write_shard(
    tmp_path / "shard.tar",
    [
      (name, {"png": encoded(image, "PNG"), "txt": b"x", "json": clip}) for name, image in [("b", bands), ("h", halves)]
    ],
  )
  source = WebDatasetSource(tmp_path, 10)
  np.testing.assert_array_equal(source[0]["image"], np.broadcast_to(np.float32([-1, 1, -1]), (10, 10, 3)))
  image = source[1]["image"]
  # halving: bicubic reads 4 pixels either side, so rows 0..2 see only red and rows 7..9 only blue
  np.testing.assert_array_equal(image[:3], np.broadcast_to(np.float32([1, -1, -1]), (3, 10, 3)))
  np.testing.assert_array_equal(image[7:], np.broadcast_to(np.float32([-1, -1, 1]), (3, 10, 3)))
  np.testing.assert_array_equal(image[::-1, :, 0], image[:, :, 2])  # the crop is centred: red and blue mirror


def test_webdataset_errors(tmp_path, webdataset):
  with pytest.raises(ConfigError, match="missing"):
    WebDatasetSource(tmp_path / "missing", RESOLUTION)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConfigError, match=r"no webdataset shards \(\*\.tar\) in .*empty"):
    WebDatasetSource(tmp_path / "empty", RESOLUTION)
  with pytest.raises(ConfigError, match="multiple of 8"):
    WebDatasetSource(webdataset[0], 20, use_latents=True)
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "0.tar").write_bytes(b"not a tar file" * 100)
  with pytest.raises(DataError, match=r"0\.tar is not a readable uncompressed tar"):
    WebDatasetSource(tmp_path / "bad", RESOLUTION)
  image = encoded(np.zeros((8, 8, 3), np.uint8), "PNG")
  write_shard(
    tmp_path / "shard.tar",
    [
      ("no_score", {"png": image, "txt": b"x", "json": b'{"aesthetic_score": 6}'}),
      ("no_t5", {"png": image, "txt": b"x", "json": b'{"clip_score": 20}'}),
      ("bad_image", {"jpg": b"not a jpeg", "txt": b"x", "json": b'{"clip_score": 20}'}),
    ],
  )
  source = WebDatasetSource(tmp_path, RESOLUTION, use_t5=True)
  with pytest.raises(DataError, match=r"shard\.tar, sample 'no_score': \.json has no clip_score"):
    WebDatasetSource(tmp_path, RESOLUTION)[0]
  with pytest.raises(DataError, match=r"'no_t5' lacks \.flan_t5_xl_embeddings\.npy.*use_t5=False"):
    source[1]
  with pytest.raises(DataError, match="'bad_image': the image cannot be decoded"):
    WebDatasetSource(tmp_path, RESOLUTION)[2]


def test_image_folder(tmp_path):
  rng = np.random.default_rng(1)
  images = {"a.png": rng.integers(0, 256, (20, 30, 3), np.uint8), "b.jpg": rng.integers(0, 256, (30, 20, 3), np.uint8)}
  for name, image in images.items():
    Image.fromarray(image).save(tmp_path / name)
  (tmp_path / "metadata.csv").write_text('file_name,text\na.png,"a cat, sitting"\nb.jpg,a dog\n', encoding="utf-8")
  source = ImageFolderSource(tmp_path, RESOLUTION)
  assert len(source) == 2
  item = pickle.loads(pickle.dumps(source))[1]
  expected = reference_image((tmp_path / "b.jpg").read_bytes(), RESOLUTION)
  assert_items_equal(item, {"image": expected, "caption": "a dog", "coherence": np.float32(1), "key": "b.jpg"})
  assert source[0]["caption"] == "a cat, sitting"
  (tmp_path / "metadata.csv").write_text("file_name,text,clip_score\na.png,a cat,25.5\n", encoding="utf-8")
  assert ImageFolderSource(tmp_path, RESOLUTION)[0]["coherence"] == np.float32(0.255)
  (tmp_path / "metadata.csv").write_text("file_name,text\nc.png,missing\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"1 images listed in .*metadata\.csv are not in .*\['c\.png'\]"):
    ImageFolderSource(tmp_path, RESOLUTION)
  (tmp_path / "metadata.csv").write_text("file_name,caption\na.png,a cat\n", encoding="utf-8")
  with pytest.raises(DataError, match=r"lacks \['text'\]"):
    ImageFolderSource(tmp_path, RESOLUTION)
  with pytest.raises(ConfigError, match=r"nowhere.metadata\.csv not found"):
    ImageFolderSource(tmp_path / "nowhere", RESOLUTION)


def test_tfds_cifar10_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    source = TfdsImageSource("cifar10", "train", tmp_path)
    records = tfds.data_source("cifar10", split="train", data_dir=str(tmp_path), download=False)
    assert len(source) == 5
    for index in [4, 0, 2]:
      item = source[index]
      assert item["image"].dtype == np.float32 and item["image"].shape == (32, 32, 3)
      np.testing.assert_array_equal(item["image"], records[index]["image"] / np.float32(127.5) - 1)
      assert item["label"].dtype == np.int32 and item["label"] == records[index]["label"]
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(source))[3]["image"], source[3]["image"])
    resized = TfdsImageSource("cifar10", "train", tmp_path, image_size=8)[1]["image"]
    square = Image.fromarray(records[1]["image"]).resize((8, 8), Image.Resampling.BICUBIC)  # CIFAR is square
    np.testing.assert_array_equal(resized, np.asarray(square, np.float32) / 127.5 - 1)
    grey = TfdsImageSource("mnist", "train", tmp_path)[0]["image"]  # (28, 28, 1) in TFDS
    assert grey.shape == (28, 28, 3)
    np.testing.assert_array_equal(grey[..., 1:], grey[..., :1].repeat(2, axis=-1))


@pytest.fixture(scope="module")
def prepared_cifar10(tmp_path_factory):
  """A data_dir with cifar10/3.0.2 in array_record, written by TFDS's Cifar10 builder from 6 train and 3 test
  constant images (colour 20·label); images go in as PNG bytes, so TFDS needs no TensorFlow to encode them."""
  data_dir = tmp_path_factory.mktemp("tfds")

  def examples(split, count):
    for index in range(count):
      image = encoded(np.full((32, 32, 3), 20 * index, np.uint8), "PNG")
      yield f"{split}_{index}", {"id": f"{split}_{index}", "image": image, "label": index}

  with tfds.core.registered.skip_registration():

    class Cifar10(tfds.image_classification.Cifar10):
      def _split_generators(self, dl_manager):
        return {"train": examples("train", 6), "test": examples("test", 3)}

  config = tfds.download.DownloadConfig(try_download_gcs=False)
  Cifar10(data_dir=str(data_dir), file_format="array_record").download_and_prepare(download_config=config)
  return data_dir


def test_tfds_prepared_array_record(prepared_cifar10, tmp_path):
  source = TfdsImageSource("cifar10", "train", prepared_cifar10)
  items = [source[index] for index in range(len(source))]
  assert sorted(int(item["label"]) for item in items) == list(range(6))
  for item in items:
    np.testing.assert_array_equal(
      item["image"], np.full((32, 32, 3), 20 * item["label"], np.uint8) / np.float32(127.5) - 1
    )
  restored = pickle.loads(pickle.dumps(source))
  assert [int(restored[index]["label"]) for index in range(6)] == [int(item["label"]) for item in items]
  resized = TfdsImageSource("cifar10", "test", prepared_cifar10, image_size=12)
  assert len(resized) == 3
  for index in range(3):
    item = resized[index]
    np.testing.assert_array_equal(
      item["image"], np.full((12, 12, 3), 20 * item["label"], np.uint8) / np.float32(127.5) - 1
    )
  with pytest.raises(ConfigError, match=r"split='validation'.*Unknown split"):
    TfdsImageSource("cifar10", "validation", prepared_cifar10)
  with pytest.raises(ConfigError, match=rf"not prepared as array_record in {tmp_path}.*tfds build cifar10 --data_dir="):
    TfdsImageSource("cifar10", "train", tmp_path)
  with pytest.raises(ConfigError, match="knows no dataset 'no_such_dataset'"):
    TfdsImageSource("no_such_dataset", "train", tmp_path)
