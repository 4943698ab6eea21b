"""Class-conditional RIN (Recurrent Interface Networks) on embedded one-object scenes, or CIFAR-10 through TFDS.

  python -m storyjax.train --config=configs/rin.py          # embedded 32×32 scenes, 16 colour × shape classes
  python -m storyjax.train --config=configs/rin.py:smoke    # seconds; used by the tests
  python -m storyjax.train --config=configs/rin.py:paper    # CIFAR-10 as published (TFDS data in data.data_dir)
  python -m storyjax.train --config=configs/rin.py:paper_imagenet64

Evaluation needs the scene judge: `python -m storyjax.train --config=configs/scene_attributes.py
--workdir=runs/scene_attributes` once. `rin_config` is shared with configs/cad.py (TextRIN / CAD); the loop keys
are documented in storyjax/base_config.py, the facts behind the paper values in
shared/spec/facts/cad-rin-cfg.md §1.5 and §1.9.
"""

import ml_collections

from storyjax.base_config import base_config

VARIANTS = (None, "smoke", "paper", "paper_imagenet64")


def rin_config(name: str, variant: str | None, variants: tuple) -> ml_collections.ConfigDict:
  """The keys every RIN-family config has, at the CPU default size; `smoke` sizes set here."""
  config = base_config(name, variant, task="rin", variants=variants)
  if variant != "smoke":
    config.update({"total_steps": 3000, "eval_every": 500})
    config.optimizer.warmup_steps = 200
  config.optimizer.update({"learning_rate": 2e-3, "b2": 0.99})
  config.model = ml_collections.ConfigDict(
    {
      "conditioning": "class",  # "none", "class" or "text" (TextRIN)
      "coherence": False,  # text only: CAD's coherence token
      "patch_size": 4,
      "interface_dim": 64,  # D_x
      "num_latents": 32,  # N_z, including the time (and class) tokens
      "latent_dim": 128,  # D_z
      "num_blocks": 2,
      "block_depth": 2,  # K self-attention layers per block
      "latent_heads": 4,
      "read_write_heads": 4,
      "latent_mlp_ratio": 4,
      "interface_mlp_ratio": 2,
      "dropout_rate": 0.0,  # compute layers only (MLP hidden and residual branches), as published
      "stochastic_depth": 0.0,
      "text_encoder": "scratch",  # text: "scratch" (trained with the model) or "t5" (frozen FLAN-T5 features)
      "t5_path": "",  # a local FLAN-T5 checkpoint directory (config.json, model.safetensors, tokenizer)
      # a local diffusers AutoencoderKL directory (the one cache_latents encoded with): with data.channels=4,
      # storyjax.sample decodes the sampled latents into PNGs
      "vae_path": "",
      "max_text_length": 32,
      "text_layers": 2,  # scratch text encoder depth
      "num_registers": 16,
      "context_layers": 2,  # TextRIN's LayerScale self-attention layers on [coherence, registers, text]
      "context_heads": 4,
      "attention": "auto",  # "auto" (C++ kernel on one CPU device, else "xla"), "xla", "fused", "cpu"
      "remat": "none",
      "dtype": "float32",
    }
  )
  config.data.update(
    {
      "source": "scenes",  # "scenes" (embedded), "tfds" (class), "webdataset" or "folder" (captions)
      "image_size": 32,
      "channels": 3,  # 4: SD-VAE latents (webdataset shards with vae_embeddings_<8·image_size>.npy)
      "train_size": 20_000,
      "test_size": 500,
      "seed": 0,
      "corrupt_fraction": 0.3,  # scenes: captions with wrong attributes (their coherence says how wrong)
      "min_coherence": 0.0,  # scenes: train only on captions at least this coherent (the "filtered" baseline)
      # 0: raw coherence scores (the scenes' are already few levels, 1 − wrong/claims; ~70% are exactly 1, which
      # would merge CAD's quantile bins); n ≥ 2: CAD's n equally populated levels of real scores (facts §2.4).
      "coherence_bins": 0,
      "coherence_bin_samples": 2000,  # train examples whose scores set the bin edges
      "num_classes": 10,  # tfds only (scenes have colour × shape classes)
      "tfds_name": "cifar10",
      "data_dir": "",  # tfds: the TFDS data directory (prepared as array_record)
      "path": "",  # webdataset / folder: directory with train/ and test/
    }
  )
  config.diffusion = ml_collections.ConfigDict(
    {
      "train_schedule": "cosine",  # noise schedules: storyjax/diffusion/gaussian.py (name:param=value,…)
      "sample_schedule": "cosine",
      # v, where RIN and CAD publish ε (their `paper` variants): after a few thousand CPU steps an ε-model's x̂₀ at
      # high noise is worse than the data mean and ignores the condition, so the layout is never learned (README)
      "prediction": "v",
      "self_condition_rate": 0.9,  # 0 = no latent self-conditioning
      "condition_dropout": 0.1,  # CFG-trained models only (class, TextRIN without coherence)
      "uncond": "same_prompt",  # CAD's unconditional branch: "same_prompt" (eq 3.4) or "unconfident_prompt"
      "sampler": "ddim",
      "num_steps": 50,
      "guidance_weight": 1.0,  # ω in (1 + ω)·cond − ω·uncond
      "guidance_schedule": "static",  # storyjax/diffusion/guidance.py, e.g. "linear", "clamp:c=2,base=cosine"
      "guidance_start": 0,  # steps before this one are unguided
    }
  )
  config.eval.update(
    {
      "num_samples": 200,
      "quick_num_samples": 100,
      "batch_size": 100,
      "num_plots": 32,
      "seed": 1,
      "judge_workdir": "runs/scene_attributes",  # the scene judge (configs/scene_attributes.py)
      # pytorch-fid's FID Inception weights as .safetensors (storyjax/models/inception.py): adds fid_inception, on
      # any data source; "" = none
      "inception_path": "",
      "schedules": ("linear", "cosine"),  # guidance schedules also evaluated by the full evaluation
    }
  )
  if variant == "smoke":
    config.model.update(
      {
        "interface_dim": 16,
        "num_latents": 8,
        "latent_dim": 32,
        "num_blocks": 1,
        "block_depth": 1,
        "latent_heads": 2,
        "read_write_heads": 2,
        "num_registers": 2,
        "context_layers": 1,
        "context_heads": 2,
        "text_layers": 1,
      }
    )
    config.data.update({"image_size": 16, "train_size": 64, "test_size": 8, "coherence_bin_samples": 64})
    config.diffusion.num_steps = 3
    config.eval.update({"num_samples": 4, "quick_num_samples": 4, "batch_size": 4, "num_plots": 4, "schedules": ()})
  return config


