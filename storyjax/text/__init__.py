"""Frozen pretrained text encoders (CLIP) in Flax, loaded from local Hugging Face checkpoints."""
