"""Flax models, one file per model, no training code."""
