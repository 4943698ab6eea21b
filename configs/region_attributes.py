"""The `region_attributes` task: the region probe, per-region colour and texture of the segmented scenes.

  python -m storyjax.train --config=configs/region_attributes.py --workdir=runs/region_attributes   # ~3 min, 2 CPUs
  python -m storyjax.train --config=configs/region_attributes.py:smoke                             # seconds

storyjax/metrics/regions.py's RegionJudge loads the trained run (SCAM's swap accuracy and perceptual features).
The loop keys are documented in storyjax/base_config.py.
"""

import ml_collections

from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("region_attributes", variant, variants=(None, "smoke"))
  if variant is None:
    config.update({"total_steps": 600, "batch_size": 16, "log_every": 50, "eval_every": 200, "checkpoint_every": 600})
  config.optimizer.update({"learning_rate": 3e-3, "warmup_steps": 50 if variant is None else 2})
  config.model = ml_collections.ConfigDict({"width": 16, "num_stages": 3, "patch_size": 5, "dtype": "float32"})
  config.data.update({"image_size": 64, "train_size": 100_000, "test_size": 1000, "seed": 0})
  config.eval.update({"quick_num_samples": 200, "batch_size": 100})
  if variant == "smoke":
    config.model.update({"width": 4, "num_stages": 2})
    config.data.update({"image_size": 16, "train_size": 64, "test_size": 16})
    config.eval.update({"quick_num_samples": 8, "batch_size": 8})
  return config
