"""Classifier-free guidance: the two sign conventions, CA-CFG, and guidance-weight schedules over sampling steps.

Conventions for the weight w applied to conditional / unconditional predictions of the same shape (B, ...):
- "director": uncond + w·(cond − uncond); w = 1 is the conditional model alone.
- "cad": cond + ω·(cond − uncond) = (1 + ω)·cond − ω·uncond (thesis eq 3.4); ω = 0 is the conditional model alone.
Both give the same prediction when w = 1 + ω (`to_convention`).

CA-CFG (coherence-aware CFG, eq 3.4) is the "cad" convention with cond = ε(x_t, y, c=1) and uncond = ε(x_t, y, c=0):
the same prompt y in both branches, only the coherence c differs.

Schedules (`guidance_weights`, `schedule_weights`) give one CAD-convention ω per sampling step, in denoising order
(index 0 = the noisiest, first step), following Wang et al. (TMLR 2024) and eqs 3.7 and 3.8.
"""

import numpy as np

from storyjax.diffusion.spec import parse_spec

CONVENTIONS = ("director", "cad")
CONFIG_KEY = "diffusion.guidance_schedule"
CLAMP_BASES = ("linear", "cosine")

# Heuristic shapes as functions of the denoising progress u ∈ [0, 1] (0 = first, noisiest step); "increasing" means
# increasing along denoising. Each is rescaled to mean ω over the sampling steps (see `guidance_weights`).
_SHAPES = {
  "static": np.ones_like,
  "linear": lambda u: 2 * u,
  "invlinear": lambda u: 2 * (1 - u),
  "cosine": lambda u: 1 - np.cos(np.pi * u),
  "sine": lambda u: 1 + np.cos(np.pi * u),
  # Named by shape: V is lowest mid-process and highest at both ends, Λ the reverse. The thesis' piecewise
  # formulas, read literally, swap the two.
  "v": lambda u: 4 * (np.maximum(u, 1 - u) - 0.5),
  "lambda": lambda u: 4 * np.minimum(u, 1 - u),
}
# Each family with its parameters' defaults; the parsing table for `diffusion.guidance_schedule`.
GUIDANCE_SCHEDULES = {
  **{name: {} for name in _SHAPES},
  "pcs": {"s": 1.0},
  "clamp": {"c": 2.0, "base": "linear"},
}


def classifier_free_guidance(cond, uncond, weight, convention: str = "director"):
  """Combines conditional and unconditional predictions cond, uncond (B, ...) → (B, ...).

  `weight` is a scalar or an array whose shape is a prefix of cond's, e.g. one weight per sample (B,), broadcast
  over the trailing dims. "director": uncond + w·(cond − uncond); "cad": cond + ω·(cond − uncond) (eq 3.4).
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"Unknown guidance convention {convention!r}; choose one of {CONVENTIONS}.")
  weight_shape, cond_shape = np.shape(weight), np.shape(cond)
  if weight_shape:
    if weight_shape != cond_shape[: len(weight_shape)]:
      raise ValueError(
        f"Guidance weight of shape {weight_shape} does not match the leading dims of predictions {cond_shape}; "
        "pass a scalar or one weight per sample (B,)."
      )
    weight = np.reshape(weight, weight_shape + (1,) * (len(cond_shape) - len(weight_shape)))
  if convention == "director":
    return uncond + weight * (cond - uncond)
  return cond + weight * (cond - uncond)  # eq 3.4


def to_convention(omega_cad, convention: str):
  """CAD-convention weights ω (any shape) → the same guidance in `convention` ("director": w = 1 + ω)."""
  if convention not in CONVENTIONS:
    raise ValueError(f"Unknown guidance convention {convention!r}; choose one of {CONVENTIONS}.")
  return 1 + omega_cad if convention == "director" else omega_cad


def guided_denoiser(denoise_cond_uncond_fn, weight, convention: str = "director"):
  """Wraps fn(x, σ) → (cond, uncond) into fn(x, σ) → guided D, e.g. for `edm.heun_sample`."""
  if convention not in CONVENTIONS:
    raise ValueError(f"Unknown guidance convention {convention!r}; choose one of {CONVENTIONS}.")

  def guided(x, sigma):
    cond, uncond = denoise_cond_uncond_fn(x, sigma)
    return classifier_free_guidance(cond, uncond, weight, convention)

  return guided


def _check_parameters(name: str, parameters: dict, what: str) -> dict:
  """→ the family's parameters with defaults filled in; ValueError naming `what` for a bad name or value."""
  if name not in GUIDANCE_SCHEDULES:
    raise ValueError(f"{what}: unknown guidance schedule {name!r}; choose one of {tuple(GUIDANCE_SCHEDULES)}")
  unknown = set(parameters) - set(GUIDANCE_SCHEDULES[name])
  if unknown:
    raise ValueError(
      f"{what}: {name!r} takes no parameter(s) {sorted(unknown)}; its parameters and defaults are "
      f"{GUIDANCE_SCHEDULES[name] or 'none'}"
    )
  parameters = {**GUIDANCE_SCHEDULES[name], **parameters}
  if name == "pcs" and not float(parameters["s"]) > 0:
    raise ValueError(f"{what}: pcs needs s > 0 (u**s must start at 0), got s={parameters['s']}")
  if name == "clamp" and parameters["base"] not in CLAMP_BASES:
    raise ValueError(f"{what}: clamp base must be one of {CLAMP_BASES}, got {parameters['base']!r}")
  return parameters


