"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

Preconditioning, the weighted denoising loss, the σ schedule and the deterministic Heun sampler. Pure jnp and
jit-able; shared by every diffusion model in storyjax. Equation numbers refer to the EDM paper.
"""

import jax
import jax.numpy as jnp


def broadcast_per_sample(values, like):
  """(B,) or scalar → (B, 1, ..., 1) or (1, ..., 1) float32, broadcastable against `like` (B, ...); shared by
  every diffusion module."""
  values = jnp.asarray(values, jnp.float32)
  return values.reshape(values.shape + (1,) * (like.ndim - values.ndim))


def preconditioning(sigma, sigma_data):
  """EDM Table 1 for noise levels σ (B,) → (c_skip, c_out, c_in, c_noise), each (B,) float32."""
  sigma = jnp.asarray(sigma, jnp.float32)
  total = sigma**2 + sigma_data**2
  c_skip = sigma_data**2 / total
  c_out = sigma * sigma_data / jnp.sqrt(total)
  c_in = 1.0 / jnp.sqrt(total)
  c_noise = jnp.log(sigma) / 4.0
  return c_skip, c_out, c_in, c_noise


def denoise(network_fn, noisy, sigma, sigma_data):
  """D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise) (eq 7) → (B, ...) float32.

  noisy (B, ...), sigma (B,); network_fn(scaled_noisy (B, ...), c_noise (B,)) → F (B, ...) in any dtype.
  """
  c_skip, c_out, c_in, c_noise = preconditioning(sigma, sigma_data)
  network_out = network_fn(broadcast_per_sample(c_in, noisy) * noisy, c_noise).astype(jnp.float32)
  return broadcast_per_sample(c_skip, noisy) * noisy + broadcast_per_sample(c_out, noisy) * network_out


def sample_training_sigma(rng, batch_size: int, p_mean: float, p_std: float):
  """Training noise levels ln σ ~ N(p_mean, p_std²) (EDM Table 1), shape (B,)."""
  return jnp.exp(p_mean + p_std * jax.random.normal(rng, (batch_size,), jnp.float32))


def loss_weight(sigma, sigma_data):
  """λ(σ) = (σ² + σ_data²) / (σ·σ_data)² (EDM Table 1), shape (B,); makes the effective weight of F's loss 1."""
  return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def edm_loss(network_fn, rng, clean, sigma_data, p_mean, p_std, weight_mask=None):
  """λ(σ)-weighted denoising MSE of clean data (B, ...) (eq 2 with λ, eq 8) → (scalar, per-sample (B,)), fp32.

  `weight_mask` (broadcastable to clean, e.g. frame validity (B, T, 1)) restricts each sample's mean to the
  entries it marks: per_sample = λ(σ)·Σ mask·(D − clean)² / Σ mask. None averages over the whole tensor.
  """
  sigma_rng, noise_rng = jax.random.split(rng)
  clean = clean.astype(jnp.float32)
  batch_size = clean.shape[0]
  sigma = sample_training_sigma(sigma_rng, batch_size, p_mean, p_std)
  noisy = clean + broadcast_per_sample(sigma, clean) * jax.random.normal(noise_rng, clean.shape, jnp.float32)
  squared_error = (denoise(network_fn, noisy, sigma, sigma_data) - clean) ** 2
  if weight_mask is None:
    mask = jnp.ones_like(clean)
  else:
    mask = jnp.broadcast_to(jnp.asarray(weight_mask, jnp.float32), clean.shape)
  mask = mask.reshape(batch_size, -1)
  count = mask.sum(-1)
  # A sample with nothing marked contributes 0 (its numerator is 0) rather than 0/0.
  masked_mean = (squared_error.reshape(batch_size, -1) * mask).sum(-1) / jnp.where(count > 0, count, 1.0)
  per_sample = loss_weight(sigma, sigma_data) * masked_mean
  return per_sample.mean(), per_sample


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float):
  """Sampling schedule (eq 5): σ_0 = σ_max, …, σ_{N−1} = σ_min, then σ_N = 0; shape (N + 1,) float32."""
  ramp = jnp.arange(num_steps, dtype=jnp.float32) / max(num_steps - 1, 1)
  max_root, min_root = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
  sigmas = (max_root + ramp * (min_root - max_root)) ** rho
  return jnp.concatenate([sigmas, jnp.zeros((1,), jnp.float32)])


def heun_sample(denoise_fn, noise, sigmas):
  """Deterministic EDM Heun sampler (Algorithm 1, S_churn = 0) → samples with noise's shape (B, ...).

  noise (B, ...) ~ N(0, I) is scaled by σ_0; sigmas (N + 1,) descending; denoise_fn(x (B, ...), σ scalar) → D.
  A step that lands on σ = 0 is a plain Euler step (no second evaluation, no division by 0).
  """

  def step(x, sigma_pair):
    sigma, sigma_next = sigma_pair
    slope = (x - denoise_fn(x, sigma)) / sigma
    euler = x + (sigma_next - sigma) * slope

    def heun_correction():
      slope_next = (euler - denoise_fn(euler, sigma_next)) / sigma_next
      return x + (sigma_next - sigma) * 0.5 * (slope + slope_next)

    return jax.lax.cond(sigma_next > 0, heun_correction, lambda: euler), None

  samples, _ = jax.lax.scan(step, noise * sigmas[0], (sigmas[:-1], sigmas[1:]))
  return samples
