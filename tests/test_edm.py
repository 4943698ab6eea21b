"""EDM preconditioning, loss, schedule and Heun sampler against an independent float64 numpy version."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.diffusion import edm
from storyjax.diffusion.guidance import classifier_free_guidance

SIGMA_DATA = 0.5


def reference_sigmas(num_steps, sigma_min, sigma_max, rho):
  sigmas = [(sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            for i in range(num_steps)]
  return np.array(sigmas + [0.0])


def reference_heun(denoiser, noise, sigmas):
  """EDM Algorithm 1 with S_churn = 0, written as a plain loop."""
  x = noise * sigmas[0]
  for i in range(len(sigmas) - 1):
    d = (x - denoiser(x, sigmas[i])) / sigmas[i]
    x_next = x + (sigmas[i + 1] - sigmas[i]) * d
    if sigmas[i + 1] != 0:
      d_next = (x_next - denoiser(x_next, sigmas[i + 1])) / sigmas[i + 1]
      x_next = x + (sigmas[i + 1] - sigmas[i]) * (0.5 * d + 0.5 * d_next)
    x = x_next
  return x


def gaussian_denoiser(mean, std):
  """Exact E[x0 | x0 + σ·n] for x0 ~ N(mean, std²): (std²·x + σ²·mean) / (std² + σ²)."""
  return lambda x, sigma: (std**2 * x + sigma**2 * mean) / (std**2 + sigma**2)


def test_karras_sigmas_match_reference():
  ours = np.asarray(edm.karras_sigmas(10, 0.002, 80.0, 40.0))
  reference = reference_sigmas(10, 0.002, 80.0, 40.0)
  np.testing.assert_allclose(ours, reference, rtol=1e-5)
  assert ours[0] == pytest.approx(80.0, rel=1e-5) and ours[-2] == pytest.approx(0.002, rel=1e-5) and ours[-1] == 0.0
  assert np.all(np.diff(ours) < 0)


def test_preconditioning_values():
  sigma = np.array([0.01, 0.5, 3.0, 80.0])
  c_skip, c_out, c_in, c_noise = map(np.asarray, edm.preconditioning(jnp.asarray(sigma), SIGMA_DATA))
  total = sigma**2 + SIGMA_DATA**2
  np.testing.assert_allclose(c_skip, SIGMA_DATA**2 / total, rtol=1e-6)
  np.testing.assert_allclose(c_out, sigma * SIGMA_DATA / np.sqrt(total), rtol=1e-6)
  np.testing.assert_allclose(c_in, 1 / np.sqrt(total), rtol=1e-6)
  np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-6)
  # The preconditioned target has unit variance for data of std σ_data (EDM's design goal).
  np.testing.assert_allclose((1 - c_skip) ** 2 * SIGMA_DATA**2 + c_skip**2 * sigma**2, c_out**2, rtol=1e-5)


def test_heun_matches_numpy_reference():
  rng = np.random.default_rng(0)
  mean, std = rng.normal(size=(3, 7)), rng.uniform(0.2, 1.0, size=(3, 7))
  noise = rng.normal(size=(3, 7))
  sigmas = reference_sigmas(10, 0.002, 80.0, 40.0)
  reference = reference_heun(gaussian_denoiser(mean, std), noise, sigmas)
  denoiser = gaussian_denoiser(jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32))
  ours = jax.jit(lambda n: edm.heun_sample(denoiser, n, edm.karras_sigmas(10, 0.002, 80.0, 40.0)))(
      jnp.asarray(noise, jnp.float32))
  np.testing.assert_allclose(np.asarray(ours), reference, rtol=1e-4, atol=1e-4)


def test_heun_reaches_the_data_distribution():
  mean, std = 1.5, 0.3
  noise = jax.random.normal(jax.random.PRNGKey(0), (20_000,))
  samples = np.asarray(edm.heun_sample(gaussian_denoiser(mean, std), noise,
                                       edm.karras_sigmas(40, 0.002, 80.0, 7.0)))
  assert abs(samples.mean() - mean) < 0.01
  assert abs(samples.std() - std) < 0.01


def test_denoise_uses_network_through_preconditioning():
  """With F = the ideal preconditioned output, D equals the exact Gaussian denoiser."""
  mean, std = 0.0, SIGMA_DATA
  sigma = jnp.array([0.1, 1.0, 10.0])
  noisy = jnp.array([[0.3], [-1.0], [4.0]])
  exact = gaussian_denoiser(mean, std)(noisy, sigma[:, None])

  def ideal_network(scaled, c_noise):
    sigma_here = jnp.exp(4 * c_noise)[:, None]
    c_skip, c_out, c_in, _ = edm.preconditioning(sigma_here, SIGMA_DATA)
    x = scaled / c_in
    return (gaussian_denoiser(mean, std)(x, sigma_here) - c_skip * x) / c_out

  np.testing.assert_allclose(np.asarray(edm.denoise(ideal_network, noisy, sigma, SIGMA_DATA)), np.asarray(exact),
                             rtol=1e-5, atol=1e-6)


def test_loss_is_zero_for_exact_denoiser_and_ignores_masked_frames():
  rng = jax.random.PRNGKey(3)
  clean = jnp.full((4, 5, 2), 0.7)
  mask = jnp.array([[1, 1, 1, 0, 0]] * 4, jnp.float32)[..., None]

  def exact_network(scaled, c_noise):  # knows the data is the constant 0.7: F = (0.7 − c_skip·x)/c_out
    sigma = jnp.exp(4 * c_noise)[:, None, None]
    c_skip, c_out, c_in, _ = edm.preconditioning(sigma, SIGMA_DATA)
    return (0.7 - c_skip * scaled / c_in) / c_out

  loss, per_sample = edm.edm_loss(exact_network, rng, clean, SIGMA_DATA, -1.2, 1.2, weight_mask=mask)
  assert float(loss) < 1e-6 and per_sample.shape == (4,)

  def zero_network(scaled, c_noise):
    return jnp.zeros_like(scaled)

  masked_loss, _ = edm.edm_loss(zero_network, rng, clean, SIGMA_DATA, -1.2, 1.2, weight_mask=mask)
  changed = clean.at[:, 3:].set(100.0)  # only masked frames change
  changed_loss, _ = edm.edm_loss(zero_network, rng, changed, SIGMA_DATA, -1.2, 1.2, weight_mask=mask)
  assert float(masked_loss) == pytest.approx(float(changed_loss), rel=1e-6)

  # Unmasked, with F = 0: D = c_skip·(x0 + σn), so loss = λ(σ)·mean((c_skip − 1)·x0 + c_skip·σ·n)².
  sigma_rng, noise_rng = jax.random.split(rng)
  sigma = np.asarray(edm.sample_training_sigma(sigma_rng, 4, -1.2, 1.2), np.float64)
  noise = np.asarray(jax.random.normal(noise_rng, clean.shape), np.float64)
  c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
  weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
  error = (c_skip[:, None, None] - 1) * 0.7 + c_skip[:, None, None] * sigma[:, None, None] * noise
  expected = (weight * (error**2).reshape(4, -1).mean(-1)).mean()
  unmasked, _ = edm.edm_loss(zero_network, rng, clean, SIGMA_DATA, -1.2, 1.2)
  assert float(unmasked) == pytest.approx(expected, rel=1e-4)


def test_training_sigma_distribution():
  sigma = np.asarray(edm.sample_training_sigma(jax.random.PRNGKey(0), 100_000, -1.2, 1.2))
  assert abs(np.log(sigma).mean() + 1.2) < 0.02 and abs(np.log(sigma).std() - 1.2) < 0.02


def test_guidance_conventions():
  cond, uncond = jnp.array([2.0]), jnp.array([1.0])
  assert float(classifier_free_guidance(cond, uncond, 1.4)[0]) == pytest.approx(2.4)   # 1 + 1.4·1
  assert float(classifier_free_guidance(cond, uncond, 1.0)[0]) == pytest.approx(2.0)   # w=1: conditional
  assert float(classifier_free_guidance(cond, uncond, 1.4, "cad")[0]) == pytest.approx(3.4)  # 2.4·2 − 1.4·1
  with pytest.raises(ValueError, match="director"):
    classifier_free_guidance(cond, uncond, 1.0, "dit")
