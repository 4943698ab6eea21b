"""Image–caption pairs with a coherence score, the data CAD trains and validates on (facts §2.4, §2.6–§2.8).

`WebDatasetSource` reads the webdataset shards of CAD's preprocessing (`<key>.jpg`, `<key>.txt`, `<key>.json`, and
optionally `<key>.flan_t5_xl_embeddings.npy` and `<key>.vae_embeddings_<R>.npy`) at random; `ImageFolderSource`
reads a folder of images with a metadata.csv, CAD's validation layout. Coherence is the CLIP cosine, clip_score / 100.
"""

import csv
import io
import json
import pathlib
import re
import tarfile

import numpy as np
from PIL import Image

from storyjax.errors import ConfigError, DataError

T5_WIDTH = 2048  # FLAN-T5-XL hidden size (facts §2.6)
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
T5_EXTENSION = "flan_t5_xl_embeddings.npy"
# webdataset's rule: the key is the member's path up to the first dot of its file name, the rest is the extension.
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_PREPROCESSING = "CAD's preprocessing (cad/data/processing_scripts/preprocess_data.py)"


def square_image(image: Image.Image, resolution: int) -> np.ndarray:
  """(R, R, 3) float32 in [-1, 1]: the centred square of `image` (side min(W, H)), bicubic-resized to R (§1.11)."""
  image = image.convert("RGB")
  width, height = image.size
  side = min(width, height)
  left, top = (width - side) // 2, (height - side) // 2
  image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.Resampling.BICUBIC)
  return np.asarray(image, np.float32) / 127.5 - 1.0


