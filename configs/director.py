"""Director (model.variant A, B or C) on E.T.-style camera trajectories.

  python -m storyjax.train --config=configs/director.py          # A on the embedded data, about 13 min on 2 CPU cores
  python -m storyjax.train --config=configs/director.py:B        # B (or :C) with its own recipe on the same data
  python -m storyjax.train --config=configs/director.py:smoke    # seconds; used by the tests
  python -m storyjax.train --config=configs/director.py:paper    # published sizes and hyper-parameters

The loop keys (steps, batch, mesh, optimizer, ...) are documented in storyjax/base_config.py.
"""

import ml_collections

from storyjax.base_config import base_config

# The embedded-data recipe of each model variant: (learning rate, steps). p_mean 0 (half the training noise levels
# above σ = 1, where the trajectory must come from the conditions) for all. A and C learn faster at 1e-3; B needs
# 3e-4: at 1e-3 its pooled caption learns far worse which direction words are the camera's (README, "Results").
EMBEDDED_RECIPES = {"A": (1e-3, 2000), "B": (3e-4, 4000), "C": (1e-3, 2000)}
VARIANTS = (None, "B", "C", "smoke", "paper")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("director", variant, variants=VARIANTS)
  model_variant = variant if variant in ("B", "C") else "A"  # smoke and paper: A (set model.variant to change)
  if variant in (None, "B", "C"):
    config.optimizer.learning_rate, config.total_steps = EMBEDDED_RECIPES[model_variant]
    config.eval_every = 500  # tag accuracy of eval.quick_num_samples test captions, logged as eval/tag_accuracy
  config.optimizer.b2 = 0.95

  config.model = ml_collections.ConfigDict(
    {
      "variant": model_variant,
      "caption_tokens": "sequence",  # caption_tokens: A only (B pools, C attends to all)
      "num_registers": 16,
      "condition_layers": 2,  # C only: learned registers, condition transformer depth
      "width": 96,
      "num_layers": 4,
      "num_heads": 4,
      "mlp_ratio": 4,
      "dropout_rate": 0.0,  # on the MLP hidden layers, as published (not on the residual branches)
      "stochastic_depth": 0.0,
      "attention_dropout_rate": 0.0,  # on attention probabilities: not with "fused"/"pallas"; published: none
      # "auto": the C++ CPU kernel on one CPU device, else "xla"; "fused": jax.nn.dot_product_attention (cuDNN flash
      # attention on GPU in bf16); storyjax/layers/attention.py
      "attention": "auto",
      "remat": "none",  # or "block" / "dots": recompute in the backward pass (storyjax/layers/transformer.py)
      "dtype": "float32",  # compute dtype ("bfloat16": mixed precision, parameters and optimizer stay float32)
      "text_encoder": "scratch",  # or "clip": frozen CLIP ViT-B/32 text features (E.T.'s precomputed ones or clip_path)
      "clip_path": "",  # a local Hugging Face CLIP checkpoint directory (config.json, weights, tokenizer)
      "text_width": 96,
      "text_layers": 2,
      "text_heads": 4,
      "max_caption_length": 36,
    }
  )

  config.data.update(
    {
      "source": "embedded",
      "path": "",  # source "et": the released E.T. layout in directory `path`
      "subset": "pure",
      "max_frames": 100,
      "min_frames": 64,
      "train_size": 20_000,
      "test_size": 500,
      "seed": 0,
    }
  )  # num_workers > 0 for paper sizes on a GPU (~4)

  config.diffusion = ml_collections.ConfigDict(
    {
      "sigma_data": 0.5,
      "p_mean": 0.0,
      "p_std": 1.2,
      "sigma_min": 0.002,
      "sigma_max": 80.0,
      "rho": 40.0,
      "num_steps": 10,
      "guidance_weight": 1.4,  # w in uncond + w·(cond − uncond): 1 = no guidance
      "guidance_schedule": "static",  # ω = w − 1 per step: storyjax/diffusion/guidance.py ("linear", "cosine", …)
      "condition_dropout": 0.1,
    }
  )

  # eval.protocol, how fd_clatr, P/R/D/C and clatr_score are computed (README, "Results"):
  #   "storyjax": generations for eval.num_samples test captions against a fixed set of eval.num_reference real
  #     train trajectories (standard P/R/D/C unless prdc_published_quirks), plus the same scores for the real test
  #     trajectories (*_reference);
  #   "published": DIRECTOR's released protocol: fd_clatr and P/R/D/C of generations for the first eval.num_samples
  #     train examples against those examples' own trajectories (P/R/D/C with its quirks, 5 chunks of the whole
  #     set), clatr_score of the test generations, CLaTr inputs ×σ_data as released. DIRECTOR uses whole splits:
  #     set eval.num_samples to at least data.train_size for that.
  # The tag metrics are the same in both.
  config.eval.update(
    {
      "protocol": "storyjax",
      "num_samples": 200,
      "quick_num_samples": 50,
      "batch_size": 50,
      "num_plots": 4,
      "seed": 1,
      "clatr_workdir": "runs/clatr",  # CLaTr checkpoint for fd_clatr, prdc, clatr_score ("" = skip)
      "prdc_published_quirks": False,  # "storyjax" protocol: True computes P/R/D/C as DIRECTOR's release did
      "num_reference": 200,  # "storyjax" protocol: train-split reference examples (P/R/D/C want equal sizes)
    }
  )

  # python -m storyjax.sample: the test example whose character trajectory (and length) conditions the samples;
  # -1 = a character standing at the origin for data.max_frames frames.
  config.sample = ml_collections.ConfigDict({"char_index": 0})

  if variant == "smoke":
    config.model.update(
      {"width": 32, "num_layers": 2, "num_heads": 2, "text_width": 32, "text_layers": 1, "text_heads": 2}
    )
    config.data.update({"max_frames": 64, "min_frames": 56, "train_size": 64, "test_size": 8})
    config.eval.update({"num_samples": 4, "quick_num_samples": 4, "batch_size": 4, "num_plots": 1, "clatr_workdir": ""})
  elif variant == "paper":
    # Published Director sizes and optimisation (shared/spec/references.md); E.T.'s 300-frame window.
    config.total_steps = 200_000
    config.batch_size = 128
    config.log_every = 100
    config.checkpoint_every = 5000
    config.eval_every = 10_000
    config.optimizer.update(
      {"learning_rate": 1e-4, "warmup_steps": 5000, "final_lr_fraction": 0.0, "weight_decay": 0.1, "ema_decay": 0.9999}
    )
    config.diffusion.p_mean = -1.2
    config.model.update(
      {
        "width": 512,
        "num_layers": 8,
        "num_heads": 16,
        "dropout_rate": 0.1,
        "stochastic_depth": 0.1,
        "attention": "fused",
        "dtype": "bfloat16",  # published: Lightning's "16-mixed" (fp16 autocast, fp32 master weights)
        "text_width": 512,
        "text_layers": 4,
        "text_heads": 8,
        "caption_tokens": "pooled",
        "max_caption_length": 77,
      }
    )
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
    config.eval.update({"num_samples": 1000, "quick_num_samples": 200, "batch_size": 100})
  return config
