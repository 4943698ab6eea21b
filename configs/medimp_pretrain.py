"""MEDIMP pretraining (`medimp_pretrain` task): CLIP-style image–text InfoNCE of a 3-D ResNet and a text encoder
on kidney MRI volumes and clinical prompts.

  python -m storyjax.train --config=configs/medimp_pretrain.py          # → runs/medimp_pretrain
  python -m storyjax.train --config=configs/medimp_pretrain.py:smoke    # seconds
  python -m storyjax.train --config=configs/medimp.py                   # then the downstream on its features

model.text_encoder: "scratch" (a small transformer trained with the model on word ids; text_width, text_layers,
text_heads, max_length) or "clip" (frozen CLIP text features of the local checkpoint model.clip_path).
text.templates: the prompt template lines "donor age ; GFR at {date} ; creatinine variability" (default the 10 of
storyjax/data/medical/prompts.py). The loop keys are documented in storyjax/base_config.py, the data keys in
configs/_kidney.py.
"""

import ml_collections

from configs._kidney import kidney_data
from storyjax.base_config import base_config
from storyjax.data.medical.prompts import TEMPLATES


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("medimp_pretrain", variant)
  # 600 steps of 32 ≈ 8 epochs of the ~2400 training volumes: about 10 minutes on 2 CPU cores.
  config.update({"total_steps": 600, "batch_size": 32, "log_every": 50, "eval_every": 200, "checkpoint_every": 200})
  # Published: Adam (0.9, 0.98), eps 1e-6, weight decay 0.2, lr 1e-4 for 200 epochs with 40 warm-up epochs, grad
  # clip 1. Here the loop's AdamW (decoupled decay) at 1e-3 with 10% warm-up, as 1e-4 is for 200 epochs.
  config.optimizer.update(
    {"learning_rate": 1e-3, "warmup_steps": 60, "b2": 0.98, "eps": 1e-6, "weight_decay": 0.2, "ema_decay": 0.99}
  )
  config.model = ml_collections.ConfigDict(
    {
      "width": 8,
      "stage_sizes": (1, 1, 1, 1),
      "embed_dim": 64,
      "text_encoder": "scratch",
      "clip_path": "",
      "text_width": 64,
      "text_layers": 2,
      "text_heads": 4,
      "max_length": 40,  # the longest prompt of TEMPLATES is 40 tokens with [BOS] and [EOS]
      "dtype": "float32",
    }
  )
  config.text = ml_collections.ConfigDict({"templates": tuple(" ; ".join(line) for line in TEMPLATES)})
  kidney_data(config, variant)
  config.eval.update({"quick_num_samples": 256})
  if variant == "paper":
    # Published: RN50 depth (3, 4, 6, 3) at width 64 → 1024-d, batch 88, lr 1e-4, 200 epochs (40 of warm-up) of the
    # ~2400 volumes. Our ResNet3D has basic blocks (8·64 = 512 features, not the bottlenecks' 2048) and an average
    # pool instead of the attention pool; the text tower has Bio_ClinicalBERT's sizes and context 77 but is trained
    # from scratch (the published one is pretrained, its encoder layers frozen).
    config.update({"total_steps": 5400, "batch_size": 88, "eval_every": 1000, "checkpoint_every": 1000})
    config.optimizer.update({"learning_rate": 1e-4, "warmup_steps": 1080, "ema_decay": 0.999})
    config.model.update({"width": 64, "stage_sizes": (3, 4, 6, 3), "embed_dim": 1024})
    config.model.update({"text_width": 768, "text_layers": 12, "text_heads": 12, "max_length": 77})
    config.data.update({"volume_size": 96})
  if variant == "smoke":
    config.update({"total_steps": 6, "batch_size": 8, "log_every": 1, "eval_every": 0, "checkpoint_every": 3})
    config.optimizer.warmup_steps = 2
    config.model.update({"width": 2, "embed_dim": 8, "text_width": 8, "text_layers": 1, "text_heads": 2})
    config.eval.update({"quick_num_samples": 16})
  return config
