"""The `scene_attributes` task: the scene judge, a per-slot attribute classifier of procedural scenes.

  python -m storyjax.train --config=configs/scene_attributes.py --workdir=runs/scene_attributes   # ~2 min, 2 CPUs
  python -m storyjax.train --config=configs/scene_attributes.py:smoke                            # seconds

storyjax/metrics/scenes.py's SceneJudge loads the trained run. The loop keys are documented in
storyjax/base_config.py.
"""

import ml_collections

from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("scene_attributes", variant, variants=(None, "smoke"))
  if variant is None:
    config.update({"total_steps": 1000, "batch_size": 64, "log_every": 50, "eval_every": 250, "checkpoint_every": 500})
  config.optimizer.update({"learning_rate": 3e-3, "warmup_steps": 50 if variant is None else 2})
  config.model = ml_collections.ConfigDict({"width": 8, "num_stages": 4, "dtype": "float32"})
  config.data.update({"image_size": 32, "train_size": 100_000, "test_size": 1000, "seed": 0})
  config.eval.update({"quick_num_samples": 200, "batch_size": 250})
  if variant == "smoke":
    config.model.update({"width": 4, "num_stages": 3})
    config.data.update({"image_size": 16, "train_size": 64, "test_size": 16})
    config.eval.update({"quick_num_samples": 8, "batch_size": 8})
  return config
