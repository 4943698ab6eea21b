"""SD VAE: a tiny random diffusers-layout checkpoint, our encode/decode against a plain NCHW numpy forward, loader
errors, and the latent-caching command on two tiny webdataset shards."""

import io
import json
import pathlib
import subprocess
import sys
import tarfile

import chex
import numpy as np
import PIL.Image
import pytest
import safetensors.numpy

from configs.cad import get_config as cad_config
from storyjax.data.images.cache_latents import cache_latents, preprocess_image
from storyjax.errors import ConfigError, DataError
from storyjax.models.sd_vae import load_sd_vae
from storyjax.tasks import rin as rin_task

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fast_compile")

SCALING_FACTOR = 0.13025  # SDXL's, so that reading it from config.json (not the 0.18215 default) is tested
CONFIG = {
  "_class_name": "AutoencoderKL",
  "act_fn": "silu",
  "block_out_channels": [8, 16],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
  "in_channels": 3,
  "out_channels": 3,
  "latent_channels": 4,
  "layers_per_block": 1,
  "norm_num_groups": 4,
  "sample_size": 16,
  "scaling_factor": SCALING_FACTOR,
}
LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _random_state(rng) -> dict[str, np.ndarray]:
  """Every AutoencoderKL tensor of CONFIG, diffusers names and torch layouts, at scales that keep activations O(1)."""
  state = {}
  normal = lambda scale, *shape: rng.normal(0, scale, shape).astype(np.float32)

  def conv(name, channels_in, channels_out, size):
    state[f"{name}.weight"] = normal((channels_in * size * size) ** -0.5, channels_out, channels_in, size, size)
    state[f"{name}.bias"] = normal(0.1, channels_out)

  def norm(name, channels):
    state[f"{name}.weight"], state[f"{name}.bias"] = 1 + normal(0.2, channels), normal(0.2, channels)

  def resnet(name, channels_in, channels_out):
    norm(f"{name}.norm1", channels_in)
    conv(f"{name}.conv1", channels_in, channels_out, 3)
    norm(f"{name}.norm2", channels_out)
    conv(f"{name}.conv2", channels_out, channels_out, 3)
    if channels_in != channels_out:
      conv(f"{name}.conv_shortcut", channels_in, channels_out, 1)

  def mid_block(name, channels):
    resnet(f"{name}.resnets.0", channels, channels)
    norm(f"{name}.attentions.0.group_norm", channels)
    for projection in ("to_q", "to_k", "to_v", "to_out.0"):
      state[f"{name}.attentions.0.{projection}.weight"] = normal(channels**-0.5 * 2, channels, channels)
      state[f"{name}.attentions.0.{projection}.bias"] = normal(0.1, channels)
    resnet(f"{name}.resnets.1", channels, channels)

  latent, (narrow, wide) = CONFIG["latent_channels"], CONFIG["block_out_channels"]
  conv("encoder.conv_in", 3, narrow, 3)
  resnet("encoder.down_blocks.0.resnets.0", narrow, narrow)
  conv("encoder.down_blocks.0.downsamplers.0.conv", narrow, narrow, 3)
  resnet("encoder.down_blocks.1.resnets.0", narrow, wide)
  mid_block("encoder.mid_block", wide)
  norm("encoder.conv_norm_out", wide)
  conv("encoder.conv_out", wide, 2 * latent, 3)
  conv("quant_conv", 2 * latent, 2 * latent, 1)
  conv("post_quant_conv", latent, latent, 1)
  conv("decoder.conv_in", latent, wide, 3)
  mid_block("decoder.mid_block", wide)
  for layer in range(2):
    resnet(f"decoder.up_blocks.0.resnets.{layer}", wide, wide)
  conv("decoder.up_blocks.0.upsamplers.0.conv", wide, wide, 3)
  resnet("decoder.up_blocks.1.resnets.0", wide, narrow)
  resnet("decoder.up_blocks.1.resnets.1", narrow, narrow)
  norm("decoder.conv_norm_out", narrow)
  conv("decoder.conv_out", narrow, 3, 3)
  return state


def _legacy_names(state: dict) -> dict:
  """The same tensors under the attention names of checkpoints saved before diffusers renamed them."""
  renamed = {}
  for name, tensor in state.items():
    for new, old in LEGACY_ATTENTION.items():
      name = name.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
    renamed[name] = tensor
  return renamed


