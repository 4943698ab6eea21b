"""The generic train loop on Director `smoke`: resume, sharding, failures, outputs."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import director as director_config
from storyjax import profiling, trainer
from storyjax import train as train_lib
from storyjax.data.et import procedural
from storyjax.errors import CheckpointError, ConfigError, DataError, DivergenceError
from storyjax.tasks import get_task
from storyjax.tasks.director import Task as DirectorTask

from conftest import REPO_ROOT, fast_compile_env, train_crashing_at_step

pytestmark = pytest.mark.usefixtures("fast_compile")


def smoke_config(**mesh):
  config = director_config.get_config("smoke")
  config.mesh.update({"data": 1, "fsdp": 1, "model": 1, **mesh})
  return config


def train_setup(config) -> trainer.TrainSetup:
  return trainer.TrainSetup(get_task(config), config)


def logged(workdir: pathlib.Path) -> dict[int, dict]:
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  records = [json.loads(line) for line in lines]
  steps = [record["step"] for record in records]
  assert len(steps) == len(set(steps)), f"duplicate steps in metrics.jsonl: {steps}"
  return {record["step"]: record for record in records}


@pytest.fixture(scope="module")
def reference_run(runs_dir):
  """Smoke trained in one go on 1 device; reused by several tests."""
  workdir = runs_dir / "reference"
  train_lib.train(smoke_config(), workdir)
  return workdir


def test_metrics_and_outputs(reference_run):
  records = logged(reference_run)
  config = smoke_config()
  assert sorted(records) == list(range(1, config.total_steps + 1))
  for record in records.values():
    assert {"loss", "lr", "grad_norm", "steps_per_sec", "examples_per_sec"} <= set(record)
    assert np.isfinite(record["loss"])
  assert records[1]["lr"] == 0.0 and records[3]["lr"] > 0.0  # linear warm-up from 0
  saved = json.loads((reference_run / "config.json").read_text())
  assert saved["model"]["width"] == config.model.width
  assert sorted(int(p.name) for p in (reference_run / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
  assert list((reference_run / "tensorboard").glob("events.out.tfevents.*"))


def test_exact_resume_after_crash(runs_dir, reference_run):
  """Crash during step 5 (checkpoint at 3, step 4 already logged), restart → same losses bitwise."""
  workdir = runs_dir / "crashed"
  train_crashing_at_step(smoke_config(), workdir, crash_step=5)
  assert sorted(logged(workdir)) == [1, 2, 3, 4]
  train_lib.train(smoke_config(), workdir)
  resumed, reference = logged(workdir), logged(reference_run)
  assert sorted(resumed) == sorted(reference)
  for step in reference:
    assert resumed[step]["loss"] == reference[step]["loss"], f"step {step} differs after resume"
    assert resumed[step]["grad_norm"] == reference[step]["grad_norm"]


def test_sharding_invariance(runs_dir, reference_run):
  """Data, fsdp and model parallelism at once (each 2-way) against the 1-device reference run."""
  mesh = {"data": 2, "fsdp": 2, "model": 2}
  config = smoke_config(**mesh)
  setup = train_setup(config)
  state = setup.init_state()
  kernel = state["params"]["backbone"]["block_0"]["mlp"]["fc1"]["kernel"]  # logical (embed, mlp)
  assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "model" if mesh.get("model") else None)
  shard_shape = kernel.addressable_shards[0].data.shape
  assert shard_shape[0] == kernel.shape[0] // mesh["fsdp"]
  mu = state["opt_state"][1][0].mu["backbone"]["block_0"]["mlp"]["fc1"]["kernel"]
  assert mu.sharding == kernel.sharding

  workdir = runs_dir / ("mesh_" + "_".join(f"{k}{v}" for k, v in mesh.items()))
  train_lib.train(config, workdir)
  sharded, reference = logged(workdir), logged(reference_run)
  np.testing.assert_allclose(
    [sharded[s]["loss"] for s in sorted(reference)], [reference[s]["loss"] for s in sorted(reference)], rtol=2e-5
  )


def test_nan_loss_stops_with_step(runs_dir, monkeypatch):
  workdir = runs_dir / "nan"
  config = smoke_config()
  train_lib.train(config, workdir)  # checkpoints at 3 and 6
  before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  config.total_steps = 9
  original_loss = DirectorTask.loss

  def nan_loss(self, variables, batch, rng):
    loss, aux, model_state = original_loss(self, variables, batch, rng)
    return loss * jnp.nan, aux, model_state

  monkeypatch.setattr(DirectorTask, "loss", nan_loss)
  with pytest.raises(DivergenceError, match="at step 7"):
    train_lib.train(config, workdir)
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before


def test_wrong_data_shape_is_named(runs_dir, monkeypatch):
  original = procedural.EmbeddedET.__getitem__

  def short_trajectory(self, index):
    example = original(self, index)
    return {**example, "camera_traj": example["camera_traj"][:, :6]}

  monkeypatch.setattr(procedural.EmbeddedET, "__getitem__", short_trajectory)
  with pytest.raises(DataError, match=r"camera_traj has shape \(64, 6\), expected \(64, 9\)"):
    train_lib.train(smoke_config(), runs_dir / "bad_shape")


def test_incompatible_and_corrupt_checkpoints(runs_dir):
  workdir = runs_dir / "checkpoint_errors"
  train_lib.train(smoke_config(), workdir)
  changed = smoke_config()
  changed.model.width = 64
  with pytest.raises(CheckpointError, match="different 'model' config"):
    train_lib.train(changed, workdir)

  files = [p for p in (workdir / "checkpoints" / "6").rglob("*") if p.is_file()]
  for path in files:
    path.write_bytes(b"garbage")
  with pytest.raises(CheckpointError, match="corrupt"):
    train_lib.train(smoke_config(), workdir)
  assert all(path.read_bytes() == b"garbage" for path in files), "a corrupt checkpoint must be left untouched"


def _run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", *args], cwd=REPO_ROOT, env=fast_compile_env(), capture_output=True, text=True, timeout=300
  )


def test_train_evaluate_sample_end_to_end(runs_dir):
  """The CLIs on a smoke run: evaluation JSON as last line, samples.npz + KITTI + PNGs."""
  workdir = runs_dir / "cli"
  result = _run_cli(
    "storyjax.train", "--config=configs/director.py:smoke", f"--workdir={workdir}", "--config.eval.at_end=True"
  )
  assert result.returncode == 0, result.stderr
  last_lines = result.stdout.strip().splitlines()[-4:]
  assert last_lines[0].startswith("metrics:") and last_lines[-1].startswith("evaluation:")
  assert list((workdir / "plots").glob("sample_*.png"))

  result = _run_cli("storyjax.evaluate", "--config=configs/director.py:smoke", f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  assert 0.0 <= metrics["tag_accuracy"] <= 1.0 and metrics["step"] == 6
  assert metrics["reference_tag_accuracy"] >= 0.75  # ground-truth poses re-tagged: the metric's ceiling

  result = _run_cli(
    "storyjax.sample",
    "--config=configs/director.py:smoke",
    f"--workdir={workdir}",
    "--prompt=The camera pushes in.",
    "--prompt=The camera trucks left.",
    "--num_samples=2",
  )
  assert result.returncode == 0, result.stderr
  samples = np.load(workdir / "samples" / "samples.npz")
  num_frames = director_config.get_config("smoke").data.max_frames
  assert samples["camera_pose"].shape == (4, num_frames, 3, 4)
  assert samples["camera_traj"].shape == (4, num_frames, 9)
  assert samples["char_traj"].shape == (4, num_frames, 3)
  assert samples["mask"].shape == (4, num_frames)
  assert list(samples["caption"]) == ["The camera pushes in."] * 2 + ["The camera trucks left."] * 2
  assert samples["tags"].shape == (4,)
  kitti = np.loadtxt(workdir / "samples" / "sample_000.txt")
  assert kitti.shape == (samples["mask"][0].sum(), 12)
  rotations = samples["camera_pose"][0, : kitti.shape[0], :, :3]
  np.testing.assert_allclose(
    rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rotations.shape), atol=1e-5
  )
  assert (workdir / "samples" / "sample_003.png").stat().st_size > 10_000


def test_loss_falls_and_bfloat16_compute(runs_dir):
  """A short run learns (loss falls by > 30%); bf16 compute keeps fp32 parameters and finite losses."""
  config = smoke_config()
  config.total_steps, config.checkpoint_every = 60, 60
  config.optimizer.update({"learning_rate": 3e-3, "warmup_steps": 5})
  train_lib.train(config, runs_dir / "learning")
  losses = [record["loss"] for _, record in sorted(logged(runs_dir / "learning").items())]
  assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), losses

  config = smoke_config()
  config.model.dtype = "bfloat16"
  setup = train_setup(config)
  state = setup.init_state()
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state["params"]))
  train_lib.train(config, runs_dir / "bfloat16")
  assert all(np.isfinite(record["loss"]) for record in logged(runs_dir / "bfloat16").values())


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("data.subset", "everything", "data config"),
    ("model.variant", "Z", "model.variant"),
    ("model.dtype", "float8", "model.dtype"),
    ("data.source", "youtube", "data.source"),
    ("data.path", "et-data", "data.path='et-data' is set but data.source='embedded'"),
    ("model.clip_path", "clip", "model.clip_path is set but model.text_encoder='scratch'"),
  ],
)
def test_bad_config_values_are_named(key, value, message):
  config = smoke_config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=message):
    train_setup(config)


def test_step_cost_printed_and_profile_written(runs_dir, capsys):
  config = smoke_config()
  config.profile_steps = 2
  workdir = runs_dir / "profiled"
  train_lib.train(config, workdir)
  printed = capsys.readouterr().out
  assert "train step per device:" in printed and "GFLOP per step" in printed
  assert list((workdir / "profile").rglob("*.xplane.pb")), "no jax.profiler trace was written"


def test_step_larger_than_device_memory_fails_before_training(runs_dir, monkeypatch):
  monkeypatch.setattr(profiling, "device_memory_bytes", lambda device: 1024)
  workdir = runs_dir / "too_big"
  with pytest.raises(ConfigError, match=r"needs \d+\.\d+ GiB per device but .* has 0\.00 GiB"):
    train_lib.train(smoke_config(), workdir)
  assert not (workdir / "metrics.jsonl").exists()
  assert not [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]


def test_step_cost_counts_the_state_and_all_flops():
  """The AOT memory analysis counts the whole fp32 state (params, EMA, 2 Adam moments) as arguments."""
  setup = train_setup(smoke_config())
  _, cost = profiling.compile_with_cost(setup.lower_train_step())
  state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(setup.abstract_state))
  batch_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(setup.abstract_batch))
  assert cost.argument_bytes == state_bytes + batch_bytes
  assert cost.alias_bytes == state_bytes  # the donated state is updated in place
  num_params = sum(leaf.size for leaf in jax.tree.leaves(setup.abstract_state["params"]))
  assert cost.flops > 6 * num_params * setup.config.batch_size  # forward + backward touch every weight per example
  _, sharded_cost = profiling.compile_with_cost(train_setup(smoke_config(fsdp=8)).lower_train_step())
  assert sharded_cost.flops == pytest.approx(cost.flops, rel=1e-3)  # FLOPs of the whole step, not per device
  assert sharded_cost.argument_bytes < cost.argument_bytes / 4
