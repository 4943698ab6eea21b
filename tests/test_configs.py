"""Every config variant loads, shares one key set with its smoke variant, and has no key that nothing reads."""

import importlib
import pathlib

import jax
import ml_collections
import pytest

from storyjax import trainer
from storyjax.tasks import get_task
from storyjax.tasks.base import GenerativeTask, Task, TurnTask

from conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("fast_compile")

CONFIG_FILES = sorted(path.stem for path in (REPO_ROOT / "configs").glob("[!_]*.py"))
# Configs of programs other than the trainer (no task): their own tests read every key.
PROGRAM_CONFIGS = ("clustering",)


def leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
  keys = set()
  for name, value in config.items():
    keys |= leaf_keys(value, f"{prefix}{name}.") if isinstance(value, ml_collections.ConfigDict) else {prefix + name}
  return keys


def variants(module) -> list:
  """The variants that load: those the module declares (VARIANTS), else None / smoke / paper; never a made-up one."""
  variants = []
  for variant in (*getattr(module, "VARIANTS", (None, "smoke", "paper")), "no_such_variant"):
    try:
      module.get_config(variant)
      variants.append(variant)
    except ValueError as error:
      assert variant is not None and "variant" in str(error)
  return variants


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_variant_loads_with_the_smoke_key_set(name):
  module = importlib.import_module(f"configs.{name}")
  found = variants(module)
  assert None in found and "smoke" in found and "no_such_variant" not in found, found
  smoke_keys = leaf_keys(module.get_config("smoke"))
  for variant in found:
    config = module.get_config(variant)
    assert leaf_keys(config) == smoke_keys, variant
    if config.get("loss", {}).get("perceptual_network", "none") != "none":
      # SCAM reads its perceptual network (a trained probe run, a VGG19 file) when built: absent in a clean clone.
      config.loss.update({"perceptual": 0.0, "perceptual_network": "none"})
    assert config.name == (name if variant is None else f"{name}_{variant}")
    if name not in PROGRAM_CONFIGS:
      assert isinstance(get_task(config), (Task, TurnTask))


class KeyReads:
  """Records which leaf keys of a config are read (`config.x`, `config["x"]`, `config.get("x")`)."""

  def __init__(self, monkeypatch, config: ml_collections.ConfigDict):
    self.paths, self.read = {}, set()
    self._index(config, "")
    original = ml_collections.ConfigDict.__getitem__

    def recording_getitem(config_dict, key):
      value = original(config_dict, key)
      if id(config_dict) in self.paths and not isinstance(value, ml_collections.ConfigDict):
        self.read.add(self.paths[id(config_dict)] + key)
      return value

    monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", recording_getitem)

  def _index(self, config, prefix):
    self.paths[id(config)] = prefix
    for name, value in config.items():
      if isinstance(value, ml_collections.ConfigDict):
        self._index(value, f"{prefix}{name}.")


# A prompt each generative task accepts (class-conditional RIN takes class names).
PROMPTS = {"director": "The camera pushes in.", "rin": "a red circle at the top left", "rin_class": "red circle"}


def exercise(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Everything a user does with a config: train with evaluation during, evaluate the restored run, sample.

  (The full evaluation runs once, after the restore, rather than also at the end of training: same code.)"""
  config.total_steps, config.eval_every, config.checkpoint_every = 2, 1, 2
  config.eval.at_end = False
  task = get_task(config)
  trainer.train(task, config, workdir)
  _, variables, _ = trainer.restore_for_inference(task, config, workdir)
  task.evaluate(variables, workdir)
  if isinstance(task, GenerativeTask):
    prompt = PROMPTS["rin_class" if config.get("model", {}).get("conditioning") == "class" else config.task]
    task.save_samples(task.sample(variables, [prompt], jax.random.PRNGKey(0)), workdir)


def test_to_json_reads_no_key_through_the_recorder(monkeypatch):
  from configs import shapes

  config = shapes.get_config("smoke")
  reads = KeyReads(monkeypatch, config)
  config.to_json()
  assert reads.read == set()


# The E.T. configs; tests/test_config_keys_images.py checks every other config, on the other test worker.
TRAJECTORY_CONFIGS = ("clatr", "director")


def unread_keys(names, runs_dir, monkeypatch) -> dict[str, list[str]]:
  """Smoke runs of the configs `names` in order (evaluations with the CLaTr and scene-judge runs they use, so
  those come first) → the keys each defines that nothing read."""
  unread = {}
  helper_workdirs = {"clatr_workdir": runs_dir / "keys_clatr", "judge_workdir": runs_dir / "keys_scene_attributes"}
  for name in names:
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    config.mesh.update({"data": 1})
    for key, workdir in helper_workdirs.items():
      if key in config.eval:
        config.eval[key] = str(workdir)
    with monkeypatch.context() as patch:
      reads = KeyReads(patch, config)
      exercise(config, runs_dir / f"keys_{name}")
    unread[name] = sorted(leaf_keys(config) - reads.read)
  return unread


@pytest.mark.slow
def test_every_key_of_the_trajectory_configs_is_read(runs_dir, monkeypatch):
  unread = unread_keys(TRAJECTORY_CONFIGS, runs_dir, monkeypatch)
  assert unread == {name: [] for name in unread}
