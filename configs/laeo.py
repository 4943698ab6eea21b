"""LAEO-Net++ (`laeo` task): do two people look at each other? On the embedded procedural scenes by default.

  python -m storyjax.train --config=configs/laeo.py                                   # → runs/laeo
  python -m storyjax.train --config=configs/laeo.py --config.model.use_head_map=False --workdir=runs/laeo_no_map
  python -m storyjax.evaluate --config=configs/laeo.py --workdir=runs/laeo            # ap, accuracy, auc, friend-ness
  python -m storyjax.train --config=configs/laeo.py:paper --config.data.source=uco_laeo --config.data.root=UCO-LAEO

model     version 2 = LAEO-Net++, 1 = LAEO-Net; head_widths / embedding_dim size LAEO-Net++'s head branch (released:
          (32, 64, 128, 256), 256 = the `paper` variant); use_head_map=False is the ablation without the map branch;
          keras_weights: a released Keras HDF5 file to start from (paper sizes).
data      source "procedural" | "uco_laeo" | "ava_laeo" (root = the dataset folder; storyjax/tasks/laeo.py);
          window T; balance: oversample the minority class; map_mean: the released meanmaps10.npy for real data with
          the released weights ("" = none); channel_order of the real crops ("bgr" as the released weights);
          train/val/test_examples and seed: the procedural splits.
augment   A.4's transform: shift (pixels), zoom, brightness range, channel_shift; enabled=False turns it off.
eval      quick_num_samples (validation examples per quick evaluation, the plateau's AP), batch_size, and the
          procedural episode of the social analysis (episode_seed, episode_shots).
The loop and optimizer keys are documented in storyjax/base_config.py and storyjax/optim.py.
"""

import ml_collections

from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("laeo", variant)
  if variant != "smoke":
    config.update({"total_steps": 1500, "batch_size": 32, "log_every": 50, "eval_every": 250, "checkpoint_every": 500})
  # Published: Adam 1e-4 (Keras: ε 1e-7, no weight decay), batch 8, lr × 0.2 after 5 epochs without a better
  # validation AP from epoch 10 on, floor 1e-7. Here an "epoch" is one quick evaluation (eval_every steps).
  config.optimizer.update(
    {
      "schedule": "plateau",
      "learning_rate": 1e-3,
      "warmup_steps": 100 if variant != "smoke" else 2,
      "eps": 1e-7,
      "weight_decay": 0.0,
      "grad_clip_norm": 10.0,
      "ema_decay": 0.99,
    }
  )
  config.optimizer.plateau = ml_collections.ConfigDict(
    {"metric": "ap", "mode": "max", "patience": 5, "factor": 0.2, "min_learning_rate": 1e-7, "start_step": 750}
  )
  config.model = ml_collections.ConfigDict(
    {
      "version": 2,
      "head_widths": (8, 16, 32, 64),
      "embedding_dim": 64,
      "hidden_dim": 32,
      "dropout_rate": 0.2,
      "use_head_map": True,
      "keras_weights": "",
      "dtype": "float32",
    }
  )
  config.data.update(
    {
      "source": "procedural",
      "root": "",
      "window": 10,
      "balance": True,
      "map_mean": "",
      "channel_order": "bgr",
      "train_examples": 20_000,
      "val_examples": 512,
      "test_examples": 2000,
      "seed": 0,
    }
  )
  config.augment = ml_collections.ConfigDict(
    {"enabled": True, "shift": 2, "zoom": 0.04, "brightness": (0.5, 1.4), "channel_shift": 0.35}
  )
  config.eval.update({"quick_num_samples": 512, "batch_size": 32, "episode_seed": 0, "episode_shots": 40})
  if variant == "paper":  # the released sizes and recipe: batch 8, Adam 1e-4, 60 epochs
    config.model.update({"head_widths": (32, 64, 128, 256), "embedding_dim": 256})
    config.optimizer.update({"learning_rate": 1e-4})
    config.update({"batch_size": 8})
  if variant == "smoke":
    config.model.update({"head_widths": (2, 2, 4, 4), "embedding_dim": 4, "hidden_dim": 4})
    config.data.update({"train_examples": 16, "val_examples": 8, "test_examples": 8})
    config.update({"eval_every": 3})
    config.optimizer.plateau.update({"patience": 1, "start_step": 0})
    config.eval.update({"quick_num_samples": 8, "batch_size": 4, "episode_shots": 2})
  return config