def write_checkpoint(path: pathlib.Path, state: dict, config: dict = CONFIG) -> pathlib.Path:
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps(config))
  safetensors.numpy.save_file(state, str(path / "diffusion_pytorch_model.safetensors"))
  return path


# The reference: diffusers' AutoencoderKL written out in float64 numpy, NCHW, from its equations.


def _conv(x, state, name, stride=1, padding=((1, 1), (1, 1))):
  """torch Conv2d (cross-correlation) of x (B, C, H, W) with `name`.weight (O, I, kh, kw) and .bias (O,)."""
  weight, bias = state[f"{name}.weight"].astype(np.float64), state[f"{name}.bias"].astype(np.float64)
  x = np.pad(x, ((0, 0), (0, 0), *padding))
  size = weight.shape[-1]
  height, width = (x.shape[2] - size) // stride + 1, (x.shape[3] - size) // stride + 1
  out = np.zeros((x.shape[0], weight.shape[0], height, width)) + bias[None, :, None, None]
  for row in range(size):
    for col in range(size):
      window = x[:, :, row : row + stride * (height - 1) + 1 : stride, col : col + stride * (width - 1) + 1 : stride]
      out += np.einsum("bchw,oc->bohw", window, weight[:, :, row, col])
  return out


def _group_norm(x, state, name):
  groups = x.reshape(x.shape[0], CONFIG["norm_num_groups"], -1)
  normed = (groups - groups.mean(-1, keepdims=True)) / np.sqrt(groups.var(-1, keepdims=True) + 1e-6)
  weight, bias = state[f"{name}.weight"], state[f"{name}.bias"]
  return normed.reshape(x.shape) * weight[None, :, None, None] + bias[None, :, None, None]


def _silu(x):
  return x / (1 + np.exp(-x))


def _resnet(x, state, name):
  hidden = _conv(_silu(_group_norm(x, state, f"{name}.norm1")), state, f"{name}.conv1")
  hidden = _conv(_silu(_group_norm(hidden, state, f"{name}.norm2")), state, f"{name}.conv2")
  if f"{name}.conv_shortcut.weight" in state:
    x = _conv(x, state, f"{name}.conv_shortcut", padding=((0, 0), (0, 0)))
  return x + hidden


def _mid_block(x, state, name):
  x = _resnet(x, state, f"{name}.resnets.0")
  batch, channels = x.shape[:2]
  attention = f"{name}.attentions.0"
  tokens = _group_norm(x, state, f"{attention}.group_norm").reshape(batch, channels, -1).transpose(0, 2, 1)
  linear = lambda inputs, projection: (
    inputs @ state[f"{attention}.{projection}.weight"].T + state[f"{attention}.{projection}.bias"]
  )
  query, key, value = (linear(tokens, projection) for projection in ("to_q", "to_k", "to_v"))
  logits = query @ key.transpose(0, 2, 1) / np.sqrt(channels)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  attended = linear(weights @ value, "to_out.0")
  x = x + attended.transpose(0, 2, 1).reshape(x.shape)
  return _resnet(x, state, f"{name}.resnets.1")


def numpy_encode(state, images):
  """images (B, H, W, 3) → latent_dist.mean × SCALING_FACTOR, (B, H/2, W/2, 4)."""
  x = _conv(images.transpose(0, 3, 1, 2).astype(np.float64), state, "encoder.conv_in")
  x = _resnet(x, state, "encoder.down_blocks.0.resnets.0")
  x = _conv(x, state, "encoder.down_blocks.0.downsamplers.0.conv", stride=2, padding=((0, 1), (0, 1)))
  x = _resnet(x, state, "encoder.down_blocks.1.resnets.0")
  x = _mid_block(x, state, "encoder.mid_block")
  x = _conv(_silu(_group_norm(x, state, "encoder.conv_norm_out")), state, "encoder.conv_out")
  moments = _conv(x, state, "quant_conv", padding=((0, 0), (0, 0)))
  return moments[:, : CONFIG["latent_channels"]].transpose(0, 2, 3, 1) * SCALING_FACTOR


