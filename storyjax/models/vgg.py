"""VGG19's convolutional features (torchvision `vgg19().features[0:30]`) in Flax, channels-last, from a local
checkpoint: the frozen feature network of SCAM's perceptual loss (`losses.perceptual_l1`).

The five outputs are the activations after relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1, i.e. torchvision's
feature slices [0:2], [2:7], [7:12], [12:21], [21:30]. Parameters are named `features_{i}` after torchvision's
`features.{i}` layer index. Write the checkpoint where torch and torchvision are installed:

  import safetensors.torch, torchvision
  state = torchvision.models.vgg19(weights="IMAGENET1K_V1").features.state_dict()
  safetensors.torch.save_file({f"features.{k}": v.contiguous() for k, v in state.items()}, "vgg19.safetensors")
"""

from collections.abc import Sequence
import pathlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import safetensors

from storyjax.errors import ConfigError
from storyjax.layers.conv import conv

Dtype = Any
VGG19_WIDTHS = (64, 128, 256, 512, 512)
# 3×3 convs (each followed by a ReLU) per stage in features[0:30]; a 2×2 max-pool precedes every stage but the
# first, and each stage's first ReLU is one of the five outputs. The rest of stage 5 (features[30:36]) is unused.
CONVS_PER_STAGE = (2, 2, 4, 4, 1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW_TO_GET = (  # one line, as the CLIs print errors; the module docstring has it as three
  "write one where torch and torchvision are installed: import safetensors.torch, torchvision; "
  'state = torchvision.models.vgg19(weights="IMAGENET1K_V1").features.state_dict(); '
  'safetensors.torch.save_file({f"features.{k}": v.contiguous() for k, v in state.items()}, "vgg19.safetensors")'
)


def conv_layers(widths: Sequence[int] = VGG19_WIDTHS) -> list[tuple[int, int, int]]:
  """(torchvision `features` index, input channels, output channels) of the 13 convs in features[0:30]."""
  if len(widths) != len(CONVS_PER_STAGE):
    raise ValueError(f"VGG19 widths must have {len(CONVS_PER_STAGE)} entries (one per stage), got {tuple(widths)}")
  layers, index, channels_in = [], 0, 3
  for stage, width in enumerate(widths):
    index += stage > 0  # the max-pool
    for _ in range(CONVS_PER_STAGE[stage]):
      layers.append((index, channels_in, width))
      index, channels_in = index + 2, width  # the conv and its ReLU
  return layers


class VGG19Features(nn.Module):
  """images (B, H, W, 3) in [−1, 1] → [relu1_1 (B, H, W, w1), relu2_1 (B, H/2, W/2, w2), relu3_1 (B, H/4, W/4, w3),
  relu4_1 (B, H/8, W/8, w4), relu5_1 (B, H/16, W/16, w5)] in `dtype`, sizes floored as torch's MaxPool2d(2).

  SCAM feeds VGG the [−1, 1] images as is (facts B.6); `imagenet_normalise` maps them to [0, 1] and then to
  ImageNet's mean and std first, the usual practice with torchvision's weights.
  """

  widths: Sequence[int] = VGG19_WIDTHS
  imagenet_normalise: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images) -> list:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"VGG19Features expects (B, H, W, 3) channels-last images, got shape {images.shape}")
    hidden = images
    if self.imagenet_normalise:
      hidden = ((hidden + 1) / 2 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    outputs, layers = [], iter(conv_layers(self.widths))
    for stage, num_convs in enumerate(CONVS_PER_STAGE):
      if stage:
        hidden = nn.max_pool(hidden, (2, 2), strides=(2, 2))
      for layer in range(num_convs):
        index, _, width = next(layers)
        hidden = nn.relu(conv(width, (3, 3), dtype=self.dtype, name=f"features_{index}")(hidden))  # "SAME": padding 1
        if layer == 0:
          outputs.append(hidden)
    return outputs


def load_vgg19(
  path, widths: Sequence[int] = VGG19_WIDTHS, imagenet_normalise: bool = False, dtype: Dtype = jnp.float32
) -> tuple[VGG19Features, dict]:
  """A local .safetensors file with torchvision's names (`features.{i}.weight` (O, I, 3, 3), `features.{i}.bias`
  (O,)) → (VGG19Features, {"params": fp32 params}); tensors past features.28 (and classifier.*) are ignored.

  A missing or unreadable file, a missing tensor or a wrong shape is a ConfigError naming the file; HOW_TO_GET
  says how to write the file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConfigError(f"no VGG19 checkpoint at {path} (the file does not exist); {HOW_TO_GET}")
  module = VGG19Features(tuple(widths), imagenet_normalise, dtype)
  params = {}
  try:
    with safetensors.safe_open(str(path), framework="numpy") as checkpoint:
      names = set(checkpoint.keys())
      for index, channels_in, channels_out in conv_layers(widths):
        layer = {}
        for field, name, shape in (
          ("kernel", f"features.{index}.weight", (channels_out, channels_in, 3, 3)),
          ("bias", f"features.{index}.bias", (channels_out,)),
        ):
          if name not in names:
            found = sorted(names)[:3]
            raise ConfigError(
              f"VGG19 checkpoint {path} has no tensor {name} (it holds {len(names)} tensors, e.g. {found}); "
              f'torchvision\'s VGG19 feature tensors prefixed "features." are expected; {HOW_TO_GET}'
            )
          tensor = np.asarray(checkpoint.get_tensor(name), np.float32)
          if tensor.shape != shape:
            raise ConfigError(
              f"VGG19 checkpoint {path} tensor {name} has shape {tensor.shape}, expected {shape} for "
              f"widths={tuple(widths)}; {HOW_TO_GET}"
            )
          layer[field] = tensor.transpose(2, 3, 1, 0) if field == "kernel" else tensor  # OIHW → HWIO
        params[f"features_{index}"] = layer
  except safetensors.SafetensorError as error:
    raise ConfigError(f"{path} is not a readable safetensors file ({error}); {HOW_TO_GET}") from error
  return module, {"params": params}
