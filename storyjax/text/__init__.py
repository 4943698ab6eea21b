"""Frozen pretrained text models in Flax, loaded from local Hugging Face checkpoints: the CLIP and FLAN-T5 encoders
and Llama-family causal LMs (`causal_lm.py`, for the QA harness), plus the caption tokenizer and caption inputs."""