def pad_text_features(features: np.ndarray, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
  """(L, D) unpadded token features → ((T, D) zero-padded or truncated to T = max_tokens, (T,) bool mask of the
  kept tokens): CAD's train collate (facts §2.6)."""
  kept = min(len(features), max_tokens)
  padded = np.zeros((max_tokens, features.shape[1]), np.float32)
  padded[:kept] = features[:kept]
  return padded, np.arange(max_tokens) < kept


def _decode_image(data: bytes, resolution: int, where: str) -> np.ndarray:
  try:
    with Image.open(io.BytesIO(data)) as image:
      return square_image(image, resolution)
  except OSError as error:  # PIL's UnidentifiedImageError and truncated files are OSErrors
    raise DataError(f"{where}: the image cannot be decoded ({error}); re-encode it or remove the sample") from error


def _load_npy(data: bytes, where: str, member: str) -> np.ndarray:
  try:
    return np.load(io.BytesIO(data), allow_pickle=False)
  except (OSError, ValueError) as error:
    raise DataError(
      f"{where}: .{member} is not a .npy array ({error}); write it again with {_PREPROCESSING}"
    ) from error


def _coherence(clip_score, where: str) -> np.float32:
  """clip_score = 100·cos(image, text) → the cosine (facts §2.4)."""
  try:
    return np.float32(float(clip_score) / 100.0)
  except (TypeError, ValueError) as error:
    raise DataError(f"{where}: clip_score={clip_score!r} is not a number; expected 100·cos(image, text)") from error


class WebDatasetSource:
  """Grain random-access source over the samples of every `*.tar` shard in `directory` (shards sorted by name,
  samples in tar order).

  Item: {"image": (R, R, 3) float32 in [-1, 1] (the centred square, bicubic-resized to R = resolution), or with
  use_latents instead "latents": (R/8, R/8, 4) float32 (`<key>.vae_embeddings_<R>.npy`, (4, R/8, R/8) on disk, made
  channels-last; no image is decoded); "caption": str; "coherence": float32 clip_score / 100 from `<key>.json`;
  with use_t5 also "text_features": (max_text_tokens, 2048) float32 and "text_mask": (max_text_tokens,) bool, the
  unpadded `<key>.flan_t5_xl_embeddings.npy` zero-padded or truncated; "key": str}.

  Opening reads every tar header once and keeps the offset and size of each member a sample needs. Reading an item
  opens its shard and seeks once per member; no file stays open, so the source pickles and serves threads and
  processes alike. A sample that lacks a member it needs raises DataError (naming shard and key) when read.
  """

  def __init__(
    self, directory, resolution: int, use_latents: bool = False, use_t5: bool = False, max_text_tokens: int = 256
  ):
    if resolution < 1:
      raise ConfigError(f"resolution={resolution} must be positive.")
    if use_latents and resolution % 8:
      raise ConfigError(f"resolution={resolution} must be a multiple of 8 with use_latents (the VAE downsamples 8×).")
    if max_text_tokens < 1:
      raise ConfigError(f"max_text_tokens={max_text_tokens} must be >= 1 (CAD pads to 256).")
    self.directory = pathlib.Path(directory)
    self.resolution, self.max_text_tokens = resolution, max_text_tokens
    self.use_latents, self.use_t5 = use_latents, use_t5
    self.shards = sorted(self.directory.glob("*.tar")) if self.directory.is_dir() else []
    if not self.shards:
      raise ConfigError(
        f"no webdataset shards (*.tar) in {self.directory}; point the directory at the shards written by "
        f"{_PREPROCESSING}."
      )
    # member → the extensions that can provide it (the first one present in the tar wins)
    self._members = {"txt": ("txt",), "json": ("json",)}
    if use_latents:
      self._members["latents"] = (f"vae_embeddings_{resolution}.npy",)
    else:
      self._members["image"] = IMAGE_EXTENSIONS
    if use_t5:
      self._members["text_features"] = (T5_EXTENSION,)
    # (N,) keys as bytes, (N,) shard, (N, M) offset and size of each member (size -1: absent): about 50 bytes a sample
    indexes = [self._index_shard(shard) for shard in self.shards]
    self._keys = np.concatenate([keys for keys, _, _ in indexes])
    if not len(self._keys):
      raise ConfigError(f"the shards in {self.directory} hold no samples (no `<key>.<extension>` members).")
    self._shard_of = np.concatenate([np.full(len(keys), shard, np.int32) for shard, (keys, _, _) in enumerate(indexes)])
    self._offsets = np.concatenate([offsets for _, offsets, _ in indexes])
    self._sizes = np.concatenate([sizes for _, _, sizes in indexes])

  def _index_shard(self, shard: pathlib.Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n,) bytes keys of `shard`'s samples in tar order, (n, M) int64 offsets and (n, M) int32 sizes of their
    members (-1: absent)."""
    spans = {}
    try:
      with tarfile.open(shard, "r:") as tar:
        for info in tar:
          match = _MEMBER_NAME.match(info.name)
          if not info.isfile() or match is None:
            continue
          key, extension = match.group(1), match.group(2).lower()
          sample = spans.setdefault(key, [-1] * (2 * len(self._members)))
          for position, extensions in enumerate(self._members.values()):
            if extension in extensions and sample[2 * position] < 0:
              sample[2 * position : 2 * position + 2] = info.offset_data, info.size
    except tarfile.TarError as error:
      raise DataError(
        f"{shard} is not a readable uncompressed tar file ({error}); write it again or remove it"
      ) from error
    keys = np.array([key.encode() for key in spans], dtype=bytes)
    offsets_and_sizes = np.array(list(spans.values()), np.int64).reshape(len(spans), len(self._members), 2)
    return keys, offsets_and_sizes[..., 0], offsets_and_sizes[..., 1].astype(np.int32)

  def __len__(self) -> int:
    return len(self._keys)

  def _read_members(self, index: int) -> tuple[str, str, dict[str, bytes]]:
    """(key, "shard, sample key" for messages, {member: its bytes}) of sample `index`: one seek per member."""
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} samples")
    shard = self.shards[self._shard_of[index]]
    key = self._keys[index].decode()
    where = f"{shard}, sample {key!r}"
    missing = [member for member, size in zip(self._members, self._sizes[index]) if size < 0]
    if missing:
      names = {"image": "an image (." + "/.".join(IMAGE_EXTENSIONS) + ")"}
      fixes = [f"re-run {_PREPROCESSING} on this shard", "remove the sample"]
      if "latents" in missing:
        fixes.append("set use_latents=False")
      if "text_features" in missing:
        fixes.append("set use_t5=False")
      raise DataError(
        f"{where} lacks {', '.join(names.get(member, '.' + self._members[member][0]) for member in missing)}; "
        f"{', '.join(fixes[:-1])} or {fixes[-1]}"
      )
    data = {}
    with open(shard, "rb") as file:
      for member, offset, size in zip(self._members, self._offsets[index].tolist(), self._sizes[index].tolist()):
        file.seek(offset)
        data[member] = file.read(size)
        if len(data[member]) != size:
          raise DataError(f"{where}: the shard ends inside .{member}; copy it again")
    return key, where, data

  def __getitem__(self, index: int) -> dict:
    key, where, data = self._read_members(index)
    try:
      metadata = json.loads(data["json"])
      caption = data["txt"].decode("utf-8")
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
      raise DataError(f"{where}: .txt or .json is not UTF-8 text / JSON ({error})") from error
    if not isinstance(metadata, dict) or "clip_score" not in metadata:
      raise DataError(f"{where}: .json has no clip_score; compute it with {_PREPROCESSING} (100·cos, MetaCLIP)")
    item = {"caption": caption, "coherence": _coherence(metadata["clip_score"], where), "key": key}
    if self.use_latents:
      latents = _load_npy(data["latents"], where, self._members["latents"][0])
      expected = (4, self.resolution // 8, self.resolution // 8)
      if latents.shape != expected:
        raise DataError(f"{where}: latents have shape {latents.shape}, expected {expected} (C, H/8, W/8)")
      item["latents"] = latents.transpose(1, 2, 0).astype(np.float32)
    else:
      item["image"] = _decode_image(data["image"], self.resolution, where)
    if self.use_t5:
      features = _load_npy(data["text_features"], where, T5_EXTENSION)
      if features.ndim != 2 or features.shape[1] != T5_WIDTH:
        raise DataError(f"{where}: T5 features have shape {features.shape}, expected (L, {T5_WIDTH}) (FLAN-T5-XL)")
      item["text_features"], item["text_mask"] = pad_text_features(features, self.max_text_tokens)
    return item


class ImageFolderSource:
  """Grain random-access source over `directory/metadata.csv` (columns file_name, text and optionally clip_score)
  and the images it names, beside it: CAD's validation layout.

  Item: {"image": (R, R, 3) float32 in [-1, 1] (the centred square, bicubic-resized to R = resolution),
  "caption": str, "coherence": float32 clip_score / 100, or 1 without a clip_score column (CAD's validation data
  has c = 1, facts §2.4), "key": the file_name}.
  """

  def __init__(self, directory, resolution: int):
    if resolution < 1:
      raise ConfigError(f"resolution={resolution} must be positive.")
    self.directory, self.resolution = pathlib.Path(directory), resolution
    path = self.directory / "metadata.csv"
    if not path.is_file():
      raise ConfigError(
        f"{path} not found; the directory must hold metadata.csv (columns file_name,text[,clip_score]) and the images."
      )
    with path.open(newline="", encoding="utf-8") as file:
      reader = csv.DictReader(file)
      rows = list(reader)
      columns = reader.fieldnames or []
    missing_columns = [column for column in ("file_name", "text") if column not in columns]
    if missing_columns:
      raise DataError(f"{path} has columns {columns}, lacks {missing_columns}; expected file_name,text[,clip_score]")
    if not rows:
      raise DataError(f"{path} lists no images; add rows file_name,text[,clip_score]")
    self.file_names = [row["file_name"] for row in rows]
    self.captions = [row["text"] for row in rows]
    self.coherence = np.array(
      [
        _coherence(row["clip_score"], f"{path}, row {number} ({row['file_name']})") if "clip_score" in columns else 1.0
        for number, row in enumerate(rows, start=2)
      ],
      np.float32,
    )
    absent = [name for name in self.file_names if not (self.directory / name).is_file()]
    if absent:
      raise DataError(f"{len(absent)} images listed in {path} are not in {self.directory}, e.g. {absent[:3]}")

  def __len__(self) -> int:
    return len(self.file_names)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} images")
    name = self.file_names[index]
    image = _decode_image((self.directory / name).read_bytes(), self.resolution, str(self.directory / name))
    return {"image": image, "caption": self.captions[index], "coherence": self.coherence[index], "key": name}
