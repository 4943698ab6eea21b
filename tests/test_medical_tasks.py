"""The medical / physiological tasks through the generic trainer (thesis ch. 4): every config key read by smoke runs
chained as a user chains the stages (CosEmb and MEDIMP pretraining → the k-fold exam-sequence transformer on their
features; ADAPT's anchor → contrastive → classify), exact resume with BatchNorm state (and CosEmb's curriculum
step), stage 3 starting from the earlier stages' weights, and config errors."""

import importlib
import json

import flax.linen as nn
import jax
import numpy as np
import pytest
from test_configs import KeyReads, exercise, leaf_keys

from storyjax import train as train_lib
from storyjax.errors import CheckpointError, ConfigError
from storyjax.tasks import get_task

from conftest import train_crashing_at_step

pytestmark = pytest.mark.usefixtures("fast_compile")

# In this order: each run reads the run of the stage before it. configs/medimp.py is configs/cosemb.py with another
# encoder run (the same task and keys, checked below), so it is not run again.
MEDICAL_CONFIGS = (
  "cosemb_pretrain",
  "cosemb",
  "medimp_pretrain",
  "medimp",
  "adapt_anchor",
  "adapt_contrastive",
  "adapt",
)
RUN_CONFIGS = tuple(name for name in MEDICAL_CONFIGS if name != "medimp")
EARLIER_RUNS = {  # config → {key path: the config whose run it reads}
  "cosemb": {"features.encoder": "cosemb_pretrain"},
  "medimp": {"features.encoder": "medimp_pretrain"},
  "adapt_contrastive": {"model.anchor_run": "adapt_anchor"},
  "adapt": {"model.anchor_run": "adapt_anchor", "model.contrastive_run": "adapt_contrastive"},
}


def smoke_config(name: str, runs_dir):
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  config.mesh.update({"data": 1})
  for path, earlier in EARLIER_RUNS.get(name, {}).items():
    section, key = path.split(".")
    config[section][key] = str(runs_dir / f"keys_{earlier}")
  return config


@pytest.fixture(scope="module")
def key_runs(runs_dir):
  """Smoke runs of every medical config in stage order (KeyReads inside) → the keys each left unread."""
  unread = {}
  with pytest.MonkeyPatch.context() as patch:
    for name in RUN_CONFIGS:
      config = smoke_config(name, runs_dir)
      with patch.context() as recording:
        reads = KeyReads(recording, config)
        exercise(config, runs_dir / f"keys_{name}")
      unread[name] = sorted(leaf_keys(config) - reads.read)
  return unread


def logged(workdir):
  return {record["step"]: record for record in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_every_key_of_the_medical_configs_is_read(key_runs, runs_dir):
  assert key_runs == {name: [] for name in RUN_CONFIGS}
  medimp, cosemb = (smoke_config(name, runs_dir) for name in ("medimp", "cosemb"))
  assert medimp.task == cosemb.task and leaf_keys(medimp) == leaf_keys(cosemb)
  for name in RUN_CONFIGS:
    assert np.isfinite(logged(runs_dir / f"keys_{name}")[2]["loss"]), name
  assert "eval/auc" in logged(runs_dir / "keys_cosemb")[1]
  assert "eval/gfr_band_accuracy" in logged(runs_dir / "keys_medimp_pretrain")[1]
  assert "eval/only_audio_weighted_f1" not in logged(runs_dir / "keys_adapt")[1]  # quick: the full pattern only


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cosemb_pretrain", "adapt"])
def test_resumes_exactly_with_batch_norm_state(name, runs_dir, key_runs):
  """The key run (2 steps in one go) against a crash in step 2 and a restart from the step-1 checkpoint: BatchNorm
  statistics and the curriculum's step counter (the same mutable-state path every medical task uses)."""
  del key_runs  # the reference runs
  config = smoke_config(name, runs_dir)
  config.update({"total_steps": 2, "checkpoint_every": 1, "eval_every": 0})
  config.eval.at_end = False
  workdir = runs_dir / f"{name}_crashed"
  train_crashing_at_step(config, workdir, crash_step=2)
  train_lib.train(config, workdir)
  resumed, reference = logged(workdir), logged(runs_dir / f"keys_{name}")
  for metric in ("loss", "grad_norm"):
    assert resumed[2][metric] == reference[2][metric], metric


@pytest.mark.slow
def test_classify_stage_starts_from_the_earlier_stages(runs_dir, key_runs):
  del key_runs
  config = smoke_config("adapt", runs_dir)
  task = get_task(config)
  batch = jax.tree.map(lambda leaf: np.asarray(leaf)[None], task.preprocess(task.source("train")[0]))
  initial = jax.tree.map(np.asarray, nn.unbox(task.init(jax.random.PRNGKey(5), batch)))
  anchor = task._frozen["anchor"]
  contrastive = task._frozen["contrastive"]
  for name in ("signal_encoders_ecg", "heads_video", "audio_encoder"):
    jax.tree.map(np.testing.assert_array_equal, initial["params"][name], anchor["params"][name])
  jax.tree.map(np.testing.assert_array_equal, initial["batch_stats"], anchor["batch_stats"])
  jax.tree.map(np.testing.assert_array_equal, initial["params"]["transformer"], contrastive["params"]["transformer"])


@pytest.mark.parametrize(
  "name, key, value, message",
  [
    ("cosemb_pretrain", "loss.pairing", "creatinine", "loss.pairing"),
    ("cosemb_pretrain", "loss.curriculum", "5;10", "loss.curriculum"),
    ("cosemb", "features.inputs", "radiomics", "features.inputs"),
    ("cosemb", "model.num_folds", 1, "num_folds"),
    ("adapt", "data.modalities", "ecg,thermal", "data.modalities"),
    ("adapt", "stage", "finetune", "stage"),
    ("adapt", "data.shared_state_std", -1.0, "shared_state_std=-1.0"),
    ("adapt_anchor", "model.fusion", "late", "late-fusion"),
  ],
)
def test_bad_config_values_are_named(name, key, value, message):
  config = importlib.import_module(f"configs.{name}").get_config("smoke")
  *sections, leaf = key.split(".")
  node = config
  for section in sections:
    node = node[section]
  node[leaf] = value
  with pytest.raises(ConfigError, match=message):
    task = get_task(config)
    task.source("train")


def test_missing_earlier_stage_names_the_command(tmp_path):
  config = importlib.import_module("configs.adapt_contrastive").get_config("smoke")
  config.model.anchor_run = str(tmp_path / "no_run")
  with pytest.raises(CheckpointError, match="configs/adapt_anchor.py"):
    get_task(config).source("train")
