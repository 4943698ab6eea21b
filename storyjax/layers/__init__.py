"""Shared Flax layers: attention, MLP, transformer blocks (LayerScale optional), condition mapper, convolutions,
normalisations, patch embedding, position / noise-level embeddings, the scratch text encoder."""
