"""Kernels: semantic cross-attention (SCA, eq 3.1) as a jnp reference and a Pallas flash-attention kernel."""

from storyjax.kernels.semantic_attention import (
  DEFAULT_MASK_VALUE,
  IMPLEMENTATIONS,
  labels_to_bits,
  semantic_attention,
  semantic_attention_bitmask,
)

__all__ = [
  "DEFAULT_MASK_VALUE",
  "IMPLEMENTATIONS",
  "labels_to_bits",
  "semantic_attention",
  "semantic_attention_bitmask",
]
