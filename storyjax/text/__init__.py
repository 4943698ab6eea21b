"""Frozen pretrained text encoders (CLIP, FLAN-T5) in Flax, loaded from local Hugging Face checkpoints."""
