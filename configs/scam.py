"""SCAM (thesis §3.1): a SAT-Encoder and a SCAM-Generator that talk through semantic cross-attention, trained as a
GAN on segmented images; subject transfer swaps one label's latents between two images at test time.

  python -m storyjax.train --config=configs/scam.py                  # embedded 64×64 scenes, 2 CPU cores
  python -m storyjax.train --config=configs/scam.py:unmasked         # baseline: SCA replaced by plain attention
  python -m storyjax.train --config=configs/scam.py:smoke            # seconds; used by the tests
  python -m storyjax.train --config=configs/scam.py:paper            # CelebAMask-HQ at 256² as released
  python -m storyjax.evaluate --config=configs/scam.py               # psnr, ssim, swap_accuracy, region_leak

Evaluation's swap_accuracy and the perceptual loss on the embedded data need the region probe:
`python -m storyjax.train --config=configs/region_attributes.py --workdir=runs/region_attributes` once.
Facts behind the paper values: shared/spec/facts/laeo-scam.md part B.

Keys besides the loop's (storyjax/base_config.py):
  model.latents_per_label, latent_dim, heads      latents: latents_per_label per label, background included (B.2)
  model.attention_dim    width of every SCA's queries/keys/values (the released model: latent_dim)
  model.transformer_norm "joint": LayerNorm over all latents and channels together, as coded (B.1), which lets
                         every latent's statistics reach every other; "token": per latent, so a label's latents
                         depend on its own pixels only (the default here: subject transfer without leaks)
  model.semantic_masks   True: SCA (eq 3.1); False: the same network with unmasked attention (the baseline)
  model.mask_value       the masked logit after the 1/√d scaling: −1e4 as coded, −1e9 in the thesis (B.1)
  model.attention        "xla" (reference), "pallas" (storyjax/kernels) or "auto" (pallas on GPU/TPU)
  model.encoder_levels, encoder_width, position_dim   SAT-Encoder: levels (finest first), conv width nf·2^i, PE dim
  model.generator_widths  channels of the start map then of each up block (start at image_size / 2^(len − 1))
  model.discriminator_widths, discriminator_scales   multi-scale PatchGAN (B.5)
  loss.adversarial, l1, perceptual                weights of hinge-G, L1 and the perceptual L1 (B.6)
  loss.perceptual_network  "probe:<workdir>" (a region_attributes run), "vgg19:<file.safetensors>" or "none"
  loss.gradient_normalisation   GN-GAN's normalised discriminator (B.5)
  data.source            "scenes" (embedded, storyjax/data/images/segmented.py) or "folder" (data.path, B.8 layout)
  data.num_labels        labels of the segmentation maps (6 for the embedded scenes)
  eval.probe_workdir     the region probe read by swap_accuracy ("" = skip it)
  eval.swap_label        the label id whose latents are swapped (the subject)
"""

import ml_collections

from storyjax.base_config import base_config

VARIANTS = (None, "smoke", "unmasked", "paper")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  config = base_config("scam", variant, variants=VARIANTS)
  if variant in (None, "unmasked"):
    config.update({"total_steps": 2000, "batch_size": 8, "log_every": 50, "eval_every": 500})
    config.update({"checkpoint_every": 500})
  # B.7: AdamW (0.9, 0.999), weight decay 0.01, G and E at 1e-4, D at 4e-4; no schedule, no clipping, no EMA.
  config.optimizer.update(
    {"learning_rate": 1e-4, "warmup_steps": 0, "final_lr_fraction": 1.0, "grad_clip_norm": float("inf")}
  )
  config.optimizer.update({"ema_decay": 0.0, "turns": {"discriminator": {"learning_rate": 4e-4}}})
  config.model = ml_collections.ConfigDict(
    {
      "latents_per_label": 4,
      "latent_dim": 64,
      "heads": 1,
      "attention_dim": 32,
      "transformer_norm": "token",
      "semantic_masks": variant != "unmasked",
      "mask_value": -1e4,
      "attention": "xla",
      "encoder_levels": 4,
      "encoder_width": 16,
      "position_dim": 16,
      "generator_widths": (128, 128, 64, 32, 16),
      "discriminator_widths": (16, 32, 32, 32),
      "discriminator_scales": 2,
      "dtype": "float32",
    }
  )
  config.loss = ml_collections.ConfigDict(
    {
      "adversarial": 1.0,
      "l1": 10.0,
      "perceptual": 10.0,
      "perceptual_network": "probe:runs/region_attributes",
      "gradient_normalisation": True,
    }
  )
  config.data.update(
    {"source": "scenes", "path": "", "image_size": 64, "num_labels": 6, "train_size": 50_000, "test_size": 500}
  )
  config.data.seed = 0
  config.eval.update(
    {"num_examples": 256, "quick_num_examples": 64, "batch_size": 64, "probe_workdir": "runs/region_attributes"}
  )
  config.eval.swap_label = 1  # the body (embedded scenes); CelebAMask-HQ: 17 = hair
  if variant == "smoke":
    config.model.update(
      {
        "latents_per_label": 2,
        "latent_dim": 16,
        "encoder_levels": 2,
        "encoder_width": 8,
        "position_dim": 8,
        "generator_widths": (16, 16, 8),
        "discriminator_widths": (8, 8, 8, 8),
      }
    )
    config.loss.update({"perceptual": 0.0, "perceptual_network": "none"})
    config.data.update({"image_size": 32, "train_size": 64, "test_size": 16})
    config.eval.update({"num_examples": 8, "quick_num_examples": 8, "batch_size": 8, "probe_workdir": ""})
  elif variant == "paper":
    # CelebAMask-HQ (SEAN's processing) at 256²: 19 labels × 8 latents of 256 (B.2), 7 encoder levels (B.3), a
    # 1024-channel generator from 4×4 (B.4), batch 32, 100k steps (B.7).
    config.update({"total_steps": 100_000, "batch_size": 32, "log_every": 100, "eval_every": 5000})
    config.update({"checkpoint_every": 5000})
    config.model.update(
      {
        "latents_per_label": 8,
        "latent_dim": 256,
        "encoder_levels": 7,
        "encoder_width": 16,
        "position_dim": 40,
        "generator_widths": (1024, 1024, 1024, 512, 256, 128, 64),
        "discriminator_widths": (64, 128, 256, 512),
        "attention_dim": 256,
        "transformer_norm": "joint",
        "attention": "auto",
        "dtype": "bfloat16",
      }
    )
    config.loss.perceptual_network = "vgg19:data/vgg19.safetensors"
    config.data.update({"source": "folder", "path": "data/CelebAMask-HQ", "image_size": 256, "num_labels": 19})
    config.data.update({"num_workers": 4})
    config.eval.update({"num_examples": 2000, "quick_num_examples": 256, "batch_size": 32, "probe_workdir": ""})
    config.eval.swap_label = 17  # hair
  return config
