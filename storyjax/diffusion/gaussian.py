"""Gaussian (DDPM-family) diffusion as in RIN (pix2seq) and CAD: γ(t) schedules, the forward process, ε/v targets
and the DDIM / DDPM samplers.

γ(t) = ᾱ(t) is the signal variance at time t ∈ [0, 1] (t = 1 is pure noise); x_t = √γ·x₀ + √(1−γ)·ε. Data lives
in [−1, 1]. Pure jnp, jit-able, float32. Formulas follow pix2seq `models/diffusion_utils.py` and CAD
`cad/models/schedulers.py`, `cad/models/samplers/`.
"""

from collections.abc import Callable
import functools
import math

import jax
import jax.numpy as jnp

from storyjax.diffusion.edm import broadcast_per_sample
from storyjax.diffusion.spec import parse_spec

# Each schedule family with its parameters' defaults; the parsing table for `noise_schedule`.
NOISE_SCHEDULES = {
  "sigmoid": {"start": -3.0, "end": 3.0, "tau": 0.9},
  "linear": {},
  "cosine": {"start": 0.0, "end": 1.0, "tau": 1.0},
  "cosine_simple": {},
}
PREDICTION_TYPES = ("eps", "v")
SAMPLERS = ("ddpm", "ddim")
GAMMA_MIN = 1e-9
# In float32, 1 − γ is either 0 (γ = 1) or ≥ 6e-8, so this floor only replaces an exact 0 and keeps ε̂ finite.
_NOISE_VARIANCE_FLOOR = 1e-12


def sigmoid_schedule(t, start: float, end: float, tau: float):
  """γ(t) = [σ(end/τ) − σ((t(end−start)+start)/τ)] / [σ(end/τ) − σ(start/τ)], clipped to [1e-9, 1]; t any shape."""
  t = jnp.asarray(t, jnp.float32)
  sigmoid_start, sigmoid_end = 1 / (1 + math.exp(-start / tau)), 1 / (1 + math.exp(-end / tau))
  gamma = (sigmoid_end - jax.nn.sigmoid((t * (end - start) + start) / tau)) / (sigmoid_end - sigmoid_start)
  return jnp.clip(gamma, GAMMA_MIN, 1.0)


def linear_schedule(t):
  """pix2seq's "simple_linear": γ(t) = clip(1 − t, 1e-9, 1); t any shape."""
  return jnp.clip(1.0 - jnp.asarray(t, jnp.float32), GAMMA_MIN, 1.0)


def cosine_schedule(t, start: float, end: float, tau: float):
  """γ(t) = [c(t(e−s)+s) − c(e)] / [c(s) − c(e)] with c(u) = cos(u·π/2)^{2τ}, clipped to [1e-9, 1]; t any shape."""
  t = jnp.asarray(t, jnp.float32)
  cos_start, cos_end = math.cos(start * math.pi / 2) ** (2 * tau), math.cos(end * math.pi / 2) ** (2 * tau)
  # float32 cos(π/2) is −4e-8: clip at 0 so that a fractional power 2τ stays real.
  cos_t = jnp.maximum(jnp.cos((t * (end - start) + start) * (math.pi / 2)), 0.0) ** (2 * tau)
  return jnp.clip((cos_t - cos_end) / (cos_start - cos_end), GAMMA_MIN, 1.0)


def cosine_simple_schedule(t):
  """The default inference schedule of pix2seq and CAD: γ(t) = cos²(((t + 2e-4)/(1 + 2.5e-4))·π/2); t any shape."""
  return jnp.cos((jnp.asarray(t, jnp.float32) + 2e-4) / (1 + 2.5e-4) * (math.pi / 2)) ** 2


_SCHEDULE_FUNCTIONS = {
  "sigmoid": sigmoid_schedule,
  "linear": linear_schedule,
  "cosine": cosine_schedule,
  "cosine_simple": cosine_simple_schedule,
}


def noise_schedule(spec: str) -> Callable:
  """A config string such as "sigmoid:start=-3,end=3,tau=0.9" or "cosine_simple" → t (any shape) ↦ γ(t) float32.

  Families and defaults: `NOISE_SCHEDULES`. Raises ValueError for an unknown name or parameter, τ ≤ 0, start ≥ end,
  or a cosine range outside [0, 1] (where γ would not fall monotonically from 1 to 0).
  """
  name, parameters = parse_spec(spec, NOISE_SCHEDULES, "noise schedule")
  if name in ("sigmoid", "cosine"):
    start, end, tau = parameters["start"], parameters["end"], parameters["tau"]
    if not tau > 0 or not start < end:
      raise ValueError(f"noise schedule {spec!r}: needs tau > 0 and start < end, got {parameters}")
    if name == "cosine" and not 0 <= start < end <= 1:
      raise ValueError(f"noise schedule {spec!r}: cosine needs 0 <= start < end <= 1, got {parameters}")
  return functools.partial(_SCHEDULE_FUNCTIONS[name], **parameters)


