"""Samples camera trajectories for prompts: `python -m storyjax.sample --config=... --workdir=DIR --prompt="..."`.

Writes DIR/samples/samples.npz, one KITTI pose file and one PNG plot per sample.
"""
import pathlib

from absl import flags
import jax
import ml_collections
import numpy as np

from storyjax import plotting
from storyjax.data.et.camera import write_kitti_poses
from storyjax.errors import ConfigError
from storyjax.cli import run_cli
from storyjax.train import load_trained

_PROMPTS = flags.DEFINE_multi_string("prompt", None, "Caption(s) to sample; repeat the flag for several.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
_CHAR_INDEX = flags.DEFINE_integer(
    "char_index", 0, "Test example whose character trajectory (and length) conditions the samples; "
    "-1 = a character standing at the origin for data.max_frames frames.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def sample(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  workdir = pathlib.Path(workdir).absolute()
  setup, params, _ = load_trained(config, workdir)
  captions = [prompt for prompt in (_PROMPTS.value or []) for _ in range(_NUM_SAMPLES.value)]
  if not captions:
    raise ConfigError("give at least one --prompt")
  samples = setup.task.sample(params, captions, _CHAR_INDEX.value, jax.random.PRNGKey(_SEED.value))
  out_dir = workdir / "samples"
  out_dir.mkdir(parents=True, exist_ok=True)
  np.savez(out_dir / "samples.npz", **samples)
  for index, caption in enumerate(captions):
    num_frames = int(samples["mask"][index].sum())
    poses = samples["camera_pose"][index, :num_frames]
    write_kitti_poses(out_dir / f"sample_{index:03d}.txt", poses)
    plotting.plot_camera_trajectory(out_dir / f"sample_{index:03d}.png", poses,
                                    samples["char_traj"][index, :num_frames], caption=caption,
                                    tags=f"generated tags: {samples['tags'][index]}")
  print(f"samples: {out_dir / 'samples.npz'} ({len(captions)} trajectories, KITTI .txt and .png beside it)")
  return samples


if __name__ == "__main__":
  run_cli(sample)
