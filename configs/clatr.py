"""CLaTr, the contrastive language–trajectory model behind Director's FD_CLaTr / PRDC / CLaTr-Score metrics.

  python -m storyjax.train --config=configs/clatr.py --workdir=runs/clatr   # embedded data, 500 steps (2 CPU cores)
  python -m storyjax.train --config=configs/clatr.py:smoke                  # seconds; used by the tests
  python -m storyjax.train --config=configs/clatr.py:paper                  # published sizes and optimisation

The default matches configs/director.py's default data (pure subset, 100 frames), so Director's evaluation
can use it (eval.clatr_workdir = runs/clatr). The loop keys are documented in storyjax/base_config.py.
"""

import ml_collections

from storyjax.base_config import base_config


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("clatr", variant)
  # Text→trajectory R@1 on the embedded test split (chance 0.006): 0.118 after 500 steps at 1e-3; at 5e-4, 0.102
  # after 500 and 0.120 after 800 (README, "Results"); 0.114 / 0.124 / 0.146 after 600 / 1000 / 2000 (one H200).
  if variant is None:
    config.update({"total_steps": 500, "batch_size": 64, "checkpoint_every": 250, "eval_every": 250})
  config.optimizer.update({"learning_rate": 1e-3, "warmup_steps": 100})

  config.model = ml_collections.ConfigDict(
    {
      "width": 64,
      "num_layers": 2,
      "num_heads": 4,
      "mlp_dim": 128,
      "dropout_rate": 0.1,  # attention probabilities, residual branches, MLP (torch's TransformerEncoderLayer)
      "attention": "auto",  # "auto" (C++ kernel on one CPU device, else "xla"), "xla", "cpu"; layers/attention.py
      "dtype": "float32",
      "text_encoder": "scratch",  # or "clip": frozen CLIP features (E.T.'s precomputed ones or clip_path)
      "clip_path": "",
      "max_caption_length": 36,
    }
  )

  config.loss = ml_collections.ConfigDict(
    {  # published weights
      "reconstruction": 1.0,
      "kl": 1e-5,
      "latent": 1e-5,
      "contrastive": 0.1,
      "temperature": 0.1,
    }
  )

  config.data.update(
    {
      "source": "embedded",
      "path": "",
      "subset": "pure",
      "caption": "caption_cam",
      "max_frames": 100,
      "min_frames": 64,
      "train_size": 20_000,
      "test_size": 500,
      "seed": 0,
    }
  )

  config.eval.update({"num_samples": 500, "quick_num_samples": 100, "batch_size": 100})

  if variant == "smoke":
    config.optimizer.warmup_steps = 2
    config.model.update({"width": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64})
    config.data.update({"max_frames": 64, "min_frames": 56, "train_size": 64, "test_size": 16})
    config.eval.update({"num_samples": 16, "quick_num_samples": 8, "batch_size": 8})
  elif variant == "paper":
    # Published CLaTr (shared/spec/facts/director-et-clatr.md §6): latent 256, 6 layers, FFN 1024, lr 1e-5.
    config.total_steps = 460_000
    config.batch_size = 32
    config.log_every = 100
    config.checkpoint_every = 10_000
    config.eval_every = 10_000
    config.optimizer.update(
      {"learning_rate": 1e-5, "warmup_steps": 0, "final_lr_fraction": 1.0, "weight_decay": 0.01, "ema_decay": 0.9999}
    )
    config.model.update({"width": 256, "num_layers": 6, "num_heads": 4, "mlp_dim": 1024, "max_caption_length": 77})
    config.data.update(
      {
        "subset": "mixed",
        "max_frames": 300,
        "min_frames": 125,
        "train_size": 100_000,
        "test_size": 2000,
        "num_workers": 4,
      }
    )
    config.eval.update({"num_samples": 2000})
  return config
