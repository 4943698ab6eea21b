"""Adds SD-VAE latents to webdataset shards as CAD's preprocessing stores them:
`python -m storyjax.data.images.cache_latents --vae=DIR --input=SHARDS_DIR --output=OUT_DIR [--resolution=256]`.

Every `.tar` shard in --input is written to --output under the same name. A sample (the members sharing a key,
`<key>.<ext>`) keeps all its members and gains `vae_embeddings_<resolution>.npy`: the scaled latent mean of its
image, centre-cropped 1:1, resized (bicubic) and normalised to [−1, 1], float32 (C, r/f, r/f) channels-first as
CAD's torch code stores it ((4, 32, 32) at 256 with SD-1.5's VAE). Samples whose image is narrower or lower than
the resolution are dropped, as CAD's width/height filter drops them. Each shard is written under a temporary name
and renamed when complete; shards already in --output are kept, so a rerun resumes.
"""

import io
import json
import pathlib
import tarfile

from absl import flags
import numpy as np
import PIL.Image

from storyjax import program
from storyjax.errors import ConfigError, DataError
from storyjax.models.sd_vae import load_sd_vae

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def latents_extension(resolution: int) -> str:
  return f"vae_embeddings_{resolution}.npy"


def split_key(name: str) -> tuple[str, str]:
  """A member name → (sample key, extension), split as webdataset does at the first '.' of the file name."""
  directory, slash, filename = name.rpartition("/")
  stem, _, extension = filename.partition(".")
  return directory + slash + stem, extension


def preprocess_image(image: PIL.Image.Image, resolution: int) -> np.ndarray:
  """A PIL image → (resolution, resolution, 3) float32 in [−1, 1]: centred square crop, then bicubic resize."""
  image = image.convert("RGB")
  side = min(image.size)
  left, top = (image.width - side) // 2, (image.height - side) // 2
  image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), PIL.Image.BICUBIC)
  return np.asarray(image, np.float32) / 127.5 - 1


def read_samples(shard: pathlib.Path):
  """Yields (key, [(TarInfo, bytes), …]) per sample of a shard: consecutive files sharing a key, as webdataset
  groups them."""
  key, members = None, []
  try:
    with tarfile.open(shard, "r|") as tar:
      for info in tar:
        if not info.isfile():
          continue
        member_key = split_key(info.name)[0]
        if members and member_key != key:
          yield key, members
          members = []
        key = member_key
        members.append((info, tar.extractfile(info).read()))
  except (tarfile.TarError, EOFError) as error:
    raise DataError(f"{shard} is not a readable tar file ({error})") from error
  if members:
    yield key, members


def sample_image(shard: pathlib.Path, key: str, members: list) -> PIL.Image.Image:
  """The decoded image of one sample: its first member with an IMAGE_EXTENSIONS extension."""
  for info, data in members:
    if split_key(info.name)[1].lower() in IMAGE_EXTENSIONS:
      try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
      except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError) as error:
        raise DataError(f"{shard}: {info.name} is not a readable image ({error})") from error
      return image
  names = ", ".join(info.name for info, _ in members)
  raise DataError(f"{shard}: sample {key!r} has no image (a {'/'.join(IMAGE_EXTENSIONS)} member); it has {names}")


def write_sample(tar: tarfile.TarFile, key: str, members: list, latent: np.ndarray, resolution: int) -> None:
  """Writes a sample's members (an older latents member of this resolution replaced) and latent (h, w, C) as
  `<key>.vae_embeddings_<resolution>.npy`, (C, h, w) float32."""
  extension = latents_extension(resolution)
  for info, data in members:
    if split_key(info.name)[1] != extension:
      tar.addfile(info, io.BytesIO(data))
  buffer = io.BytesIO()
  np.save(buffer, np.ascontiguousarray(np.moveaxis(latent, -1, 0), np.float32))
  info = tarfile.TarInfo(f"{key}.{extension}")
  info.size, info.mtime = buffer.tell(), members[0][0].mtime
  buffer.seek(0)
  tar.addfile(info, buffer)