def _normalised_weights(name: str, progress: np.ndarray, omega: float) -> np.ndarray:
  """A heuristic shape at progress (N,) rescaled so that its mean over the N steps is exactly ω → (N,) float64.

  The discrete mean is used, not the integral: they agree for linear, invlinear, cosine and sine, but V and Λ
  sampled at few points would otherwise miss mean ω. CAD's `guidance_type='linear'` uses 2ω·i/N instead, whose
  mean is ω(N−1)/N and whose last step gets 2ω(N−1)/N rather than 2ω.
  """
  if len(progress) == 1:  # One step is both the first and the last: only mean ω is meaningful.
    return np.full(1, omega, np.float64)
  shape = _SHAPES[name](progress)
  if shape.mean() == 0:
    raise ValueError(f"guidance schedule {name!r} is 0 at every one of {len(progress)} steps; use more steps")
  return omega * shape / shape.mean()


def guidance_weights(name: str, num_steps: int, omega: float, start_step: int = 0, **params) -> np.ndarray:
  """CAD-convention guidance weights ω_i for the sampling steps, in denoising order (i = 0 noisiest) → (N,) float32.

  With progress u_i = i/(N−1):
  - static, linear (2u), invlinear (2(1−u)), cosine (1−cos πu), sine (1+cos πu), v (4(max(u, 1−u) − ½)),
    lambda (4 min(u, 1−u)): the shape rescaled to mean exactly ω over the N steps (N = 1: ω);
  - pcs (eq 3.7, MDT's power-cosine): ω·(1 − cos(π·u^s))/2, not normalised: 0 at the first step, ω at the last;
  - clamp (eq 3.8): max(c, base) with base the normalised "linear" or "cosine" schedule.
  Steps i < start_step get 0 (no guidance: the conditional model alone), after normalisation. CAD guides only
  steps with `step > guidance_start_step`, so its start s is our start_step = s + 1 (CAD never guides step 0).
  """
  what = f"guidance schedule {name!r}"
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"{what}: num_steps must be a positive integer, got {num_steps}")
  if int(start_step) != start_step or start_step < 0:
    raise ValueError(f"{what}: start_step must be a non-negative integer, got {start_step}")
  params = _check_parameters(name, params, what)
  num_steps, start_step = int(num_steps), int(start_step)
  progress = np.arange(num_steps, dtype=np.float64) / max(num_steps - 1, 1)
  if name == "pcs":
    weights = omega * (1 - np.cos(np.pi * progress ** float(params["s"]))) / 2  # eq 3.7
  elif name == "clamp":
    weights = np.maximum(float(params["c"]), _normalised_weights(params["base"], progress, omega))  # eq 3.8
  else:
    weights = _normalised_weights(name, progress, omega)
  weights[:start_step] = 0
  return weights.astype(np.float32)


def validate_schedule(spec: str) -> tuple[str, dict]:
  """Checks a `diffusion.guidance_schedule` string such as "pcs:s=0.1" → (name, parameters); ValueError if bad."""
  name, parameters = parse_spec(spec, GUIDANCE_SCHEDULES, CONFIG_KEY)
  return name, _check_parameters(name, parameters, f"{CONFIG_KEY} {spec!r}")


def schedule_weights(spec: str, num_steps: int, omega: float, start_step: int = 0) -> np.ndarray:
  """`guidance_weights` for a config string, e.g. "clamp:c=4,base=linear" → (num_steps,) float32."""
  name, parameters = validate_schedule(spec)
  return guidance_weights(name, num_steps, omega, start_step, **parameters)
