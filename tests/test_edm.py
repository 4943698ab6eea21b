"""EDM and classifier-free guidance against an independent float64 numpy reference and analytic Gaussian data.

For data x ~ N(μ, s²) per dimension the exact denoiser is D(x; σ) = (s²·x + σ²·μ)/(s² + σ²), and the
probability-flow ODE maps x(σ_max) to μ + (x(σ_max) − μ)·s/√(s² + σ_max²) at σ = 0.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.diffusion import edm
from storyjax.diffusion.guidance import classifier_free_guidance, guided_denoiser

pytestmark = pytest.mark.usefixtures("fast_compile")

SIGMA_DATA = 0.5
DATA_MEAN = np.array([1.5, -0.7, 0.3, 0.0])
DATA_STD = np.array([0.4, 1.0, 2.0, 0.05])


# ---- independent float64 reference (EDM paper, Table 1, eq 5, Algorithm 1) ----


def _ref_preconditioning(sigma, sigma_data):
  sigma = np.asarray(sigma, np.float64)
  c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
  c_out = sigma * sigma_data / np.sqrt(sigma**2 + sigma_data**2)
  c_in = 1 / np.sqrt(sigma**2 + sigma_data**2)
  return c_skip, c_out, c_in, np.log(sigma) / 4


def _ref_sigmas(num_steps, sigma_min, sigma_max, rho):
  sigmas = [
    (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    for i in range(num_steps)
  ]
  return np.array(sigmas + [0.0])


def _ref_heun(denoiser, noise, sigmas):
  x = np.asarray(noise, np.float64) * sigmas[0]
  for sigma, sigma_next in itertools.pairwise(sigmas):
    slope = (x - denoiser(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * slope
    if sigma_next > 0:
      slope_next = (x_next - denoiser(x_next, sigma_next)) / sigma_next
      x_next = x + (sigma_next - sigma) * (slope + slope_next) / 2
    x = x_next
  return x


def _gaussian_denoiser(x, sigma, xp=np):
  """Exact D(x; σ) for data N(DATA_MEAN, DATA_STD²); x (B, D), σ scalar."""
  var = xp.asarray(DATA_STD**2, x.dtype)
  return (var * x + sigma**2 * xp.asarray(DATA_MEAN, x.dtype)) / (var + sigma**2)


def _exact_network(sigma_data):
  """network_fn whose preconditioned output makes `edm.denoise` the exact Gaussian denoiser."""

  def network_fn(scaled_noisy, c_noise):
    sigma = jnp.exp(4 * c_noise)[:, None]
    total = sigma**2 + sigma_data**2
    noisy = scaled_noisy * jnp.sqrt(total)
    c_skip, c_out = sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total)
    return (_gaussian_denoiser(noisy, sigma, jnp) - c_skip * noisy) / c_out

  return network_fn


# ---- preconditioning, denoise, schedule ----


def test_preconditioning_matches_reference():
  sigma = np.array([0.002, 0.03, 0.5, 1.0, 7.3, 80.0])
  ours = edm.preconditioning(jnp.asarray(sigma, jnp.float32), SIGMA_DATA)
  for got, want in zip(ours, _ref_preconditioning(sigma, SIGMA_DATA)):
    assert got.shape == (6,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_denoise_combines_skip_and_network_output():
  rng = np.random.default_rng(0)
  noisy = rng.normal(size=(3, 5, 2)).astype(np.float32)
  sigma = np.array([0.01, 0.5, 20.0])
  network_out = rng.normal(size=(3, 5, 2))
  seen = {}

  def network_fn(scaled_noisy, c_noise):
    seen["scaled"], seen["c_noise"] = scaled_noisy, c_noise
    return jnp.asarray(network_out, jnp.bfloat16)

  denoised = edm.denoise(network_fn, jnp.asarray(noisy), jnp.asarray(sigma, jnp.float32), SIGMA_DATA)
  c_skip, c_out, c_in, c_noise = (c[:, None, None] for c in _ref_preconditioning(sigma, SIGMA_DATA))
  want = c_skip * noisy + c_out * np.asarray(jnp.asarray(network_out, jnp.bfloat16), np.float64)
  assert denoised.shape == (3, 5, 2) and denoised.dtype == jnp.float32
  np.testing.assert_allclose(denoised, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(seen["scaled"], c_in * noisy, rtol=1e-6)
  np.testing.assert_allclose(seen["c_noise"], c_noise[:, 0, 0], rtol=1e-6)


@pytest.mark.parametrize("num_steps,rho", [(10, 40.0), (18, 7.0), (2, 40.0)])
def test_karras_sigmas_match_reference(num_steps, rho):
  sigmas = edm.karras_sigmas(num_steps, 0.002, 80.0, rho)
  want = _ref_sigmas(num_steps, 0.002, 80.0, rho)
  assert sigmas.shape == (num_steps + 1,) and sigmas.dtype == jnp.float32
  np.testing.assert_allclose(sigmas, want, rtol=2e-5, atol=0)
  np.testing.assert_allclose([sigmas[0], sigmas[-2]], [80.0, 0.002], rtol=2e-5)
  assert sigmas[-1] == 0.0 and np.all(np.diff(np.asarray(sigmas)) < 0)


# ---- Heun sampler ----


def test_heun_matches_numpy_reference():
  noise = np.random.default_rng(1).normal(size=(64, 4))
  sigmas = _ref_sigmas(10, 0.002, 80.0, 40.0)
  want = _ref_heun(_gaussian_denoiser, noise, sigmas)
  denoise_fn = lambda x, sigma: _gaussian_denoiser(x, sigma, jnp)
  got = edm.heun_sample(denoise_fn, jnp.asarray(noise, jnp.float32), jnp.asarray(sigmas, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Through the preconditioned network and our own schedule: same samples.
  network_fn = _exact_network(SIGMA_DATA)
  via_network = edm.heun_sample(
    lambda x, sigma: edm.denoise(network_fn, x, jnp.full((x.shape[0],), sigma), SIGMA_DATA),
    jnp.asarray(noise, jnp.float32),
    edm.karras_sigmas(10, 0.002, 80.0, 40.0),
  )
  np.testing.assert_allclose(via_network, want, rtol=1e-4, atol=1e-4)


def test_heun_with_many_steps_samples_the_data_distribution():
  num_samples = 8192
  noise = jax.random.normal(jax.random.PRNGKey(0), (num_samples, 4))
  sigmas = edm.karras_sigmas(256, 0.002, 80.0, 7.0)
  samples = np.asarray(edm.heun_sample(lambda x, sigma: _gaussian_denoiser(x, sigma, jnp), noise, sigmas))
  # Statistics: 5 standard errors (mean: s/√n, std: s/√(2n)).
  mean_error, std_error = np.abs(samples.mean(0) - DATA_MEAN), np.abs(samples.std(0) - DATA_STD)
  assert np.all(mean_error < 5 * DATA_STD / np.sqrt(num_samples)), (samples.mean(0), DATA_MEAN)
  assert np.all(std_error < 5 * DATA_STD / np.sqrt(2 * num_samples)), (samples.std(0), DATA_STD)
  # Per sample: the exact probability-flow ODE solution (float64 Heun with these steps is within 0.08% of s).
  start = np.asarray(noise, np.float64) * 80.0
  exact = DATA_MEAN + (start - DATA_MEAN) * DATA_STD / np.sqrt(DATA_STD**2 + 80.0**2)
  assert np.all(np.abs(samples - exact).max(0) < 2e-3 * DATA_STD), np.abs(samples - exact).max(0) / DATA_STD


def test_heun_jits_to_one_loop():
  traces = []

  def denoise_fn(x, sigma):
    traces.append(sigma)
    return _gaussian_denoiser(x, sigma, jnp)

  noise = jnp.ones((2, 4))
  for num_steps in (10, 40):
    traces.clear()
    sampler = jax.jit(lambda noise, sigmas: edm.heun_sample(denoise_fn, noise, sigmas))
    sigmas = edm.karras_sigmas(num_steps, 0.002, 80.0, 40.0)
    jaxpr = jax.make_jaxpr(sampler)(noise, sigmas)
    assert "scan" in str(jaxpr)
    assert len(traces) == 2  # one evaluation and one Heun correction, traced once whatever num_steps
    np.testing.assert_allclose(sampler(noise, sigmas), edm.heun_sample(denoise_fn, noise, sigmas), rtol=1e-6)
    assert np.all(np.isfinite(sampler(noise, sigmas)))


# ---- loss ----


def test_training_sigma_is_log_normal():
  sigma = edm.sample_training_sigma(jax.random.PRNGKey(3), 20000, -1.2, 1.2)
  assert sigma.shape == (20000,) and np.all(sigma > 0)
  log_sigma = np.log(np.asarray(sigma, np.float64))
  np.testing.assert_allclose([log_sigma.mean(), log_sigma.std()], [-1.2, 1.2], atol=5 * 1.2 / np.sqrt(20000))


def test_loss_weight_formula():
  sigma = np.array([0.002, 0.1, 0.5, 3.0, 80.0])
  want = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
  np.testing.assert_allclose(edm.loss_weight(jnp.asarray(sigma, jnp.float32), SIGMA_DATA), want, rtol=1e-6)
  # λ(σ)·c_out(σ)² = 1: the network's own target has unit weight (EDM eq 8).
  _, c_out, _, _ = _ref_preconditioning(sigma, SIGMA_DATA)
  np.testing.assert_allclose(want * c_out**2, 1.0, rtol=1e-12)


def test_edm_loss_is_zero_for_the_exact_denoiser():
  clean = jnp.asarray(np.random.default_rng(4).normal(size=(16, 30, 9)), jnp.float32)

  def network_fn(scaled_noisy, c_noise):  # D = clean exactly, whatever the noise
    sigma = jnp.exp(4 * c_noise)[:, None, None]
    total = sigma**2 + SIGMA_DATA**2
    noisy = scaled_noisy * jnp.sqrt(total)
    return (clean - SIGMA_DATA**2 / total * noisy) / (sigma * SIGMA_DATA / jnp.sqrt(total))

  loss, per_sample = edm.edm_loss(network_fn, jax.random.PRNGKey(5), clean, SIGMA_DATA, -1.2, 1.2)
  assert per_sample.shape == (16,) and loss.shape == ()
  assert float(loss) < 1e-6
  wrong, _ = edm.edm_loss(lambda x, c: jnp.zeros_like(x), jax.random.PRNGKey(5), clean, SIGMA_DATA, -1.2, 1.2)
  assert float(wrong) > 1.0


def _affine_network(scaled_noisy, c_noise):
  return 0.3 * scaled_noisy - 0.2 + 0.1 * c_noise[:, None, None]


def _recorded_loss(clean, weight_mask):
  """edm_loss, and the numpy reference recomputed from the σ and noisy input the network saw."""
  seen = {}

  def network_fn(scaled_noisy, c_noise):
    seen["scaled"], seen["c_noise"] = np.asarray(scaled_noisy, np.float64), np.asarray(c_noise, np.float64)
    return _affine_network(scaled_noisy, c_noise)

  loss, per_sample = edm.edm_loss(
    network_fn, jax.random.PRNGKey(6), jnp.asarray(clean), SIGMA_DATA, -1.2, 1.2, weight_mask=weight_mask
  )
  sigma = np.exp(4 * seen["c_noise"])
  c_skip, c_out, c_in, _ = (c[:, None, None] for c in _ref_preconditioning(sigma, SIGMA_DATA))
  noisy = seen["scaled"] / c_in
  denoised = c_skip * noisy + c_out * (0.3 * seen["scaled"] - 0.2 + 0.1 * seen["c_noise"][:, None, None])
  mask = np.ones_like(clean) if weight_mask is None else np.broadcast_to(weight_mask, clean.shape)
  weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
  want = weight * (mask * (denoised - clean) ** 2).sum((1, 2)) / mask.sum((1, 2))
  return loss, per_sample, want


def test_edm_loss_matches_reference_and_ignores_masked_frames():
  rng = np.random.default_rng(7)
  clean = rng.normal(size=(4, 12, 3)).astype(np.float32)
  frame_mask = (np.arange(12)[None, :, None] < np.array([12, 7, 3, 1])[:, None, None]).astype(np.float32)

  loss, per_sample, want = _recorded_loss(clean, frame_mask)
  np.testing.assert_allclose(per_sample, want, rtol=1e-4)
  np.testing.assert_allclose(loss, want.mean(), rtol=1e-4)

  garbage = np.where(frame_mask > 0, clean, rng.normal(scale=100.0, size=clean.shape)).astype(np.float32)
  garbage_loss, garbage_per_sample, _ = _recorded_loss(garbage, frame_mask)
  np.testing.assert_allclose(garbage_per_sample, per_sample, rtol=1e-6)
  np.testing.assert_allclose(garbage_loss, loss, rtol=1e-6)

  _unmasked_loss, unmasked_per_sample, unmasked_want = _recorded_loss(clean, None)
  np.testing.assert_allclose(unmasked_per_sample, unmasked_want, rtol=1e-4)
  assert not np.allclose(unmasked_per_sample[1:], per_sample[1:], rtol=1e-3)


# ---- classifier-free guidance ----


def test_guidance_conventions():
  cond, uncond = jnp.array([2.0, -1.0]), jnp.array([0.5, 1.0])
  np.testing.assert_allclose(classifier_free_guidance(cond, uncond, 1.4), [2.6, -1.8], rtol=1e-6)
  np.testing.assert_allclose(classifier_free_guidance(cond, uncond, 1.4, "cad"), [4.1, -3.8], rtol=1e-6)
  np.testing.assert_allclose(classifier_free_guidance(cond, uncond, 1.0, "director"), cond)
  np.testing.assert_allclose(classifier_free_guidance(cond, uncond, 0.0, "director"), uncond)
  np.testing.assert_allclose(classifier_free_guidance(cond, uncond, 0.0, "cad"), cond)
  with pytest.raises(ValueError, match="director.*cad"):
    classifier_free_guidance(cond, uncond, 1.0, "ddpm")
  with pytest.raises(ValueError, match="director.*cad"):
    guided_denoiser(lambda x, sigma: (x, x), 1.0, "ddpm")


def test_guided_denoiser_wraps_cond_uncond_fn():
  def cond_uncond(x, sigma):
    return 2.0 * x + sigma, x - sigma

  x = jnp.array([[1.0, -2.0]])
  want = (x - 0.5) + 3.0 * ((2.0 * x + 0.5) - (x - 0.5))
  np.testing.assert_allclose(guided_denoiser(cond_uncond, 3.0)(x, 0.5), want, rtol=1e-6)
  want_cad = (2.0 * x + 0.5) + 3.0 * ((2.0 * x + 0.5) - (x - 0.5))
  np.testing.assert_allclose(guided_denoiser(cond_uncond, 3.0, "cad")(x, 0.5), want_cad, rtol=1e-6)
  samples = edm.heun_sample(
    guided_denoiser(lambda x, s: (_gaussian_denoiser(x, s, jnp),) * 2, 1.4),
    jnp.ones((3, 4)),
    edm.karras_sigmas(10, 0.002, 80.0, 40.0),
  )
  reference = _ref_heun(_gaussian_denoiser, np.ones((3, 4)), _ref_sigmas(10, 0.002, 80.0, 40.0))
  np.testing.assert_allclose(samples, reference, rtol=1e-4, atol=1e-5)
