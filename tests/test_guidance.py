"""Guidance-weight schedules and CA-CFG against hand computations and plain-python references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.diffusion.guidance import (
  GUIDANCE_SCHEDULES,
  classifier_free_guidance,
  guidance_weights,
  schedule_weights,
  to_convention,
  validate_schedule,
)

NORMALISED = ("static", "linear", "invlinear", "cosine", "sine", "v", "lambda")
OMEGA = 3.0

# ---- formulas ----

# N = 5, ω = 3: progress u = 0, ¼, ½, ¾, 1. V's shape (2, 1, 0, 1, 2) has mean 6/5, Λ's (0, 1, 2, 1, 0) mean 4/5.
_HALF_ROOT2 = math.sqrt(2) / 2
HAND_N5 = {
  "static": [3, 3, 3, 3, 3],
  "linear": [0, 1.5, 3, 4.5, 6],
  "invlinear": [6, 4.5, 3, 1.5, 0],
  "cosine": [0, 3 * (1 - _HALF_ROOT2), 3, 3 * (1 + _HALF_ROOT2), 6],
  "sine": [6, 3 * (1 + _HALF_ROOT2), 3, 3 * (1 - _HALF_ROOT2), 0],
  "v": [5, 2.5, 0, 2.5, 5],
  "lambda": [0, 3.75, 7.5, 3.75, 0],
  "pcs": [0, 1.5 * (1 - _HALF_ROOT2), 1.5, 1.5 * (1 + _HALF_ROOT2), 3],
  "clamp": [2, 2, 3, 4.5, 6],
}


@pytest.mark.parametrize("name", sorted(HAND_N5))
def test_hand_computed_five_steps(name):
  weights = guidance_weights(name, 5, OMEGA)
  assert weights.shape == (5,) and weights.dtype == np.float32
  np.testing.assert_allclose(weights, HAND_N5[name], rtol=1e-6, atol=1e-6)


def _reference(name, num_steps, omega, s=1.0, c=2.0, base="linear"):
  """Plain-python weights, one step at a time."""
  progress = [i / (num_steps - 1) for i in range(num_steps)]
  shapes = {
    "static": lambda u: 1.0,
    "linear": lambda u: 2 * u,
    "invlinear": lambda u: 2 - 2 * u,
    "cosine": lambda u: 1 - math.cos(math.pi * u),
    "sine": lambda u: 1 + math.cos(math.pi * u),
    "v": lambda u: 4 * max(u, 1 - u) - 2,
    "lambda": lambda u: 4 * min(u, 1 - u),
  }
  if name == "pcs":
    return [omega * (1 - math.cos(math.pi * u**s)) / 2 for u in progress]
  if name == "clamp":
    return [max(c, weight) for weight in _reference(base, num_steps, omega)]
  shape = [shapes[name](u) for u in progress]
  return [omega * value * num_steps / sum(shape) for value in shape]


@pytest.mark.parametrize("name", sorted(GUIDANCE_SCHEDULES))
def test_against_reference_fifty_steps(name):
  np.testing.assert_allclose(guidance_weights(name, 50, 5.0), _reference(name, 50, 5.0), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize(
  ("spec", "params"),
  [("pcs:s=0.1", {"s": 0.1}), ("pcs:s=2", {"s": 2.0}), ("clamp:c=4,base=cosine", {"c": 4.0, "base": "cosine"})],
)
def test_parametrised_against_reference(spec, params):
  np.testing.assert_allclose(
    schedule_weights(spec, 50, 5.0), _reference(spec.partition(":")[0], 50, 5.0, **params), rtol=1e-6, atol=1e-5
  )


def test_cad_linear_is_ours_rescaled():
  """CAD's guidance_type='linear' is 2ω·i/N (mean ω(N−1)/N); ours is 2ω·i/(N−1) (mean ω)."""
  num_steps = 250
  cad_linear = 2 * OMEGA * np.arange(num_steps) / num_steps
  np.testing.assert_allclose(
    guidance_weights("linear", num_steps, OMEGA), cad_linear * num_steps / (num_steps - 1), 1e-6
  )
  np.testing.assert_allclose(cad_linear.mean(), OMEGA * (num_steps - 1) / num_steps)


# ---- properties ----


@pytest.mark.parametrize("name", NORMALISED)
@pytest.mark.parametrize("num_steps", [1, 3, 4, 5, 10, 49, 50, 251])
def test_mean_is_omega(name, num_steps):
  np.testing.assert_allclose(guidance_weights(name, num_steps, OMEGA).mean(), OMEGA, rtol=1e-6)


@pytest.mark.parametrize("name", [*NORMALISED, "clamp"])
def test_single_step_gets_omega(name):
  np.testing.assert_allclose(guidance_weights(name, 1, 7.0), [7.0])