def cache_shard(vae, shard: pathlib.Path, tar: tarfile.TarFile, resolution: int, batch_size: int) -> tuple[int, int]:
  """Writes `shard`'s samples with their latents to `tar`, encoding `batch_size` images a call (the last batch
  padded, so one compiled shape serves all) → (samples written, samples dropped as smaller than the resolution)."""
  pending, written, dropped = [], 0, 0

  def flush():
    images = np.stack([image for _, _, image in pending])
    padding = np.zeros((batch_size - len(images), *images.shape[1:]), np.float32)
    latents = np.asarray(vae.encode(np.concatenate([images, padding])))
    for (key, members, _), latent in zip(pending, latents):
      write_sample(tar, key, members, latent, resolution)
    pending.clear()

  for key, members in read_samples(shard):
    image = sample_image(shard, key, members)
    if min(image.size) < resolution:
      dropped += 1
      continue
    pending.append((key, members, preprocess_image(image, resolution)))
    written += 1
    if len(pending) == batch_size:
      flush()
  if pending:
    flush()
  return written, dropped


def cache_latents(vae, input_dir, output_dir, resolution: int = 256, batch_size: int = 32) -> dict:
  """Writes every shard of `input_dir` with its samples' latents to `output_dir` (see the module docstring) with
  `vae` (a StableDiffusionVAE) → counts: shards written and already there, samples written and dropped."""
  input_dir, output_dir = pathlib.Path(input_dir), pathlib.Path(output_dir)
  if not input_dir.is_dir():
    raise ConfigError(f"--input={input_dir} is not a directory; give the directory of webdataset shards (*.tar)")
  shards = sorted(input_dir.glob("*.tar"))
  if not shards:
    raise ConfigError(f"no webdataset shards (*.tar) in --input={input_dir}")
  if output_dir.resolve() == input_dir.resolve():
    raise ConfigError(f"--output={output_dir} is --input; write the shards with latents to another directory")
  factor = vae.downsampling_factor
  if resolution < factor or resolution % factor:
    raise ConfigError(f"--resolution={resolution} must be a positive multiple of the VAE's downsampling {factor}")
  if batch_size < 1:
    raise ConfigError(f"--batch_size={batch_size} must be at least 1")
  output_dir.mkdir(parents=True, exist_ok=True)
  summary = {"shards_written": 0, "shards_already_there": 0, "samples_written": 0, "samples_too_small": 0}
  for shard in shards:
    target = output_dir / shard.name
    if target.exists():
      summary["shards_already_there"] += 1
      continue
    partial = target.with_name(target.name + ".partial")
    with tarfile.open(partial, "w") as tar:
      written, dropped = cache_shard(vae, shard, tar, resolution, batch_size)
    partial.replace(target)
    print(f"{target}: {written} samples, {dropped} smaller than {resolution}×{resolution} dropped", flush=True)
    summary["shards_written"] += 1
    summary["samples_written"] += written
    summary["samples_too_small"] += dropped
  return summary


def _define_flags() -> None:
  """Flags of the CLI only: importing this module defines none."""
  flags.DEFINE_string("vae", None, "A diffusers AutoencoderKL directory (config.json, .safetensors weights).")
  flags.DEFINE_string("input", None, "The directory of webdataset shards (*.tar) to add latents to.")
  flags.DEFINE_string("output", None, "Where to write the shards with latents, under the same names.")
  flags.DEFINE_integer("resolution", 256, "Square image side in pixels (CAD: 256 or 512).", lower_bound=8)
  flags.DEFINE_integer("batch_size", 32, "Images per VAE call.", lower_bound=1)


def main() -> None:
  args = flags.FLAGS
  missing = [f"--{name}" for name in ("vae", "input", "output") if args[name].value is None]
  if missing:
    raise ConfigError(f"{' and '.join(missing)} required: --vae=DIR --input=SHARDS_DIR --output=OUT_DIR")
  summary = cache_latents(load_sd_vae(args.vae), args.input, args.output, args.resolution, args.batch_size)
  print(
    f"wrote {summary['shards_written']} shards ({summary['shards_already_there']} already in {args.output} kept): "
    f"{summary['samples_written']} samples, {summary['samples_too_small']} smaller than "
    f"{args.resolution}×{args.resolution} dropped"
  )
  print(json.dumps(summary))


if __name__ == "__main__":
  _define_flags()
  program.run_program(main)