def numpy_decode(state, latents):
  """scaled latents (B, h, w, 4) → images (B, 2h, 2w, 3)."""
  x = latents.transpose(0, 3, 1, 2).astype(np.float64) / SCALING_FACTOR
  x = _conv(x, state, "post_quant_conv", padding=((0, 0), (0, 0)))
  x = _mid_block(_conv(x, state, "decoder.conv_in"), state, "decoder.mid_block")
  for block in range(2):
    for layer in range(2):
      x = _resnet(x, state, f"decoder.up_blocks.{block}.resnets.{layer}")
    if block == 0:
      x = _conv(x.repeat(2, axis=2).repeat(2, axis=3), state, "decoder.up_blocks.0.upsamplers.0.conv")
  x = _conv(_silu(_group_norm(x, state, "decoder.conv_norm_out")), state, "decoder.conv_out")
  return x.transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  state = _random_state(np.random.default_rng(0))
  path = write_checkpoint(tmp_path_factory.mktemp("sd_vae"), state)
  return path, state, load_sd_vae(path)


def test_encode_and_decode_match_numpy(checkpoint):
  _path, state, vae = checkpoint
  images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
  latents = np.asarray(vae.encode(images))
  reference = numpy_encode(state, images)
  assert latents.shape == (2, 8, 8, 4) and vae.downsampling_factor == 2 and reference.std() > 0.05
  np.testing.assert_allclose(latents, reference, atol=1e-4, rtol=1e-4)
  decoded = np.asarray(vae.decode(latents))
  reference = numpy_decode(state, latents)
  assert decoded.shape == (2, 16, 16, 3) and reference.std() > 0.1
  np.testing.assert_allclose(decoded, reference, atol=1e-4, rtol=1e-4)


def _latent_cad_task(**model):
  config = cad_config("smoke")
  config.data.update({"channels": 4, "source": "webdataset", "path": "unused", "image_size": 4})
  config.model.update(model)
  return rin_task.Task(config)


def test_sampled_latents_are_decoded_into_pngs(checkpoint, tmp_path):
  path, state, _vae = checkpoint
  latents = np.random.default_rng(2).normal(0, 1, (3, 4, 4, 4)).astype(np.float32)
  expected = numpy_decode(state, latents)  # (3, 8, 8, 3)
  _latent_cad_task(vae_path=str(path)).save_samples({"image": latents}, tmp_path)
  pixels = [np.asarray(PIL.Image.open(tmp_path / f"sample_{index:03d}.png")) for index in range(3)]
  # save_image_grid frames each image with a 1-pixel border and maps [−1, 1] to 0…255
  decoded = np.stack(pixels)[:, 1:-1, 1:-1].astype(np.float32) / 127.5 - 1
  assert decoded.shape == (3, 8, 8, 3) and expected.std() > 0.1
  np.testing.assert_allclose(decoded, np.clip(expected, -1, 1), atol=1.5 / 127.5)
  assert (tmp_path / "grid.png").is_file()
  undecoded = tmp_path / "undecoded"
  undecoded.mkdir()
  _latent_cad_task().save_samples({"image": latents}, undecoded)  # no VAE: the latents stay in samples.npz only
  assert not list(undecoded.iterdir())
  rgb = cad_config("smoke")
  rgb.model.vae_path = str(path)
  with pytest.raises(ConfigError, match=r"model.vae_path is set but data.channels=3"):
    rin_task.Task(rgb)


def test_legacy_attention_names_and_default_scaling_factor(checkpoint, tmp_path):
  _path, state, vae = checkpoint
  config = {name: value for name, value in CONFIG.items() if name != "scaling_factor"}
  legacy = load_sd_vae(write_checkpoint(tmp_path, _legacy_names(state), config))
  assert "encoder.mid_block.attentions.0.proj_attn.weight" in _legacy_names(state)
  assert legacy.scaling_factor == 0.18215  # diffusers' default, SD-1.5's
  chex.assert_trees_all_equal(legacy.params, vae.params)  # the same network, so the same encode and decode


