"""The `shapes` example task: a model with BatchNorm statistics (a mutable collection) through the generic trainer.

Exact resume, 1-vs-8-device parity of losses and statistics, eval mode at evaluation, learning, and the CLI.
"""

import json
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import shapes as shapes_config
from storyjax import optim, trainer
from storyjax import train as train_lib
from storyjax.data.images.shapes import SHAPES, ShapesSource, shape_mask
from storyjax.tasks import get_task

from conftest import REPO_ROOT, fast_compile_env, train_crashing_at_step

pytestmark = pytest.mark.usefixtures("fast_compile")


def smoke_config(**mesh):
  config = shapes_config.get_config("smoke")
  config.mesh.update({"data": 1, "fsdp": 1, "model": 1, **mesh})
  return config


def losses(workdir) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def restored(config, workdir) -> dict:
  _, variables, step = trainer.restore_for_inference(get_task(config), config, workdir)
  assert step == config.total_steps
  return jax.device_get(variables)


@pytest.fixture(scope="module")
def reference_run(runs_dir):
  workdir = runs_dir / "shapes_reference"
  train_lib.train(smoke_config(), workdir)
  return workdir


def test_state_carries_batch_statistics(reference_run):
  config = smoke_config()
  setup = trainer.TrainSetup(get_task(config), config)
  assert set(setup.abstract_state) == {"step", "params", "ema_params", "opt_state", "model_state"}
  initial = jax.device_get(setup.init_state()["model_state"]["batch_stats"])
  with pytest.MonkeyPatch.context() as patch:  # restoring for inference builds no optimizer
    patch.setattr(optim, "make_optimizer", lambda *args: pytest.fail("restore_for_inference built an optimizer"))
    trained = restored(config, reference_run)["batch_stats"]
  for stage in range(config.model.num_stages):
    np.testing.assert_array_equal(initial[f"stage_{stage}"]["norm"]["mean"], 0.0)
    assert np.abs(trained[f"stage_{stage}"]["norm"]["mean"]).max() > 1e-3, "running means never moved"


def test_exact_resume_after_crash(runs_dir, reference_run):
  """Crash during step 5 (checkpoint at 3), restart → the same losses and BatchNorm statistics, bitwise."""
  workdir = runs_dir / "shapes_crashed"
  train_crashing_at_step(smoke_config(), workdir, crash_step=5)
  train_lib.train(smoke_config(), workdir)
  assert losses(workdir) == losses(reference_run)
  chex.assert_trees_all_equal(restored(smoke_config(), workdir), restored(smoke_config(), reference_run))


def test_eight_devices_match_one(runs_dir):
  """Batch statistics are means over the global batch, however it is split over data-parallel devices.

  (Per-device statistics, over one example each, would change the losses by percents.) The learning rate is low
  so that float reductions in another order are not amplified step after step.
  """
  runs = {}
  for data_ways in (1, 8):
    config = smoke_config(data=data_ways)
    config.optimizer.learning_rate = 3e-4
    runs[data_ways] = (config, runs_dir / f"shapes_data{data_ways}")
    train_lib.train(*runs[data_ways])
  (single_config, single), (sharded_config, sharded) = runs[1], runs[8]
  np.testing.assert_allclose(losses(sharded), losses(single), rtol=1e-5)
  sharded_variables, single_variables = restored(sharded_config, sharded), restored(single_config, single)
  chex.assert_trees_all_close(sharded_variables["batch_stats"], single_variables["batch_stats"], rtol=1e-4, atol=1e-4)
  # Adam moves a weight whose gradient is near zero by up to one learning rate either way, on float noise.
  chex.assert_trees_all_close(
    sharded_variables["params"], single_variables["params"], rtol=0, atol=single_config.optimizer.learning_rate
  )


def test_one_step_statistics_do_not_depend_on_the_split():
  """From the same state and batch, one step's BatchNorm statistics on 8 data-parallel devices equal 1 device's."""
  updated = []
  for data_ways in (1, 8):
    config = smoke_config(data=data_ways)
    setup = trainer.TrainSetup(get_task(config), config)
    iterator = setup.train_iterator()
    batch = setup.device_batch(next(iterator))
    iterator.close()
    state, _ = setup.lower_train_step().compile()(setup.init_state(), batch)
    updated.append(jax.device_get(state["model_state"]))
  chex.assert_trees_all_close(*updated, rtol=1e-6, atol=1e-7)


def test_learns_and_evaluates_in_eval_mode(runs_dir):
  """Test accuracy far above chance; evaluation uses the running averages (resetting them changes it)."""
  config = smoke_config()
  config.update({"total_steps": 120, "batch_size": 32, "log_every": 20, "eval_every": 60, "checkpoint_every": 120})
  config.data.train_size = 2000
  config.data.test_size = 200
  config.model.width = 16
  config.eval.at_end = True
  workdir = runs_dir / "shapes_learning"
  results = train_lib.train(config, workdir)
  assert results["accuracy"] > 0.85 and results["chance"] < 0.4, results
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [record["step"] for record in records if "eval/accuracy" in record] == [60, 120]
  task = get_task(config)
  variables = restored(config, workdir)
  reset = {
    stage: {"norm": {"mean": np.zeros_like(stats["norm"]["mean"]), "var": np.ones_like(stats["norm"]["var"])}}
    for stage, stats in variables["batch_stats"].items()
  }
  assert task.evaluate({**variables, "batch_stats": reset}, workdir)["accuracy"] < results["accuracy"] - 0.1


def test_shapes_data_is_reproducible_and_labelled():
  source = ShapesSource("train", 50, 16, seed=3)
  first, again = source[7], ShapesSource("train", 50, 16, seed=3)[7]
  np.testing.assert_array_equal(first["image"], again["image"])
  assert first["caption"].endswith(SHAPES[first["label"]])
  assert not np.array_equal(source[7]["image"], ShapesSource("test", 50, 16, seed=3)[7]["image"])
  assert len({source[index]["label"].item() for index in range(50)}) == len(SHAPES)
  areas = {shape: shape_mask(shape, 32, (16, 16), 10).sum() for shape in SHAPES}
  assert areas["ring"] < areas["circle"] and areas["triangle"] < areas["square"] < areas["circle"], areas
  with pytest.raises(IndexError):
    source[50]


def test_trains_through_the_cli_with_overrides(tmp_path):
  """`python -m storyjax.train` with --config.* overrides: they reach the run (config.json, steps, model size)."""
  workdir = tmp_path / "run"
  overrides = ["--config.total_steps=4", "--config.model.width=4", "--config.eval.at_end=True"]
  result = subprocess.run(
    [sys.executable, "-m", "storyjax.train", "--config=configs/shapes.py:smoke", f"--workdir={workdir}", *overrides],
    cwd=REPO_ROOT,
    env=fast_compile_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1].startswith("evaluation:")
  assert "plots:" not in result.stdout  # nothing was plotted, so no folder is announced
  assert "PyTorch" not in result.stderr
  saved = json.loads((workdir / "config.json").read_text())
  assert (saved["total_steps"], saved["model"]["width"]) == (4, 4)
  assert len(losses(workdir)) == 4
  assert "shapes_smoke: 1,672 parameters" in result.stdout  # width 4 (8 gives more)