def _check_prediction(prediction: str) -> None:
  if prediction not in PREDICTION_TYPES:
    raise ValueError(f"Unknown diffusion prediction type {prediction!r}; choose one of {PREDICTION_TYPES}.")


def sample_time(rng, batch_size: int):
  """Training times t ~ U(0, 1), shape (B,) float32."""
  return jax.random.uniform(rng, (batch_size,), jnp.float32)


def add_noise(clean, noise, gamma):
  """Forward process x_t = √γ·x₀ + √(1−γ)·ε: clean, noise (B, ...), gamma (B,) → x_t (B, ...) float32."""
  clean, noise = jnp.asarray(clean, jnp.float32), jnp.asarray(noise, jnp.float32)
  return (
    jnp.sqrt(broadcast_per_sample(gamma, clean)) * clean + jnp.sqrt(1.0 - broadcast_per_sample(gamma, clean)) * noise
  )


def training_target(clean, noise, gamma, prediction: str):
  """The network's target for clean, noise (B, ...), gamma (B,): "eps" → ε; "v" → √γ·ε − √(1−γ)·x₀. Float32."""
  _check_prediction(prediction)
  clean, noise = jnp.asarray(clean, jnp.float32), jnp.asarray(noise, jnp.float32)
  if prediction == "eps":
    return noise
  return (
    jnp.sqrt(broadcast_per_sample(gamma, clean)) * noise - jnp.sqrt(1.0 - broadcast_per_sample(gamma, clean)) * clean
  )


def _eps_from_x0(x_t, x0_hat, gamma):
  """ε̂ = (x_t − √γ·x̂₀)/√(1−γ), with 1 − γ floored so that γ = 1 gives a finite ε̂."""
  noise_variance = jnp.maximum(1.0 - broadcast_per_sample(gamma, x_t), _NOISE_VARIANCE_FLOOR)
  return (x_t - jnp.sqrt(broadcast_per_sample(gamma, x_t)) * x0_hat) / jnp.sqrt(noise_variance)


def predicted_x0_and_eps(prediction_output, x_t, gamma, prediction: str, clip_x0: bool = True):
  """The network's output at x_t (B, ...) and gamma (B,) or scalar → (x̂₀, ε̂), each (B, ...) float32.

  "eps": x̂₀ = (x_t − √(1−γ)·ε̂)/√γ. "v": x̂₀ = √γ·x_t − √(1−γ)·v̂, ε̂ = √(1−γ)·x_t + √γ·v̂.
  clip_x0 clips x̂₀ to [−1, 1] and recomputes ε̂ from it (pix2seq's truncate_noise), so √γ·x̂₀ + √(1−γ)·ε̂ = x_t.
  """
  _check_prediction(prediction)
  x_t, output = jnp.asarray(x_t, jnp.float32), jnp.asarray(prediction_output, jnp.float32)
  signal_scale, noise_scale = (
    jnp.sqrt(broadcast_per_sample(gamma, x_t)),
    jnp.sqrt(1.0 - broadcast_per_sample(gamma, x_t)),
  )
  if prediction == "eps":
    eps_hat = output
    x0_hat = (x_t - noise_scale * eps_hat) / signal_scale
  else:
    x0_hat = signal_scale * x_t - noise_scale * output
    eps_hat = noise_scale * x_t + signal_scale * output
  if clip_x0:
    x0_hat = jnp.clip(x0_hat, -1.0, 1.0)
    eps_hat = _eps_from_x0(x_t, x0_hat, gamma)
  return x0_hat, eps_hat


def diffusion_mse(prediction, target):
  """Unweighted MSE of prediction against target (B, ...) → (mean over all elements, per-sample mean (B,)), fp32."""
  squared_error = (jnp.asarray(prediction, jnp.float32) - jnp.asarray(target, jnp.float32)) ** 2
  per_sample = squared_error.reshape(squared_error.shape[0], -1).mean(-1)
  return per_sample.mean(), per_sample


def sampling_times(num_steps: int):
  """The sampling grid t_i = 1 − i/N for i = 0..N, shape (N + 1,) float32 (t_0 = 1 is pure noise, t_N = 0)."""
  return 1.0 - jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps


