"""CosEmb stage 1 (`cosemb_pretrain` task): contrastive pretraining of the 3-D ResNet on MRI pairs.

  python -m storyjax.train --config=configs/cosemb_pretrain.py                  # → runs/cosemb_pretrain
  python -m storyjax.train --config=configs/cosemb_pretrain.py:smoke            # seconds
  python -m storyjax.train --config=configs/cosemb_pretrain.py --config.loss.pairing=gfr   # weakly supervised

loss.pairing: "patient" (self-supervised) or "gfr" / "donor_age" (weakly supervised, with loss.curriculum
"c0,c1;…": positive if |Δ| < c0, negative if ≥ c1, one phase per entry); loss.margin: torch's CosineEmbeddingLoss
margin (0.5 as coded). Then configs/cosemb.py trains stage 2 on this run's features. The loop keys are documented
in storyjax/base_config.py, the data keys in configs/_kidney.py (+ train_pairs, positive_fraction here).
"""

import ml_collections

from configs._kidney import kidney_data
from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("cosemb_pretrain", variant)
  if variant != "smoke":
    config.update({"total_steps": 800, "batch_size": 16, "log_every": 50, "eval_every": 400, "checkpoint_every": 400})
  # SGD 1e-2 with warm-up-cosine as published is replaced by AdamW (the loop's optimizer); grad clip 1 as published.
  config.optimizer.update(
    {"learning_rate": 1e-3, "warmup_steps": 100 if variant != "smoke" else 2, "weight_decay": 0.0}
  )
  config.model = ml_collections.ConfigDict(
    {
      "width": 8,
      "stage_sizes": (1, 1, 1, 1),
      "hidden_dim": 64,
      "out_dim": 32,
      "dropout_rate": 0.1,
      "dtype": "float32",
    }
  )
  config.loss = ml_collections.ConfigDict({"pairing": "patient", "margin": 0.5, "curriculum": "5,30;10,20;10,15"})
  kidney_data(config, variant)
  config.data.update({"train_pairs": 100_000, "positive_fraction": 0.25})
  config.eval.update({"num_pairs": 400, "quick_num_samples": 200})
  if variant == "paper":  # published: ResNet-18 (64 → 512-d), head 512 → 256, batch 48, dataset 10500 pairs
    config.model.update({"width": 64, "stage_sizes": (2, 2, 2, 2), "hidden_dim": 512, "out_dim": 256})
    config.update({"batch_size": 48})
    config.data.update({"train_pairs": 10_500, "volume_size": 96})
  if variant == "smoke":
    config.model.update({"width": 2, "hidden_dim": 8, "out_dim": 8})
    config.data.update({"train_pairs": 64})
    config.eval.update({"num_pairs": 16, "quick_num_samples": 8})
  return config