@pytest.mark.parametrize("num_steps", [5, 50, 51])
def test_monotone_and_peaked(num_steps):
  differences = {name: np.diff(guidance_weights(name, num_steps, OMEGA)) for name in NORMALISED}
  assert (differences["linear"] > 0).all() and (differences["cosine"] > 0).all()
  assert (differences["invlinear"] < 0).all() and (differences["sine"] < 0).all()
  np.testing.assert_allclose(guidance_weights("static", num_steps, OMEGA), OMEGA)
  middle = (num_steps - 1) / 2
  v_shape, lambda_shape = guidance_weights("v", num_steps, OMEGA), guidance_weights("lambda", num_steps, OMEGA)
  assert abs(np.argmin(v_shape) - middle) <= 0.5 and abs(np.argmax(lambda_shape) - middle) <= 0.5
  assert v_shape[0] == v_shape[-1] == v_shape.max()
  assert lambda_shape[0] == lambda_shape[-1] == 0
  np.testing.assert_allclose(v_shape, v_shape[::-1])
  np.testing.assert_allclose(lambda_shape, lambda_shape[::-1])


def test_pcs():
  for s in (0.1, 1.0, 2.0):
    weights = guidance_weights("pcs", 50, 5.0, s=s)
    assert weights[0] == 0 and weights[-1] == pytest.approx(5.0, rel=1e-6)
    assert (np.diff(weights) > 0).all()
  # s = 1 is (1 − cos πu)/2: symmetric about ½, so mean exactly ω/2, not ω (pcs is not normalised).
  assert guidance_weights("pcs", 1000, 5.0).mean() == pytest.approx(2.5, rel=1e-6)
  fast, plain, slow = (guidance_weights("pcs", 50, 5.0, s=s) for s in (0.1, 1.0, 2.0))
  assert fast[1] > 0.7 * 5.0 and fast[5] > 0.9 * 5.0 and plain[5] < 0.2 * 5.0  # s = 0.1: ≈ ω almost at once
  assert (fast[1:-1] > plain[1:-1]).all() and (slow[1:-1] < plain[1:-1]).all()


@pytest.mark.parametrize("base", ["linear", "cosine"])
def test_clamp_is_a_floor(base):
  unclamped = guidance_weights(base, 50, 5.0)
  for floor in (2.0, 4.0):
    weights = guidance_weights("clamp", 50, 5.0, c=floor, base=base)
    np.testing.assert_array_equal(weights, np.maximum(unclamped, np.float32(floor)))
    assert weights.min() == floor and (weights[unclamped > floor] == unclamped[unclamped > floor]).all()
  np.testing.assert_array_equal(guidance_weights("clamp", 50, 5.0, c=0.0, base=base), unclamped)


@pytest.mark.parametrize("spec", ["static", "cosine", "pcs:s=0.1", "clamp:c=4"])
def test_start_step_zeroes_early_steps(spec):
  unguided_from_zero = schedule_weights(spec, 20, OMEGA)
  weights = schedule_weights(spec, 20, OMEGA, start_step=6)
  np.testing.assert_array_equal(weights[:6], 0)
  np.testing.assert_array_equal(weights[6:], unguided_from_zero[6:])  # normalised over all N, then zeroed
  np.testing.assert_array_equal(schedule_weights(spec, 20, OMEGA, start_step=20), np.zeros(20))


def test_cad_start_step():
  """CAD guides `step > guidance_start_step`: its default start 0 is our start_step 1, and step 0 is unguided."""
  cad_start = 10
  cad_guided = np.arange(50) > cad_start
  np.testing.assert_array_equal(guidance_weights("static", 50, OMEGA, start_step=cad_start + 1) > 0, cad_guided)


# ---- config strings and errors ----


def test_schedule_strings():
  assert set(GUIDANCE_SCHEDULES) == {*NORMALISED, "pcs", "clamp"}
  assert GUIDANCE_SCHEDULES["pcs"] == {"s": 1.0} and GUIDANCE_SCHEDULES["clamp"] == {"c": 2.0, "base": "linear"}
  assert validate_schedule("linear") == ("linear", {})
  assert validate_schedule("pcs:s=0.1") == ("pcs", {"s": 0.1})
  assert validate_schedule(" clamp: c=4 , base=cosine ") == ("clamp", {"c": 4.0, "base": "cosine"})
  assert validate_schedule("clamp:base=cosine") == ("clamp", {"c": 2.0, "base": "cosine"})
  np.testing.assert_array_equal(
    schedule_weights("clamp:c=4,base=linear", 30, 5.0, 2), guidance_weights("clamp", 30, 5.0, 2, c=4.0)
  )
  np.testing.assert_array_equal(schedule_weights("pcs", 30, 5.0), guidance_weights("pcs", 30, 5.0, s=1.0))


