"""Diffusion: EDM (Director) and Gaussian DDPM/DDIM (RIN, CAD) training and samplers; classifier-free guidance and
its weight schedules."""
