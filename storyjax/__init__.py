"""storyjax: story-level multimodal generative models in JAX/Flax."""
