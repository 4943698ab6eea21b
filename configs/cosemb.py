"""CosEmb stage 2 (`exam_sequence` task): the masked transformer over exam features → the transplant outcome,
trained as a k-fold ensemble in one run, on the features of a frozen pretrained encoder.

  python -m storyjax.train --config=configs/cosemb_pretrain.py          # stage 1 → runs/cosemb_pretrain
  python -m storyjax.train --config=configs/cosemb.py                   # stage 2 → runs/cosemb
  python -m storyjax.evaluate --config=configs/cosemb.py --workdir=runs/cosemb
  python -m storyjax.train --config=configs/cosemb.py:smoke             # seconds, untrained encoder

features.encoder: a cosemb_pretrain or medimp_pretrain workdir, or "random" (an untrained 3-D ResNet of
features.random_width: the no-pretraining baseline); features.inputs: "image", "creatinine" (the statistics of
creatinine between exams, as in the code) or "image_creatinine". The loop keys are documented in
storyjax/base_config.py, the data keys in configs/_kidney.py.
"""

import ml_collections

from configs._kidney import kidney_data
from storyjax.base_config import base_config


def get_config(variant: str | None = None, name: str = "cosemb", encoder: str = "runs/cosemb_pretrain"):
  config = base_config(name, variant, task="exam_sequence")
  if variant != "smoke":
    config.update({"total_steps": 600, "batch_size": 32, "log_every": 50, "eval_every": 200, "checkpoint_every": 600})
  # Adam 1e-3 without weight decay, warm-up then cosine (facts (b)); 600 steps ≈ 48 epochs of 400 patients.
  config.optimizer.update({"learning_rate": 1e-3, "warmup_steps": 60, "weight_decay": 0.0, "ema_decay": 0.99})
  config.model = ml_collections.ConfigDict(
    {"width": 64, "num_layers": 2, "num_heads": 2, "dropout_rate": 0.1, "num_folds": 5, "dtype": "float32"}
  )
  config.features = ml_collections.ConfigDict({"encoder": encoder, "inputs": "image", "random_width": 8})
  kidney_data(config, variant)
  if variant == "paper":  # the published sizes: d = FFN width 768, 2 heads, 2 layers, 10 folds, batch 32
    config.model.update({"width": 768, "num_folds": 10})
  if variant == "smoke":
    config.optimizer.warmup_steps = 2
    config.model.update({"width": 16, "num_folds": 2})
    config.features.update({"encoder": "random", "random_width": 2})
  return config