def test_checkpoint_errors_name_the_problem(checkpoint, tmp_path):
  _path, state, vae = checkpoint
  with pytest.raises(
    ConfigError, match=f"no Stable Diffusion VAE checkpoint at {tmp_path / 'absent'}.*save_pretrained"
  ):
    load_sd_vae(tmp_path / "absent")
  (tmp_path / "config.json").write_text(json.dumps(CONFIG))
  with pytest.raises(ConfigError, match="missing diffusion_pytorch_model.safetensors"):
    load_sd_vae(tmp_path)
  (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
  with pytest.raises(ConfigError, match="diffusion_pytorch_model.safetensors is not a readable safetensors file"):
    load_sd_vae(tmp_path)
  (tmp_path / "config.json").write_text("{")
  with pytest.raises(ConfigError, match="config.json is not valid JSON"):
    load_sd_vae(tmp_path)
  name = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
  with pytest.raises(ConfigError, match=rf"{name} has shape \(3, 3\), expected \(8, 16, 1, 1\)"):
    load_sd_vae(write_checkpoint(tmp_path / "wrong_shape", {**state, name: np.zeros((3, 3), np.float32)}))
  incomplete = {key: tensor for key, tensor in state.items() if key != "encoder.mid_block.attentions.0.to_k.bias"}
  with pytest.raises(ConfigError, match=r"no tensor encoder.mid_block.attentions.0.to_k.bias \(or .*key.bias\)"):
    load_sd_vae(write_checkpoint(tmp_path / "incomplete", incomplete))
  extra = {**state, "encoder.down_blocks.0.resnets.1.norm1.weight": np.ones(8, np.float32)}
  with pytest.raises(ConfigError, match=r"\['encoder.down_blocks.0.resnets.1.norm1.weight'\] .* config does not"):
    load_sd_vae(write_checkpoint(tmp_path / "extra", extra))
  for change, message in (
    ({"up_block_types": ["UpDecoderBlock2D"]}, r"up_block_types=\['UpDecoderBlock2D'\]; expected 2 ×"),
    ({"shift_factor": 0.1159}, r"sets \{'shift_factor': 0.1159\}"),
    ({"norm_num_groups": 3}, "not all divisible by norm_num_groups=3"),
    ({"_class_name": "AutoencoderTiny"}, "describes 'AutoencoderTiny', not an AutoencoderKL"),
  ):
    with pytest.raises(ConfigError, match=message):
      load_sd_vae(write_checkpoint(tmp_path / "config", state, {**CONFIG, **change}))
  with pytest.raises(ValueError, match=r"images must be \(B, H, W, 3\) channels-last, got shape \(1, 3, 16, 16\)"):
    vae.encode(np.zeros((1, 3, 16, 16), np.float32))


def test_preprocessing_crops_the_centre_and_normalises():
  pixels = np.random.default_rng(4).integers(0, 256, (16, 24, 3), np.uint8)  # (H, W, 3): 4 columns cut each side
  np.testing.assert_allclose(preprocess_image(PIL.Image.fromarray(pixels), 16), pixels[:, 4:20] / 127.5 - 1, atol=1e-6)
  tall = PIL.Image.fromarray(pixels.transpose(1, 0, 2)).convert("L")  # 24 high: 4 rows cut each side, grey → RGB
  expected = np.repeat(np.asarray(tall)[4:20, :, None], 3, axis=2) / 127.5 - 1
  np.testing.assert_allclose(preprocess_image(tall, 16), expected, atol=1e-6)
  resized = preprocess_image(PIL.Image.fromarray(np.full((40, 60, 3), 255, np.uint8)), 16)
  assert resized.shape == (16, 16, 3) and resized.dtype == np.float32 and np.allclose(resized, 1)


def _image_bytes(rng, height, width, image_format):
  buffer = io.BytesIO()
  PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(buffer, image_format)
  return buffer.getvalue()


def _write_shard(path, samples):
  with tarfile.open(path, "w") as tar:
    for key, members in samples:
      for extension, data in members.items():
        info = tarfile.TarInfo(f"{key}.{extension}")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _read_shard(path) -> dict[str, bytes]:
  with tarfile.open(path) as tar:
    return {info.name: tar.extractfile(info).read() for info in tar}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """Two shards as CAD writes them: 5 samples (PNG and JPG, non-square, one too small for resolution 16)."""
  rng = np.random.default_rng(5)
  sample = lambda key, height, width, image_format, extension: (
    key,
    {
      extension: _image_bytes(rng, height, width, image_format),
      "txt": f"caption {key}".encode(),
      "json": json.dumps({"clip_score": 0.3, "width": width, "height": height}).encode(),
    },
  )
  samples = [
    sample("000000", 24, 20, "PNG", "png"),
    sample("000001", 16, 16, "JPEG", "jpg"),
    sample("000002", 12, 20, "PNG", "png"),
    sample("000003", 18, 30, "JPEG", "jpg"),
    sample("000004", 32, 32, "PNG", "png"),
  ]
  stale = io.BytesIO()
  np.save(stale, np.zeros((4, 8, 8), np.float32))
  samples[4][1]["vae_embeddings_16.npy"] = stale.getvalue()  # an older latent of this resolution: replaced
  directory = tmp_path_factory.mktemp("shards")
  _write_shard(directory / "shard-000000.tar", samples[:3])
  _write_shard(directory / "shard-000001.tar", samples[3:])
  return directory, dict(samples)


def test_cache_latents_adds_the_encoded_image_to_every_large_enough_sample(checkpoint, shards, tmp_path):
  _path, _state, vae = checkpoint
  directory, samples = shards
  summary = cache_latents(vae, directory, tmp_path / "out", resolution=16, batch_size=2)
  assert summary == {"shards_written": 2, "shards_already_there": 0, "samples_written": 4, "samples_too_small": 1}
  written = {**_read_shard(tmp_path / "out" / "shard-000000.tar"), **_read_shard(tmp_path / "out" / "shard-000001.tar")}
  expected_names = []
  for key in ("000000", "000001", "000003", "000004"):
    originals = {ext: data for ext, data in samples[key].items() if ext != "vae_embeddings_16.npy"}
    expected_names += [f"{key}.{ext}" for ext in originals] + [f"{key}.vae_embeddings_16.npy"]
    for ext, data in originals.items():
      assert written[f"{key}.{ext}"] == data
  assert list(written) == expected_names  # sample and member order kept, the small sample 000002 dropped
  keys = ("000000", "000001", "000003", "000004")
  images = [
    preprocess_image(PIL.Image.open(io.BytesIO(samples[key].get("png") or samples[key]["jpg"])), 16) for key in keys
  ]
  expected = (
    np.asarray(vae.encode(np.stack(images[:2]))).tolist() + np.asarray(vae.encode(np.stack(images[2:]))).tolist()
  )
  for key, latent in zip(keys, expected):
    stored = np.load(io.BytesIO(written[f"{key}.vae_embeddings_16.npy"]))
    assert stored.dtype == np.float32 and stored.shape == (4, 8, 8)  # channels-first, as CAD's torch code stores it
    np.testing.assert_allclose(stored, np.transpose(latent, (2, 0, 1)), atol=1e-5)
  again = cache_latents(vae, directory, tmp_path / "out", resolution=16, batch_size=2)
  assert again == {"shards_written": 0, "shards_already_there": 2, "samples_written": 0, "samples_too_small": 0}


def test_cache_latents_input_errors(checkpoint, shards, tmp_path):
  _path, _state, vae = checkpoint
  directory, _samples = shards
  for arguments, message in (
    ((tmp_path / "absent", tmp_path / "out"), "is not a directory"),
    ((tmp_path, tmp_path / "out"), r"no webdataset shards \(\*.tar\)"),
    ((directory, directory), "is --input"),
    ((directory, tmp_path / "out", 15), "--resolution=15 must be a positive multiple of the VAE's downsampling 2"),
  ):
    with pytest.raises(ConfigError, match=message):
      cache_latents(vae, *arguments)
  broken = tmp_path / "broken"
  broken.mkdir()
  _write_shard(broken / "a.tar", [("000000", {"jpg": b"not a jpeg", "txt": b"caption"})])
  with pytest.raises(DataError, match=r"a.tar: 000000.jpg is not a readable image"):
    cache_latents(vae, broken, tmp_path / "broken_out", resolution=16)
  _write_shard(broken / "a.tar", [("000000", {"txt": b"caption"})])
  with pytest.raises(DataError, match=r"sample '000000' has no image .* it has 000000.txt"):
    cache_latents(vae, broken, tmp_path / "broken_out", resolution=16)


def _cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "storyjax.data.images.cache_latents", *args],
    cwd=REPO_ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_cli(checkpoint, shards, tmp_path):
  path, _state, vae = checkpoint
  directory, samples = shards
  result = _cli(f"--vae={path}", f"--input={directory}", f"--output={tmp_path}", "--resolution=16", "--batch_size=3")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.splitlines()[-1])["samples_written"] == 4
  stored = np.load(io.BytesIO(_read_shard(tmp_path / "shard-000001.tar")["000003.vae_embeddings_16.npy"]))
  image = preprocess_image(PIL.Image.open(io.BytesIO(samples["000003"]["jpg"])), 16)
  np.testing.assert_allclose(stored, np.asarray(vae.encode(np.stack([image, image])))[0].transpose(2, 0, 1), atol=1e-5)
