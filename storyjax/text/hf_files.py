"""The weight files of a local Hugging Face checkpoint directory, read as numpy (safetensors only, no torch)."""

from collections.abc import Mapping, Sequence
import json
import pathlib

import numpy as np
import safetensors

from storyjax.errors import ConfigError, DataError


def weight_files(path: pathlib.Path, model_name: str, get_checkpoint: str) -> list[pathlib.Path]:
  """The safetensors files of a checkpoint directory: model.safetensors, or the shards its index names.

  A missing shard, PyTorch .bin weights alone, or no weights at all is a ConfigError naming `model_name`'s
  checkpoint and ending with `get_checkpoint`, how to save one.
  """
  if (path / "model.safetensors").is_file():
    return [path / "model.safetensors"]
  index = path / "model.safetensors.index.json"
  if index.is_file():
    files = [path / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
      raise ConfigError(
        f"{model_name} checkpoint {path} lacks the shards {missing} named by {index.name}; {get_checkpoint}"
      )
    return files
  if any(path.glob("pytorch_model*.bin")):
    raise ConfigError(
      f"{model_name} checkpoint {path} has only PyTorch .bin weights; storyjax reads safetensors: re-save it with "
      f"save_pretrained (safetensors is the default), or {get_checkpoint}"
    )
  raise ConfigError(f"no model.safetensors or model.safetensors.index.json in {path}; {get_checkpoint}")


def read_tensors(files: Sequence[pathlib.Path], prefixes: Sequence[str] | None = None) -> dict[str, np.ndarray]:
  """name → tensor of safetensors files, in their stored dtype (bf16 as ml_dtypes.bfloat16); only the names
  starting with one of `prefixes` when given (e.g. a T5ForConditionalGeneration's encoder without its decoder)."""
  state = {}
  for file in files:
    with safetensors.safe_open(str(file), framework="numpy") as handle:
      for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
        if prefixes is None or name.startswith(tuple(prefixes)):
          state[name] = handle.get_tensor(name)
  return state


def checkpoint_tensor(state: Mapping, names: Sequence[str], shape: tuple[int, ...], model_name: str) -> np.ndarray:
  """The first of `names` in `state` as float32 of `shape`; DataError naming `model_name`'s checkpoint when none is
  there or its shape differs."""
  for name in names:
    if name in state:
      tensor = np.asarray(state[name], np.float32)
      if tensor.shape != shape:
        raise DataError(f"{model_name} checkpoint tensor {name} has shape {tensor.shape}, expected {shape}")
      return tensor
  raise DataError(f"{model_name} checkpoint has no tensor {' or '.join(names)}")
