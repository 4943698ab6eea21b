"""Coherence-Aware Diffusion (CAD, thesis §3.1) on TextRIN, and its two baselines, on embedded captioned scenes.

  python -m storyjax.train --config=configs/cad.py            # CAD: coherence token, no condition dropout
  python -m storyjax.train --config=configs/cad.py:textrin    # baseline: TextRIN + CFG, trained on every caption
  python -m storyjax.train --config=configs/cad.py:filtered   # baseline: TextRIN + CFG on the coherent captions only
  python -m storyjax.train --config=configs/cad.py:smoke      # seconds; used by the tests
  python -m storyjax.train --config=configs/cad.py:paper      # CAD_256 (SD-VAE latents, FLAN-T5 features)

30% of the embedded captions are corrupted (data.corrupt_fraction); each pair's coherence is the fraction of its
caption's attributes that are true. Evaluation (fid, caption_accuracy) needs the scene judge:
`python -m storyjax.train --config=configs/scene_attributes.py --workdir=runs/scene_attributes` once. The keys are
configs/rin.py's; facts behind the paper values: shared/spec/facts/cad-rin-cfg.md §2.
"""

import ml_collections

from configs.rin import lamb_recipe, rin_config

VARIANTS = (None, "smoke", "textrin", "filtered", "paper")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = rin_config("cad", variant, VARIANTS)
  config.model.update({"conditioning": "text", "coherence": variant != "textrin" and variant != "filtered"})
  # CAD never drops its condition: the unconditional branch is the same prompt at coherence 0 (eq 3.4).
  config.diffusion.update({"condition_dropout": 0.0 if config.model.coherence else 0.1, "guidance_weight": 1.0})
  # storyjax.sample: the coherence the prompts are generated at, in [0, 1] (1 = trusted; lower follows them less;
  # with data.coherence_bins=n the levels are k/(n−1)); CAD only
  config.sample = ml_collections.ConfigDict({"coherence": 1.0})
  if variant == "smoke":
    config.data.coherence_bins = 4  # exercises the binning
  elif variant == "filtered":
    config.data.min_coherence = 1.0
  elif variant == "paper":
    # CAD_256 (facts §2.3, §2.9): SD-VAE latents 4×32×32 of 256-pixel images, FLAN-T5-XL features.
    config.update({"total_steps": 500_000, "batch_size": 1024, "log_every": 100})
    config.update({"eval_every": 10_000, "checkpoint_every": 5000})
    lamb_recipe(config, 1e-3, 50_000)
    config.optimizer.update({"final_lr_fraction": 0.0955, "grad_clip_norm": 2.0})  # cosine@0.8
    config.model.update(
      {
        "patch_size": 2,
        "interface_dim": 256,
        "num_latents": 256,
        "latent_dim": 1024,
        "num_blocks": 4,
        "block_depth": 4,
        "latent_heads": 16,
        "read_write_heads": 16,
        "interface_mlp_ratio": 4,
        "text_encoder": "t5",
        "max_text_length": 256,
        "context_heads": 16,
        "attention": "fused",
        "dtype": "bfloat16",
      }
    )
    config.data.update(
      {
        "source": "webdataset",
        "path": "data/cad_webdataset",  # train/ and test/ shards of CAD's preprocessing, latents from cache_latents
        "image_size": 32,
        "channels": 4,
        "coherence_bins": 8,  # CAD's 8 equally populated levels of the CLIP scores (facts §2.4)
        "coherence_bin_samples": 100_000,
        "num_workers": 4,
      }
    )
    config.diffusion.update(
      {
        "train_schedule": "linear",
        "sample_schedule": "cosine_simple",
        "prediction": "eps",
        "sampler": "ddpm",
        "num_steps": 250,
      }
    )
    config.diffusion.guidance_weight = 7.0
    config.eval.update({"num_samples": 1000, "quick_num_samples": 200, "batch_size": 200})
  return config
