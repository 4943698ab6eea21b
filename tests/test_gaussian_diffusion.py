"""Gaussian diffusion (RIN / CAD) against independent float64 numpy formulas and a point-mass oracle.

For data that is always one image x*, the exact ε-predictor is ε̂(x_t, γ) = (x_t − √γ·x*)/√(1−γ): its x̂₀ is x* at
every step, so DDIM and DDPM both end at √γ(0)·x* + √(1−γ(0))·ε̂, i.e. x* when γ(0) = 1.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.diffusion import gaussian

pytestmark = pytest.mark.usefixtures("fast_compile")

TIMES = np.array([0.0, 1e-4, 0.1, 0.25, 0.5, 0.73, 0.9, 0.999, 1.0], np.float32)


# ---- independent float64 reference (pix2seq diffusion_utils.py; facts §1.6–1.8) ----


def _ref_sigmoid(t, start, end, tau):
  sigmoid = lambda u: 1 / (1 + np.exp(-u))
  gamma = (sigmoid(end / tau) - sigmoid((t * (end - start) + start) / tau)) / (
    sigmoid(end / tau) - sigmoid(start / tau)
  )
  return np.clip(gamma, 1e-9, 1)


def _ref_cosine(t, start, end, tau):
  power = lambda u: np.cos(u * np.pi / 2) ** (2 * tau)
  return np.clip((power(t * (end - start) + start) - power(end)) / (power(start) - power(end)), 1e-9, 1)


REFERENCE_SCHEDULES = {
  "sigmoid": lambda t: _ref_sigmoid(t, -3.0, 3.0, 0.9),
  "sigmoid:start=-2,end=4,tau=0.7": lambda t: _ref_sigmoid(t, -2.0, 4.0, 0.7),
  "linear": lambda t: np.clip(1 - t, 1e-9, 1),
  "cosine": lambda t: _ref_cosine(t, 0.0, 1.0, 1.0),
  "cosine:start=0.2,end=0.9,tau=1.5": lambda t: _ref_cosine(t, 0.2, 0.9, 1.5),
  "cosine_simple": lambda t: np.cos((t + 2e-4) / (1 + 2.5e-4) * np.pi / 2) ** 2,
}


def _ref_x0_eps(output, x_t, gamma, prediction, clip_x0):
  signal, noise = np.sqrt(gamma), np.sqrt(1 - gamma)
  if prediction == "eps":
    eps_hat, x0_hat = output, (x_t - noise * output) / signal
  else:
    x0_hat, eps_hat = signal * x_t - noise * output, noise * x_t + signal * output
  if clip_x0:
    x0_hat = np.clip(x0_hat, -1, 1)
    eps_hat = (x_t - signal * x0_hat) / noise
  return x0_hat, eps_hat


def _ref_sample(model, noise, gammas, sampler, rng, prediction, clip_x0):
  """A plain loop over the steps; DDPM uses the same per-step noise draws as `gaussian.sample`."""
  x = np.asarray(noise, np.float64)
  num_steps = len(gammas) - 1
  for i in range(num_steps):
    gamma, gamma_next = gammas[i], gammas[i + 1]
    x0_hat, eps_hat = _ref_x0_eps(model(x, gamma), x, gamma, prediction, clip_x0)
    if sampler == "ddim":
      x = np.sqrt(gamma_next) * x0_hat + np.sqrt(1 - gamma_next) * eps_hat
    else:
      alpha = min(max(gamma / gamma_next, 0.0), 1.0)
      mean = (x - (1 - alpha) * eps_hat / np.sqrt(1 - gamma)) / np.sqrt(alpha)
      step_noise = np.asarray(jax.random.normal(jax.random.fold_in(rng, i), x.shape), np.float64)
      x = mean + (np.sqrt(1 - alpha) * step_noise if i < num_steps - 1 else 0.0)
  return x


def _batch(seed, shape=(3, 4, 4, 2), scale=1.0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale


def _point_mass_model(target, prediction):
  """model_fn whose prediction is exact for data that is always `target` (B, ...); the state is passed through."""

  def model_fn(x_t, gamma, step_index, state):
    gamma = gamma.reshape(gamma.shape + (1,) * (x_t.ndim - 1))
    eps = (x_t - jnp.sqrt(gamma) * target) / jnp.sqrt(1 - gamma)
    return (eps if prediction == "eps" else jnp.sqrt(gamma) * eps - jnp.sqrt(1 - gamma) * target), state

  return model_fn


# ---- schedules ----


@pytest.mark.parametrize("spec", list(REFERENCE_SCHEDULES))
def test_schedule_matches_reference(spec):
  gamma = gaussian.noise_schedule(spec)(jnp.asarray(TIMES))
  assert gamma.shape == TIMES.shape and gamma.dtype == jnp.float32
  # float32 resolves γ to ~6e-8 near 1 (and sigmoid's numerator cancels near t = 1), hence atol 1e-7.
  np.testing.assert_allclose(gamma, REFERENCE_SCHEDULES[spec](TIMES.astype(np.float64)), rtol=2e-6, atol=1e-7)
  dense = np.asarray(gaussian.noise_schedule(spec)(jnp.linspace(0, 1, 1001)))
  assert np.all(np.diff(dense) <= 0) and dense.min() > 0 and dense.max() <= 1


def test_schedule_endpoints_and_clipping():
  linear = gaussian.noise_schedule("linear")
  np.testing.assert_array_equal(linear(jnp.array([-0.5, 0.0, 1.0, 1.5])), np.float32([1, 1, 1e-9, 1e-9]))
  for spec in ("sigmoid", "cosine"):
    gamma = np.asarray(gaussian.noise_schedule(spec)(jnp.array([0.0, 1.0])))
    np.testing.assert_allclose(gamma[0], 1.0, atol=6e-8)
    assert 1e-9 <= gamma[1] <= 1e-7  # 0 exactly, clipped at 1e-9 up to float32 rounding
  np.testing.assert_allclose(gaussian.noise_schedule("cosine")(1.0), 1e-9, rtol=1e-6)
  cosine_simple = np.asarray(gaussian.noise_schedule("cosine_simple")(jnp.array([0.0, 1.0])))
  np.testing.assert_allclose(cosine_simple, [1 - 9.87e-8, 6.17e-9], rtol=1e-2, atol=1.2e-7)


def test_schedule_spec_parsing_and_errors():
  assert gaussian.NOISE_SCHEDULES == {
    "sigmoid": {"start": -3.0, "end": 3.0, "tau": 0.9},
    "linear": {},
    "cosine": {"start": 0.0, "end": 1.0, "tau": 1.0},
    "cosine_simple": {},
  }
  t = jnp.asarray(TIMES)
  np.testing.assert_array_equal(gaussian.noise_schedule("sigmoid")(t), gaussian.noise_schedule("sigmoid:tau=0.9")(t))
  assert gaussian.noise_schedule("sigmoid:start=-2, end=4,tau=0.7").keywords == {"start": -2.0, "end": 4.0, "tau": 0.7}
  for spec, message in [
    ("quadratic", "unknown name 'quadratic'"),
    ("sigmoid:temperature=1", "bad parameter 'temperature=1'"),
    ("linear:tau=1", "takes no parameters"),
    ("sigmoid:tau=0", "tau > 0"),
    ("sigmoid:start=3,end=-3", "start < end"),
    ("cosine:start=0.5,end=1.5", "0 <= start < end <= 1"),
  ]:
    with pytest.raises(ValueError, match=message):
      gaussian.noise_schedule(spec)


# ---- forward process, targets, x̂₀/ε̂ ----


def test_add_noise_targets_and_loss_match_numpy():
  clean, noise = _batch(0), _batch(1)
  gamma = np.array([1e-9, 0.3, 0.97], np.float32)
  column = gamma.astype(np.float64)[:, None, None, None]
  x_t = gaussian.add_noise(clean, noise, gamma)
  assert x_t.shape == clean.shape and x_t.dtype == jnp.float32
  np.testing.assert_allclose(x_t, np.sqrt(column) * clean + np.sqrt(1 - column) * noise, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(gaussian.training_target(clean, noise, gamma, "eps"), noise)
  v = np.sqrt(column) * noise - np.sqrt(1 - column) * clean
  np.testing.assert_allclose(gaussian.training_target(clean, noise, gamma, "v"), v, rtol=1e-6, atol=1e-6)
  mean, per_sample = gaussian.diffusion_mse(x_t, noise)
  squared_error = (np.asarray(x_t, np.float64) - noise) ** 2
  assert per_sample.shape == (3,) and mean.shape == ()
  np.testing.assert_allclose(per_sample, squared_error.mean((1, 2, 3)), rtol=1e-6)
  np.testing.assert_allclose(mean, squared_error.mean(), rtol=1e-6)


def test_sample_time_is_uniform_per_sample():
  times = gaussian.sample_time(jax.random.PRNGKey(0), 20000)
  assert times.shape == (20000,) and times.dtype == jnp.float32
  assert float(times.min()) >= 0 and float(times.max()) < 1
  np.testing.assert_allclose([times.mean(), times.var()], [0.5, 1 / 12], atol=5 * 0.3 / math.sqrt(20000))
  assert not np.allclose(times[:8], gaussian.sample_time(jax.random.PRNGKey(1), 8))


@pytest.mark.parametrize("prediction", gaussian.PREDICTION_TYPES)
@pytest.mark.parametrize("clip_x0", [False, True])
def test_exact_prediction_recovers_clean_and_noise(prediction, clip_x0):
  clean, noise = np.clip(_batch(2), -1, 1), _batch(3)
  gamma = np.array([0.02, 0.5, 0.98], np.float32)
  x_t = gaussian.add_noise(clean, noise, gamma)
  target = gaussian.training_target(clean, noise, gamma, prediction)
  x0_hat, eps_hat = gaussian.predicted_x0_and_eps(target, x_t, gamma, prediction, clip_x0=clip_x0)
  assert x0_hat.dtype == eps_hat.dtype == jnp.float32
  # eps at γ = 0.02 divides x_t's float32 rounding (~1e-7) by √γ = 0.14; ε̂ at γ = 0.98 divides by √(1−γ).
  np.testing.assert_allclose(x0_hat, clean, atol=5e-6)
  np.testing.assert_allclose(eps_hat, noise, atol=5e-6)


@pytest.mark.parametrize("prediction", gaussian.PREDICTION_TYPES)
def test_clipping_recomputes_eps_consistently(prediction):
  x_t, output = _batch(4), _batch(5, scale=3.0)
  gamma = np.array([0.05, 0.5, 0.9], np.float32)
  raw_x0, _ = gaussian.predicted_x0_and_eps(output, x_t, gamma, prediction, clip_x0=False)
  x0_hat, eps_hat = gaussian.predicted_x0_and_eps(output, x_t, gamma, prediction)
  assert np.abs(raw_x0).max() > 1.5  # clipping is exercised
  np.testing.assert_array_equal(x0_hat, np.clip(raw_x0, -1, 1))
  column = gamma[:, None, None, None]
  np.testing.assert_allclose(np.sqrt(column) * x0_hat + np.sqrt(1 - column) * eps_hat, x_t, atol=2e-6)
  for gammas, clip_x0 in itertools.product([np.float32(0.3), gamma], [False, True]):  # scalar or per-sample γ
    got = gaussian.predicted_x0_and_eps(output, x_t, gammas, prediction, clip_x0)
    gamma_column = np.asarray(gammas, np.float64).reshape(np.shape(gammas) + (1, 1, 1))
    want = _ref_x0_eps(output.astype(np.float64), x_t.astype(np.float64), gamma_column, prediction, clip_x0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # γ = 1 (linear schedule at t = 0): x̂₀ = x_t, and ε̂ stays finite.
  x0_at_one, eps_at_one = gaussian.predicted_x0_and_eps(output, x_t, np.ones(3, np.float32), prediction)
  assert np.all(np.isfinite(eps_at_one))
  np.testing.assert_allclose(x0_at_one, np.clip(x_t, -1, 1), atol=1e-6)


# ---- steps and samplers ----


def test_ddpm_and_ddim_steps_match_numpy():
  x, eps_hat, x0_hat, noise = _batch(6), _batch(7), np.clip(_batch(8), -1, 1), _batch(9)
  gamma_now = np.array([1e-9, 0.4, 0.9], np.float32)
  gamma_next = np.array([0.2, 0.5, 0.8], np.float32)  # the last is γ_next < γ_now: α clips to 1, no noise
  now, following = gamma_now.astype(np.float64)[:, None, None, None], gamma_next.astype(np.float64)[:, None, None, None]
  alpha = np.clip(now / following, 0, 1)
  mean = (x - (1 - alpha) * eps_hat / np.sqrt(1 - now)) / np.sqrt(alpha)
  noise_free = gaussian.ddpm_step(x, eps_hat, gamma_now, gamma_next, np.zeros_like(noise))
  np.testing.assert_allclose(noise_free, mean, rtol=1e-5, atol=1e-5)  # sample 0's mean is ~1e4: α^{−1/2} = 1.4e4
  np.testing.assert_array_equal(noise_free[2], x[2])
  # The noise enters with standard deviation √(1 − α) (sample 0 left out: 1e-3 of rounding on its 1e4 mean).
  noise_part = gaussian.ddpm_step(x, eps_hat, gamma_now, gamma_next, noise) - noise_free
  np.testing.assert_allclose(noise_part[1:], (np.sqrt(1 - alpha) * noise)[1:], atol=1e-5)
  assert not np.any(noise_part[2])
  ddim = gaussian.ddim_step(eps_hat, x0_hat, gamma_next)
  np.testing.assert_allclose(ddim, np.sqrt(following) * x0_hat + np.sqrt(1 - following) * eps_hat, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gaussian.sampling_times(4), [1, 0.75, 0.5, 0.25, 0])


# Each DDPM case compiles a scan with a random draw (about 1 s of CPU), so the samplers share the four
# (prediction, clip_x0) branches of `predicted_x0_and_eps`, each of which is checked on its own above.
@pytest.mark.parametrize(
  "sampler,prediction,clip_x0",
  [("ddpm", "eps", True), ("ddim", "v", False), ("ddim", "eps", False), ("ddim", "v", True)],
)
def test_jitted_sampler_matches_numpy_loop(sampler, prediction, clip_x0):
  # A well-conditioned schedule (γ ∈ [0.05, 0.95]) and a model whose x̂₀ leaves [−1, 1], so clipping matters.
  schedule = lambda t: 0.05 + 0.9 * (1 - t)
  model = lambda x, gamma, xp=np: 0.8 * x * (1 - gamma) + 0.6 * xp.sin(3 * x) + 0.3
  model_fn = lambda x, gamma, step_index, state: (model(x, gamma[:, None, None, None], jnp), state)
  noise, rng = _batch(10), jax.random.PRNGKey(11)
  run = jax.jit(lambda noise, rng: gaussian.sample(model_fn, noise, schedule, 4, sampler, rng, prediction, clip_x0))
  samples, _ = run(noise, rng)
  gammas = schedule(np.asarray(gaussian.sampling_times(4), np.float64))
  want = _ref_sample(model, noise, gammas, sampler, rng, prediction, clip_x0)
  assert samples.shape == noise.shape and samples.dtype == jnp.float32
  np.testing.assert_allclose(samples, want, rtol=1e-4, atol=1e-4)
  if sampler == "ddpm":  # fresh noise for another key
    assert np.abs(np.asarray(run(noise, jax.random.PRNGKey(12))[0]) - np.asarray(samples)).max() > 1e-2


@pytest.mark.parametrize(
  "sampler,prediction,spec,num_steps",
  [
    ("ddim", "eps", "linear", 2),
    ("ddim", "v", "sigmoid", 7),
    ("ddim", "eps", "cosine", 50),
    ("ddim", "v", "cosine_simple", 20),
    ("ddpm", "v", "sigmoid", 50),
  ],
)
def test_point_mass_oracle_lands_on_the_data(sampler, prediction, spec, num_steps):
  target = np.clip(_batch(12), -0.9, 0.9)
  noise = _batch(13, scale=2.0)
  schedule = gaussian.noise_schedule(spec)
  samples, _ = gaussian.sample(
    _point_mass_model(target, prediction), noise, schedule, num_steps, sampler, jax.random.PRNGKey(14), prediction
  )
  # The end is √γ(0)·x* + √(1−γ(0))·ε̂ with |ε̂| ≲ |noise| + 1 (the first step's x̂₀ is inexact at γ(1) = 1e-9).
  atol = 1e-5 + math.sqrt(1 - float(schedule(0.0))) * (np.abs(noise).max() + 1)
  np.testing.assert_allclose(samples, target, atol=atol)


def test_state_is_threaded_through_the_steps():
  num_steps, offset = 6, 10
  schedule = gaussian.noise_schedule("cosine_simple")

  def model_fn(x_t, gamma, step_index, state):
    assert gamma.shape == (x_t.shape[0],) and step_index.shape == () and step_index.dtype == jnp.int32
    new_state = {
      "calls": state["calls"] + 1,
      "in_order": state["in_order"] & (state["calls"] == step_index + offset),  # the previous step's state
      "gamma_sum": state["gamma_sum"] + gamma,
    }
    return jnp.zeros_like(x_t), new_state

  initial_state = {"calls": jnp.int32(offset), "in_order": jnp.bool_(True), "gamma_sum": jnp.zeros(3)}
  _, final_state = gaussian.sample(model_fn, _batch(15), schedule, num_steps, "ddim", initial_state=initial_state)
  assert int(final_state["calls"]) == offset + num_steps and bool(final_state["in_order"])
  gammas = schedule(gaussian.sampling_times(num_steps))
  np.testing.assert_allclose(final_state["gamma_sum"], np.full(3, np.sum(gammas[:-1])), rtol=1e-6)


def test_sampler_is_one_scan_and_steps_jit():
  model_fn = lambda x, gamma, step_index, state: (0.5 * x, state)
  schedule, noise = gaussian.noise_schedule("sigmoid"), _batch(16)
  jaxpr = jax.make_jaxpr(lambda noise, rng: gaussian.sample(model_fn, noise, schedule, 5, "ddpm", rng))
  assert "scan" in str(jaxpr(noise, jax.random.PRNGKey(17)))
  gamma = jnp.array([0.2, 0.5, 0.9])
  jitted = jax.jit(gaussian.predicted_x0_and_eps, static_argnames=("prediction", "clip_x0"))
  for got, want in zip(
    jitted(noise, 0.3 * noise, gamma, prediction="v"), gaussian.predicted_x0_and_eps(noise, 0.3 * noise, gamma, "v")
  ):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.jit(schedule)(jnp.asarray(TIMES)), schedule(jnp.asarray(TIMES)), rtol=1e-6, atol=1e-7)


def test_clear_errors():
  model_fn = lambda x, gamma, step_index, state: (x, state)
  noise, schedule, rng = _batch(19), gaussian.noise_schedule("linear"), jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match=r"Unknown diffusion sampler 'heun'; choose one of \('ddpm', 'ddim'\)"):
    gaussian.sample(model_fn, noise, schedule, 4, "heun", rng)
  with pytest.raises(ValueError, match=r"Unknown diffusion prediction type 'x0'; choose one of \('eps', 'v'\)"):
    gaussian.sample(model_fn, noise, schedule, 4, "ddim", prediction="x0")
  with pytest.raises(ValueError, match="Unknown diffusion prediction type 'x0'"):
    gaussian.training_target(noise, noise, jnp.ones(3), "x0")
  with pytest.raises(ValueError, match="num_steps >= 1"):
    gaussian.sample(model_fn, noise, schedule, 0, "ddim")
  with pytest.raises(ValueError, match="pass rng"):
    gaussian.sample(model_fn, noise, schedule, 4, "ddpm")
  with pytest.raises(TypeError, match="noise_schedule"):
    gaussian.sample(model_fn, noise, "linear", 4, "ddim")
