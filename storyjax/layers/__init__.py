"""Shared Flax layers: attention, MLP, transformer blocks, embeddings, text encoders."""
