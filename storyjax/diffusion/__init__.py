"""Diffusion: EDM preconditioning, loss and samplers; classifier-free guidance."""
