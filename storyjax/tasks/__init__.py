"""Tasks bind a model to the generic train loop: data source, preprocessing, loss, evaluation.

A task module exposes `Task(config)`; `get_task(config)` picks it from `config.task`.
"""
import importlib

import ml_collections

TASKS = ("director", "clatr")


def get_task(config: ml_collections.ConfigDict):
  if config.task not in TASKS:
    raise ValueError(f"Unknown task {config.task!r}; available: {TASKS}.")
  return importlib.import_module(f"storyjax.tasks.{config.task}").Task(config)
