"""The task registry: `config.task` names a module `storyjax/tasks/<name>.py` exposing `Task(config)`.

The contract every task follows is `storyjax.tasks.base.Task`. Tasks never import each other: one that needs
another run's trained model (Director's evaluation uses a CLaTr) loads it with `load_trained_task`.
"""

import importlib
import json
import pathlib

import ml_collections

from storyjax import trainer
from storyjax.base_config import check_values
from storyjax.errors import CheckpointError, ConfigError
from storyjax.tasks.base import Task

TASKS = (
  "director",
  "clatr",
  "shapes",
  "scene_attributes",
  "region_attributes",
  "rin",
  "scam",
  "cosemb_pretrain",
  "medimp_pretrain",
  "exam_sequence",
  "adapt",
  "laeo",
  "funnynet",
)


def task_class(name: str) -> type:
  if name not in TASKS:
    raise ConfigError(f"unknown task {name!r}; available: {TASKS}.")
  return importlib.import_module(f"storyjax.tasks.{name}").Task


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task of `config`, after the value checks every config gets (base_config.check_values)."""
  check_values(config)
  return task_class(config.task)(config)


def load_trained_task(workdir: str | pathlib.Path, expected_task: str) -> tuple[Task, dict]:
  """(task, EMA variables) of the run in `workdir`, built from its own config.json; for inference only.

  A missing, foreign or unreadable run is a CheckpointError that ends with the command training one
  (configs/<expected_task>.py: the judges and feature extractors other tasks load are named like their configs).
  """
  workdir = pathlib.Path(workdir).absolute()
  config_path = workdir / "config.json"
  try:
    if not config_path.is_file():
      raise CheckpointError(f"no {expected_task} run in {workdir} (missing {config_path})")
    try:
      config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    except json.JSONDecodeError as error:
      raise CheckpointError(f"{config_path} is not valid JSON ({error})") from error
    if config.get("task") != expected_task:
      raise CheckpointError(f"{workdir} holds a {config.get('task')!r} run, not {expected_task!r}")
    task = get_task(config)
    _, variables, _ = trainer.restore_for_inference(task, config, workdir)
  except CheckpointError as error:
    command = f"python -m storyjax.train --config=configs/{expected_task}.py --workdir={workdir}"
    raise CheckpointError(f"{error}; train one with `{command}`") from error
  return task, variables