def lamb_recipe(config: ml_collections.ConfigDict, learning_rate: float, warmup_steps: int) -> None:
  """LAMB with weight decay 0.01 and EMA 0.9999 as RIN and CAD train (facts §1.9); their cosine@r schedule ends at
  0.5·(1 + cos(r·π)) of the peak, which our warm-up + cosine reaches through final_lr_fraction."""
  config.optimizer.update(
    {
      "name": "lamb",
      "learning_rate": learning_rate,
      "warmup_steps": warmup_steps,
      "b2": 0.999,
      "eps": 1e-8,
      "weight_decay": 0.01,
      "ema_decay": 0.9999,
    }
  )


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = rin_config("rin", variant, VARIANTS)
  if variant in ("paper", "paper_imagenet64"):
    cifar = variant == "paper"
    config.update({"total_steps": 150_000, "batch_size": 256 if cifar else 1024, "log_every": 100})
    config.update({"eval_every": 10_000, "checkpoint_every": 5000})
    lamb_recipe(config, 3e-3 if cifar else 2e-3, 10_000)
    config.optimizer.final_lr_fraction = 0.0955 if cifar else 0.206  # cosine@0.8 / cosine@0.7
    config.optimizer.grad_clip_norm = 1e9  # pix2seq does not pass its clip norm to LAMB (facts §1.9)
    config.model.update(
      {
        "patch_size": 2 if cifar else 8,
        "interface_dim": 256 if cifar else 512,
        "num_latents": 128,
        "latent_dim": 512 if cifar else 768,
        "num_blocks": 3 if cifar else 4,
        "block_depth": 2 if cifar else 4,
        "latent_heads": 16,
        "read_write_heads": 8 if cifar else 16,
        "interface_mlp_ratio": 2 if cifar else 4,
        "dropout_rate": 0.1 if cifar else 0.0,
        "stochastic_depth": 0.1 if cifar else 0.0,
        "attention": "fused",
        "dtype": "bfloat16",
      }
    )
    config.data.update(
      {
        "source": "tfds",
        "tfds_name": "cifar10" if cifar else "imagenet_resized/64x64",
        "image_size": 32 if cifar else 64,
        "num_classes": 10 if cifar else 1000,
        "data_dir": "~/tensorflow_datasets",
        "num_workers": 4,
      }
    )
    config.diffusion.update(
      {
        "train_schedule": "sigmoid:start=-3,end=3,tau=0.9" if cifar else "linear",
        "sample_schedule": "cosine",
        "prediction": "eps",
        "sampler": "ddpm",
        "num_steps": 1000 if cifar else 250,
      }
    )
    config.eval.update({"num_samples": 1000, "quick_num_samples": 200, "batch_size": 200})
  return config
