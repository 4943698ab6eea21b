"""FunnyNet-W (`funnynet` task): is a clip funny? Frozen audio, vision and text features, Cross-Attention Fusion.

  python -m storyjax.train --config=configs/funnynet.py                                        # → runs/funnynet
  python -m storyjax.train --config=configs/funnynet.py --config.model.modalities=audio,text --workdir=runs/funny_at
  python -m storyjax.evaluate --config=configs/funnynet.py --workdir=runs/funnynet             # accuracy, f1
  python -m storyjax.train --config=configs/funnynet.py:paper --config.data.source=features --config.data.root=DIR

model     modalities: a comma-separated subset of audio,vision,text (the single-modality and pair ablations);
          width (512 published) = num_tokens (16) × token width; audio_hidden (1024) the audio projection's hidden
          width; lstm_width (256) the text LSTM's; text_dropout (0.5) on the flattened LSTM states;
          scaled_attention=True: the thesis' softmax(QKᵀ/√d) instead of the code's unscaled one.
loss      contrastive_weight (0.03, as coded; 0.1 in the ACCV FunnyNet) on the sum of NT-Xent over the modality pairs
          at temperature (0.5).
data      source "procedural" (storyjax/data/funny.py: the label needs all three modalities) or "features" (root =
          a directory of <clip>.npz with audio, vision, text arrays and labels.csv with clip,split,label);
          audio_dim, vision_dim, text_length × text_dim: the feature shapes (published 2048, 2048, 64 × 4096);
          train_size, test_size, num_cues (joke types), noise, seed: the procedural clips.
eval      quick_num_samples (test clips per quick evaluation), batch_size.
Published training: Adam 1e-4, batch 16, 100 epochs, MultiStepLR (epochs 20, 40, 80, 100; × 0.5): `paper`.
The loop and optimizer keys are documented in storyjax/base_config.py and storyjax/optim.py.
"""

import ml_collections

from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("funnynet", variant)
  if variant != "smoke":
    config.update(
      {"total_steps": 10_000, "batch_size": 32, "log_every": 100, "eval_every": 1000, "checkpoint_every": 2000}
    )
  config.optimizer.update(
    {
      "schedule": "multistep",
      "learning_rate": 1e-3,
      "warmup_steps": 100 if variant != "smoke" else 2,
      "weight_decay": 0.0,
      "grad_clip_norm": 10.0,
      "ema_decay": 0.99,
    }
  )
  config.optimizer.multistep = ml_collections.ConfigDict({"milestones": (0.2, 0.4, 0.8, 1.0), "factor": 0.5})
  config.model = ml_collections.ConfigDict(
    {
      "modalities": "audio,vision,text",
      "width": 128,
      "audio_hidden": 256,
      "lstm_width": 32,
      "num_tokens": 16,
      "text_dropout": 0.5,
      "scaled_attention": False,
      "dtype": "float32",
    }
  )
  config.loss = ml_collections.ConfigDict({"contrastive_weight": 0.03, "temperature": 0.5})
  config.data.update(
    {
      "source": "procedural",
      "root": "",
      "audio_dim": 32,
      "vision_dim": 32,
      "text_length": 16,
      "text_dim": 16,
      "train_size": 100_000,
      "test_size": 2000,
      "num_cues": 4,
      "noise": 0.25,
      "seed": 0,
    }
  )
  config.eval.update({"quick_num_samples": 500, "batch_size": 500})
  if variant == "paper":  # the published sizes and recipe (100 epochs of the clips at batch 16)
    config.model.update({"width": 512, "audio_hidden": 1024, "lstm_width": 256})
    config.data.update({"audio_dim": 2048, "vision_dim": 2048, "text_length": 64, "text_dim": 4096})
    config.optimizer.update({"learning_rate": 1e-4, "warmup_steps": 0, "grad_clip_norm": 1e9})
    config.update({"batch_size": 16, "total_steps": 100 * config.data.train_size // 16})
  if variant == "smoke":
    config.model.update({"width": 32, "audio_hidden": 32, "lstm_width": 8})
    config.data.update({"audio_dim": 16, "vision_dim": 16, "text_length": 6, "text_dim": 8})
    config.data.update({"train_size": 64, "test_size": 16})
    config.eval.update({"quick_num_samples": 8, "batch_size": 8})
  return config