def ddim_step(eps_hat, x0_hat, gamma_next):
  """DDIM: x_next = √γ_next·x̂₀ + √(1−γ_next)·ε̂; eps_hat, x0_hat (B, ...), gamma_next (B,) or scalar."""
  return (
    jnp.sqrt(broadcast_per_sample(gamma_next, x0_hat)) * x0_hat
    + jnp.sqrt(1.0 - broadcast_per_sample(gamma_next, x0_hat)) * eps_hat
  )


def ddpm_step(x, eps_hat, gamma_now, gamma_next, noise):
  """Ancestral DDPM step with the "large" variance: x, eps_hat, noise (B, ...); gammas (B,) or scalar → (B, ...).

  α = clip(γ_now/γ_next, 0, 1); x_next = α^{−1/2}·(x − (1−α)·ε̂/√(1−γ_now)) + √(1−α)·noise.
  """
  alpha = jnp.clip(broadcast_per_sample(gamma_now, x) / broadcast_per_sample(gamma_next, x), 0.0, 1.0)
  noise_std_now = jnp.sqrt(jnp.maximum(1.0 - broadcast_per_sample(gamma_now, x), _NOISE_VARIANCE_FLOOR))
  mean = (x - (1.0 - alpha) * eps_hat / noise_std_now) / jnp.sqrt(alpha)
  return mean + jnp.sqrt(1.0 - alpha) * noise


def sample(
  model_fn,
  noise,
  schedule: Callable,
  num_steps: int,
  sampler: str = "ddpm",
  rng=None,
  prediction: str = "eps",
  clip_x0: bool = True,
  initial_state=None,
):
  """Runs `num_steps` DDPM or DDIM steps from pure noise (B, ...) → (samples (B, ...) float32, final state).

  Step i = 0..N−1 goes from t_i to t_{i+1} on `sampling_times(N)` with γ = schedule(t), a callable such as
  `noise_schedule("cosine_simple")`. model_fn(x_t (B, ...), gamma (B,), step_index int32 scalar, state) →
  (prediction (B, ...), new_state); `state` is any pytree carried between steps (e.g. RIN's self-conditioning
  latents), starting at `initial_state`, and new_state must keep its structure, shapes and dtypes. x̂₀ and ε̂ come
  from `predicted_x0_and_eps` (clip_x0 then also drives DDPM's mean through the recomputed ε̂).
  DDPM draws step i's noise from fold_in(rng, i) and adds none on the last step, so the last step returns its mean:
  with γ(0) = 1 that is pix2seq's returned x̂₀, and CAD's final x without its last noise term. `rng` is unused by
  DDIM. Returns the final x, as CAD does (not the last x̂₀, as pix2seq does).
  """
  if sampler not in SAMPLERS:
    raise ValueError(f"Unknown diffusion sampler {sampler!r}; choose one of {SAMPLERS}.")
  _check_prediction(prediction)
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"Diffusion sampling needs num_steps >= 1 (an integer), got {num_steps!r}.")
  if sampler == "ddpm" and rng is None:
    raise ValueError("The DDPM sampler draws noise at every step: pass rng (a PRNG key), or use sampler='ddim'.")
  if not callable(schedule):
    raise TypeError(f"schedule must be a callable t ↦ γ(t), e.g. noise_schedule('cosine_simple'); got {schedule!r}")
  num_steps = int(num_steps)
  noise = jnp.asarray(noise, jnp.float32)
  batch_size = noise.shape[0]
  gammas = jnp.asarray(schedule(sampling_times(num_steps)), jnp.float32)

  def step(carry, step_inputs):
    x, state = carry
    step_index, gamma_now, gamma_next = step_inputs
    output, state = model_fn(x, jnp.full((batch_size,), gamma_now), step_index, state)
    x0_hat, eps_hat = predicted_x0_and_eps(output, x, gamma_now, prediction, clip_x0)
    if sampler == "ddim":
      return (ddim_step(eps_hat, x0_hat, gamma_next), state), None
    step_noise = jax.random.normal(jax.random.fold_in(rng, step_index), x.shape, jnp.float32)
    step_noise = jnp.where(step_index < num_steps - 1, step_noise, 0.0)
    return (ddpm_step(x, eps_hat, gamma_now, gamma_next, step_noise), state), None

  step_inputs = (jnp.arange(num_steps, dtype=jnp.int32), gammas[:-1], gammas[1:])
  (samples, final_state), _ = jax.lax.scan(step, (noise, initial_state), step_inputs)
  return samples, final_state
