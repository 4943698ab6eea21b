"""storyjax: story-level multimodal generative models in JAX/Flax."""

import os

# storyjax uses transformers for tokenizers and checkpoint configs only (models are Flax), so its import-time
# advice that PyTorch is missing is noise a user would read as an error.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
