"""LAMB against a plain numpy LAMB (decay and trust ratio on matrices only), and the optimizer choice."""

import flax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from storyjax import optim
from storyjax.errors import ConfigError


def _numpy_lamb(params, grads_per_step, lr, b1, b2, eps, weight_decay):
  """Adam moments with bias correction; + wd·w and the trust ratio only for parameters not named bias/scale."""
  params = {name: value.copy() for name, value in params.items()}
  first = {name: np.zeros_like(value) for name, value in params.items()}
  second = {name: np.zeros_like(value) for name, value in params.items()}
  for step, grads in enumerate(grads_per_step, start=1):
    for name, grad in grads.items():
      first[name] = b1 * first[name] + (1 - b1) * grad
      second[name] = b2 * second[name] + (1 - b2) * grad**2
      update = (first[name] / (1 - b1**step)) / (np.sqrt(second[name] / (1 - b2**step)) + eps)
      if name.split("/")[-1] not in ("bias", "scale"):
        update = update + weight_decay * params[name]
        weight_norm, update_norm = np.linalg.norm(params[name]), np.linalg.norm(update)
        update = update * (weight_norm / update_norm if weight_norm > 0 and update_norm > 0 else 1.0)
      params[name] = params[name] - lr * update
  return params


def test_lamb_matches_numpy():
  rng = np.random.default_rng(0)
  params = {
    "dense/kernel": rng.normal(size=(3, 4)).astype(np.float32),
    "dense/bias": rng.normal(size=(4,)).astype(np.float32),
    "norm/scale": np.ones(4, np.float32),
    "latents": rng.normal(size=(2, 4)).astype(np.float32),
  }
  grads_per_step = [{name: rng.normal(size=value.shape).astype(np.float32) for name, value in params.items()}]
  grads_per_step.append({name: 3 * grad for name, grad in grads_per_step[0].items()})
  nested = lambda flat: {
    "dense": {"kernel": flat["dense/kernel"], "bias": flat["dense/bias"]},
    "norm": {"scale": flat["norm/scale"]},
    "latents": flat["latents"],
  }
  optimizer = optim.lamb(0.1, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.5)
  state_params = nested({name: jnp.asarray(value) for name, value in params.items()})
  opt_state = optimizer.init(state_params)
  for grads in grads_per_step:
    updates, opt_state = optimizer.update(nested(grads), opt_state, state_params)
    state_params = optax.apply_updates(state_params, updates)
  expected = nested(_numpy_lamb(params, grads_per_step, 0.1, 0.9, 0.99, 1e-8, 0.5))
  flat_got = flax.traverse_util.flatten_dict(state_params)
  flat_expected = flax.traverse_util.flatten_dict(expected)
  for path, value in flat_expected.items():
    np.testing.assert_allclose(flat_got[path], value, rtol=1e-5, atol=1e-6, err_msg=str(path))
  # The trust ratio makes a matrix's step lr·‖w‖ whatever the gradient's scale: two steps move it by ≈ 2·lr·‖w‖.
  moved = np.linalg.norm(flat_got[("latents",)] - params["latents"])
  assert moved == pytest.approx(2 * 0.1 * np.linalg.norm(params["latents"]), rel=0.1)


def test_unknown_optimizer_is_named():
  config = ml_collections.ConfigDict({"name": "sgd"})
  with pytest.raises(ConfigError, match="optimizer.name=.sgd."):
    optim.make_optimizer(config, 10)


def _plateau_config(**plateau) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(
    {
      "name": "adamw", "schedule": "plateau", "learning_rate": 1e-4, "warmup_steps": 0, "b1": 0.9, "b2": 0.999,
      "eps": 1e-8, "weight_decay": 0.0, "grad_clip_norm": 1.0, "final_lr_fraction": 0.01,
      "plateau": {"metric": "ap", "mode": "max", "patience": 2, "factor": 0.2, "min_learning_rate": 1e-6,
                  "start_step": 350},
    }
  )  # fmt: skip
  config.plateau.update(plateau)
  return config


def test_plateau_lowers_the_rate_after_patience_evaluations_without_a_new_best():
  config = _plateau_config()
  optimizer = optim.make_optimizer(config, total_steps=1000)
  params = {"w": jnp.ones(3)}
  opt_state = optimizer.init(params)
  scale = lambda state: float(optim.learning_rate_scale(state))
  history = []
  # (step, AP): improvement, two stalls before start_step (no decay yet), then stalls after it.
  for step, value in [(100, 0.5), (200, 0.4), (300, 0.45), (400, 0.45), (500, 0.6), (600, 0.5), (700, 0.5)]:
    opt_state = optim.plateau_step(opt_state, value, step, config)
    history.append(scale(opt_state))
  np.testing.assert_allclose(history, [1, 1, 1, 0.2, 0.2, 0.2, 0.04], rtol=1e-6)
  # The update is Adam's, scaled by lr · scale; the floor min_learning_rate / learning_rate holds.
  grads = {"w": jnp.full(3, 0.5)}
  updates, _ = optimizer.update(grads, opt_state, params)
  np.testing.assert_allclose(updates["w"], -1e-4 * 0.04 * np.ones(3), rtol=1e-3)
  for step in range(800, 2000, 100):
    opt_state = optim.plateau_step(opt_state, 0.1, step, config)
  assert scale(opt_state) == pytest.approx(1e-6 / 1e-4)
  # "min" mode: a lower value is an improvement.
  config = _plateau_config(mode="min", start_step=0, patience=1)
  opt_state = optimizer.init(params)
  opt_state = optim.plateau_step(opt_state, 1.0, 1, config)
  opt_state = optim.plateau_step(opt_state, 0.5, 2, config)
  assert scale(opt_state) == 1.0
  opt_state = optim.plateau_step(opt_state, 0.7, 3, config)
  assert scale(opt_state) == pytest.approx(0.2)


def test_unknown_schedule_is_named():
  config = _plateau_config()
  config.schedule = "step"
  with pytest.raises(ConfigError, match="optimizer.schedule='step'"):
    optim.make_optimizer(config, 10)


def test_multistep_warms_up_then_halves_at_each_milestone():
  config = _plateau_config()
  config.update({"schedule": "multistep", "warmup_steps": 10})
  config.multistep = ml_collections.ConfigDict({"milestones": (0.2, 0.4, 0.8, 1.0), "factor": 0.5})
  schedule = optim.learning_rate_schedule(config, 100)
  rates = np.array([float(schedule(step)) for step in (0, 5, 10, 19, 20, 39, 40, 79, 80, 99, 100)])
  expected = 1e-4 * np.array([0, 0.5, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125, 0.0625])
  np.testing.assert_allclose(rates, expected, rtol=1e-6)
  config.multistep.milestones = (0.4, 0.2)
  with pytest.raises(ConfigError, match="optimizer.multistep"):
    optim.learning_rate_schedule(config, 100)
