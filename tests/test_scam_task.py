"""The SCAM task through the generic trainer in turns: every config key read, exact resume of both turns' states,
both sharded, subject-transfer plumbing and config errors (the model itself: tests/test_scam_model.py)."""

import importlib
import json

import jax
import numpy as np
import pytest
from test_configs import KeyReads, exercise, leaf_keys

from configs import scam as scam_config
from storyjax import train as train_lib
from storyjax import trainer
from storyjax.errors import ConfigError
from storyjax.tasks import get_task

from conftest import train_crashing_at_step

pytestmark = pytest.mark.usefixtures("fast_compile")

# In this order: SCAM's smoke run reads the probe trained first.
SEGMENTATION_CONFIGS = ("region_attributes", "scam")


def smoke_config(name: str, probe_workdir=None):
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  config.mesh.update({"data": 1})
  config.data.image_size = 32  # SCAM's smoke size, which the probe must read
  if probe_workdir is not None:
    config.loss.update({"perceptual": 10.0, "perceptual_network": f"probe:{probe_workdir}"})
    config.eval.probe_workdir = str(probe_workdir)
  return config


@pytest.fixture(scope="module")
def key_runs(runs_dir):
  """Smoke runs of the probe, then of SCAM with the probe as perceptual network and judge (KeyReads inside)."""
  probe_workdir = runs_dir / "keys_region_attributes"
  unread = {}
  with pytest.MonkeyPatch.context() as patch:
    for name in SEGMENTATION_CONFIGS:
      config = smoke_config(name, probe_workdir if name == "scam" else None)
      with patch.context() as recording:
        reads = KeyReads(recording, config)
        exercise(config, runs_dir / f"keys_{name}")
      unread[name] = sorted(leaf_keys(config) - reads.read)
  return probe_workdir, runs_dir / "keys_scam", unread


def logged(workdir):
  return {record["step"]: record for record in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_every_key_of_the_segmentation_configs_is_read(key_runs):
  _, scam_workdir, unread = key_runs
  assert unread == {name: [] for name in SEGMENTATION_CONFIGS}
  assert (scam_workdir / "plots" / "scam_swaps.png").is_file()
  records = logged(scam_workdir)
  for turn in ("generator", "discriminator"):
    assert np.isfinite(records[2][f"{turn}/loss"]) and records[2][f"{turn}/grad_norm"] > 0
  assert records[1]["generator/perceptual"] > 0 and "eval/swap_accuracy" in records[1]


@pytest.mark.slow
def test_both_turns_resume_exactly_after_a_crash(runs_dir, key_runs):
  """The key run (2 steps in one go) against a crash in step 2 and a restart from the step-1 checkpoint."""
  probe_workdir, reference_workdir, _ = key_runs
  config = smoke_config("scam", probe_workdir)
  config.update({"total_steps": 2, "checkpoint_every": 1, "eval_every": 0})
  workdir = runs_dir / "scam_crashed"
  train_crashing_at_step(config, workdir, crash_step=2)
  train_lib.train(config, workdir)
  resumed, reference = logged(workdir), logged(reference_workdir)
  for name in ("loss", "generator/grad_norm", "discriminator/grad_norm", "generator/l1", "discriminator/hinge_fake"):
    assert resumed[2][name] == reference[2][name], name


def test_both_turns_states_are_sharded_over_fsdp():
  config = scam_config.get_config("smoke")
  config.mesh.update({"data": 1, "fsdp": 8})
  setup = trainer.TrainSetup(get_task(config), config)
  shardings = setup.state_shardings
  assert set(shardings["opt_state"]) == {"generator", "discriminator"}
  sharded = lambda tree: sum("fsdp" in sharding.spec for sharding in jax.tree.leaves(tree))
  for turn, modules in setup.turns.items():
    sharded_params = sum(sharded(shardings["params"][module]) for module in modules)
    assert sharded_params > 0, f"no {turn} parameter is sharded over fsdp"
    assert sharded(shardings["opt_state"][turn]) == 2 * sharded_params  # Adam's two moments, sharded alike


def test_swap_latents_replaces_exactly_one_labels_rows():
  task = get_task(scam_config.get_config("smoke"))
  per_label = task.config.model.latents_per_label
  latents, donor = np.zeros((2, 6 * per_label, 3)), np.ones((2, 6 * per_label, 3))
  swapped = task.swap_latents(latents, donor, label=2)
  rows = np.flatnonzero(swapped[0, :, 0])
  np.testing.assert_array_equal(rows, np.arange(2 * per_label, 3 * per_label))


@pytest.mark.parametrize(
  "key, value, message",
  [
    ("data.image_size", 30, "multiple of 2"),
    ("eval.swap_label", 6, "swap_label"),
    ("loss.perceptual_network", "resnet:x", "perceptual_network"),
    ("loss.perceptual_network", "none", "loss.perceptual > 0"),
    ("data.source", "nowhere", "data.source"),
    ("data.num_labels", 19, "num_labels"),
    ("data.path", "data/somewhere", "needs a path"),
  ],
)
def test_bad_config_values_are_named(key, value, message):
  config = scam_config.get_config("smoke")
  if key == "loss.perceptual_network":
    config.loss.perceptual = 1.0
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ConfigError, match=message):
    get_task(config)


def test_missing_probe_names_the_command(tmp_path):
  config = scam_config.get_config("smoke")
  config.loss.update({"perceptual": 1.0, "perceptual_network": f"probe:{tmp_path / 'none'}"})
  with pytest.raises(Exception, match="configs/region_attributes.py"):
    get_task(config)
