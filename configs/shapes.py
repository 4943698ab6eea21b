"""The `shapes` example task: a BatchNorm conv classifier on procedural shapes (README, "Adding a model").

  python -m storyjax.train --config=configs/shapes.py          # about a minute on 2 CPU cores
  python -m storyjax.train --config=configs/shapes.py:smoke    # seconds; used by the tests

The loop keys are documented in storyjax/base_config.py.
"""

import ml_collections

from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("shapes", variant, variants=(None, "smoke"))
  if variant is None:
    config.update({"total_steps": 400, "log_every": 25, "eval_every": 100, "checkpoint_every": 200})
  config.optimizer.update({"learning_rate": 3e-3, "warmup_steps": 20 if variant is None else 2})
  config.model = ml_collections.ConfigDict({"width": 16, "num_stages": 3, "dtype": "float32"})
  config.data.update({"image_size": 16, "train_size": 10_000, "test_size": 500, "seed": 0})
  config.eval.update({"quick_num_samples": 100})
  if variant == "smoke":
    config.model.width = 8
    config.data.update({"train_size": 64, "test_size": 16})
    config.eval.quick_num_samples = 8
  return config