@pytest.mark.parametrize(
  ("spec", "message"),
  [
    ("exponential", r"unknown name 'exponential'; choose one of \('static'"),
    ("pcs:t=1", r"bad parameter 't=1'; 'pcs' takes s=<float>"),
    ("linear:s=1", r"'linear' takes no parameters"),
    ("pcs:s", r"bad parameter 's'"),
    ("clamp:c=", r"c='' is not a float"),
    ("clamp:c=high", r"c='high' is not a float"),
    ("pcs:s=0", r"pcs needs s > 0"),
    ("clamp:base=sine", r"clamp base must be one of \('linear', 'cosine'\), got 'sine'"),
  ],
)
def test_bad_schedule_strings(spec, message):
  with pytest.raises(ValueError, match=r"diffusion\.guidance_schedule .*" + message):
    validate_schedule(spec)
  with pytest.raises(ValueError, match=message):
    schedule_weights(spec, 10, OMEGA)


@pytest.mark.parametrize(
  ("call", "message"),
  [
    (lambda: guidance_weights("exponential", 10, OMEGA), "unknown guidance schedule 'exponential'"),
    (lambda: guidance_weights("pcs", 10, OMEGA, power=2), r"'pcs' takes no parameter\(s\) \['power'\]"),
    (lambda: guidance_weights("cosine", 10, OMEGA, s=2), r"'cosine' takes no parameter\(s\) \['s'\]"),
    (lambda: guidance_weights("linear", 0, OMEGA), "num_steps must be a positive integer, got 0"),
    (lambda: guidance_weights("linear", 2.5, OMEGA), "num_steps must be a positive integer, got 2.5"),
    (lambda: guidance_weights("linear", 10, OMEGA, start_step=-1), "start_step must be a non-negative integer"),
    (lambda: guidance_weights("pcs", 10, OMEGA, s=-1.0), "pcs needs s > 0"),
    (lambda: guidance_weights("lambda", 2, OMEGA), "'lambda' is 0 at every one of 2 steps"),
  ],
)
def test_bad_arguments(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# ---- CA-CFG ----


def test_ca_cfg_by_hand():
  # eq 3.4: ε(c=1) + ω·(ε(c=1) − ε(c=0)) = 2 + 3·(2 − 0.5) = 6.5.
  assert float(classifier_free_guidance(2.0, 0.5, 3.0, "cad")) == pytest.approx(6.5)
  assert float(classifier_free_guidance(2.0, 0.5, 0.0, "cad")) == 2.0
  # Director: uncond + w·(cond − uncond) with w = 1 + ω is the same number.
  assert float(classifier_free_guidance(2.0, 0.5, 4.0, "director")) == pytest.approx(6.5)


def test_per_sample_weights_broadcast():
  rng = np.random.default_rng(0)
  cond, uncond = rng.normal(size=(2, 3, 4, 2))
  omega = np.array([0.0, 1.5, 7.0])
  expected = np.stack([cond[b] + omega[b] * (cond[b] - uncond[b]) for b in range(3)])
  np.testing.assert_allclose(classifier_free_guidance(cond, uncond, omega, "cad"), expected, rtol=1e-12)
  jitted = jax.jit(classifier_free_guidance, static_argnums=3)
  np.testing.assert_allclose(
    jitted(jnp.asarray(cond), jnp.asarray(uncond), jnp.asarray(omega), "cad"), expected, rtol=1e-6, atol=1e-6
  )
  with pytest.raises(ValueError, match=r"weight of shape \(4,\) does not match .* \(3, 4, 2\)"):
    classifier_free_guidance(cond, uncond, np.ones(4), "cad")


def test_director_convention_equivalence():
  rng = np.random.default_rng(1)
  cond, uncond = rng.normal(size=(2, 5, 6))
  for omega in (0.0, 2.0, rng.uniform(0, 10, size=5), guidance_weights("cosine", 5, 4.0)):
    np.testing.assert_allclose(
      classifier_free_guidance(cond, uncond, to_convention(omega, "director"), "director"),
      classifier_free_guidance(cond, uncond, omega, "cad"),
      rtol=1e-6,
      atol=1e-6,
    )
    np.testing.assert_array_equal(to_convention(omega, "cad"), omega)
  with pytest.raises(ValueError, match="Unknown guidance convention 'diffusers'"):
    to_convention(1.0, "diffusers")
  with pytest.raises(ValueError, match="Unknown guidance convention 'diffusers'"):
    classifier_free_guidance(cond, uncond, 1.0, "diffusers")
