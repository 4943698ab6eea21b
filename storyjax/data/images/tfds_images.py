"""Class-labelled images from a prepared TFDS directory (e.g. CIFAR-10 for class-conditional RIN), read at random
from its array_record files through `tfds.data_source`: reading needs no TensorFlow (preparing the images does)."""

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from storyjax.data.images.captioned import square_image
from storyjax.errors import ConfigError


class TfdsImageSource:
  """Grain random-access source over split `split` of the TFDS dataset `name` prepared (as array_record) in
  `data_dir`; nothing is downloaded.

  Item: {"image": (H, W, 3) float32 in [-1, 1] (grey images repeated to 3 channels; with image_size = S the
  centred square, bicubic-resized to (S, S, 3)), "label": int32 class}.
  """

  def __init__(self, name: str, split: str, data_dir, image_size: int | None = None):
    if image_size is not None and image_size < 1:
      raise ConfigError(f"image_size={image_size} must be positive (or None to keep the stored size).")
    self.name, self.split, self.data_dir, self.image_size = name, split, str(data_dir), image_size
    try:
      self._records = tfds.data_source(name, split=split, data_dir=self.data_dir, download=False)
    except tfds.core.DatasetNotFoundError as error:
      raise ConfigError(
        f"TFDS knows no dataset {name!r} and none is prepared in {self.data_dir}; check the name against "
        f"`tfds.list_builders()`"
      ) from error
    except NotImplementedError as error:  # TFDS's answer when data_dir holds no array_record files of the dataset
      raise ConfigError(
        f"TFDS dataset {name!r} is not prepared as array_record in {self.data_dir}; prepare it on a machine with "
        f"internet and TensorFlow (`pip install tensorflow tensorflow-datasets`) with `tfds build {name} "
        f"--data_dir={self.data_dir} --file_format=array_record`, then copy that directory here"
      ) from error
    except ValueError as error:  # an unknown split, or a split slice out of range
      raise ConfigError(f"TFDS dataset {name!r} in {self.data_dir}, split={split!r}: {error}") from error
    features = self._records.dataset_info.features
    if "image" not in features or "label" not in features:
      raise ConfigError(
        f"TFDS dataset {name!r} has features {list(features)}; TfdsImageSource reads class-labelled ones with "
        f"'image' and 'label'."
      )

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} images")
    record = self._records[index]
    image = np.asarray(record["image"])
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    if self.image_size is None:
      image = image.astype(np.float32) / 127.5 - 1.0
    else:
      image = square_image(Image.fromarray(image), self.image_size)
    return {"image": image, "label": np.int32(record["label"])}
