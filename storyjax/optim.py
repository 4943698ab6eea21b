"""Optimizer, learning-rate schedule and EMA from the `optimizer.*` config keys.

`optimizer.schedule` (default "warmup_cosine"): linear warm-up then cosine decay over the run; or "plateau": linear
warm-up to a constant rate that is multiplied by `optimizer.plateau.factor` whenever the quick evaluation's
`optimizer.plateau.metric` has not improved for `patience` evaluations (from step `start_step` on; never below
`min_learning_rate`), as LAEO-Net++ trains (facts laeo-scam A.4). The plateau's scale, best value and count live in
the optimizer state, so a resumed run continues where it stopped. Or "multistep": linear warm-up, then the rate
times `optimizer.multistep.factor` at each of `optimizer.multistep.milestones` (fractions of the run, increasing),
PyTorch's MultiStepLR with the milestones given relative to the run's length (FunnyNet-W: epochs 20, 40, 80, 100 of
100, factor 0.5).
"""

from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from storyjax.errors import ConfigError

SCHEDULES = ("warmup_cosine", "plateau", "multistep")


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine decay to `final_lr_fraction`·lr at `total_steps` ("warmup_cosine"),
  constant ("plateau", scaled further by `scale_by_plateau`) or stepped down at the milestones ("multistep")."""
  if config.schedule not in SCHEDULES:
    raise ConfigError(f"optimizer.schedule={config.schedule!r}; choose one of {SCHEDULES}.")
  if not 0.0 <= config.final_lr_fraction <= 1.0:  # checked for "plateau" too, so switching schedules just works
    raise ConfigError(f"optimizer.final_lr_fraction={config.final_lr_fraction} must lie in [0, 1].")
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
  if config.schedule == "plateau" and warmup:
    return optax.linear_schedule(0.0, config.learning_rate, warmup)
  if config.schedule == "plateau":
    return optax.constant_schedule(config.learning_rate)
  if config.schedule == "multistep":
    milestones, factor = tuple(config.multistep.milestones), config.multistep.factor
    if not (0 < factor <= 1 and milestones and list(milestones) == sorted(set(milestones)) and milestones[0] > 0):
      raise ConfigError(
        f"optimizer.multistep: factor={factor} must lie in (0, 1] and milestones={milestones} be increasing "
        "fractions of the run above 0"
      )
    boundaries = jnp.asarray([round(fraction * total_steps) for fraction in milestones])
    return lambda step: (
      config.learning_rate
      * factor ** jnp.sum(step >= boundaries)
      * (jnp.minimum(1.0, step / warmup) if warmup else 1.0)
    )
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=config.learning_rate,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=config.learning_rate * config.final_lr_fraction,
  )


OPTIMIZERS = ("adamw", "lamb")


def matrices_and_embeddings(params):
  """True for every parameter but biases and normalisation scales (named "bias" / "scale" by flax)."""
  flat = flax.traverse_util.flatten_dict(params)
  return flax.traverse_util.unflatten_dict({path: path[-1] not in ("bias", "scale") for path in flat})


def lamb(learning_rate, b1: float, b2: float, eps: float, weight_decay: float) -> optax.GradientTransformation:
  """LAMB as RIN and CAD train (facts cad-rin-cfg §1.9): the Adam step plus weight decay, scaled by the trust
  ratio ‖w‖/‖update‖ (1 where either is 0); biases and LayerNorm parameters get neither decay nor the trust
  ratio, as `exclude_from_weight_decay='bias,beta,gamma'` in pix2seq.
  """
  return optax.chain(
    optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
    optax.add_decayed_weights(weight_decay, mask=matrices_and_embeddings),
    optax.masked(optax.scale_by_trust_ratio(), matrices_and_embeddings),
    optax.scale_by_learning_rate(learning_rate),
  )


class PlateauState(NamedTuple):
  """The "plateau" schedule's state: the factor on the learning rate, the best metric so far, the evaluations since."""

  plateau_scale: jax.Array
  plateau_best: jax.Array
  plateau_waited: jax.Array


def scale_by_plateau() -> optax.GradientTransformation:
  """Multiplies the updates by the state's plateau_scale (1 at first; lowered by `plateau_step`)."""

  def init(params):
    del params
    return PlateauState(jnp.ones((), jnp.float32), jnp.full((), -jnp.inf, jnp.float32), jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda update: update * state.plateau_scale.astype(update.dtype), updates), state

  return optax.GradientTransformation(init, update)


def plateau_step(opt_state, value: float, step: int, config: ml_collections.ConfigDict):
  """The optimizer state after a quick evaluation measured `value` of `optimizer.plateau.metric` at `step`: a new
  best resets the count; `patience` evaluations without one (from `start_step` on) multiply the scale by `factor`,
  down to min_learning_rate / learning_rate. Higher is better unless plateau.mode is "min"."""
  plateau = config.plateau
  old = PlateauState(*(optax.tree_utils.tree_get(opt_state, name) for name in PlateauState._fields))
  value = value if plateau.mode == "max" else -value
  improved = value > float(old.plateau_best)
  best, waited = (value, 0) if improved else (float(old.plateau_best), int(old.plateau_waited) + 1)
  scale = float(old.plateau_scale)
  if not improved and waited >= plateau.patience and step >= plateau.start_step:
    scale, waited = max(scale * plateau.factor, plateau.min_learning_rate / config.learning_rate), 0
  new = PlateauState(scale, best, waited)
  return optax.tree_utils.tree_set(
    opt_state, **{name: jnp.asarray(getattr(new, name), getattr(old, name).dtype) for name in PlateauState._fields}
  )


def _check_plateau(plateau: ml_collections.ConfigDict) -> None:
  problems = {
    "mode": plateau.mode not in ("max", "min"),
    "patience": plateau.patience < 1,
    "factor": not 0 < plateau.factor <= 1,
    "min_learning_rate": plateau.min_learning_rate < 0,
    "start_step": plateau.start_step < 0,
  }
  if bad := [name for name, problem in problems.items() if problem]:
    raise ConfigError(
      f"optimizer.plateau.{bad[0]}={plateau[bad[0]]!r}: mode is 'max' or 'min', patience >= 1, 0 < factor <= 1, "
      "min_learning_rate >= 0, start_step >= 0."
    )


def learning_rate_scale(opt_state) -> jax.Array:
  """The plateau schedule's current factor on the learning rate (1 for the other schedules)."""
  return optax.tree_utils.tree_get(opt_state, "plateau_scale", jnp.ones((), jnp.float32))


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Gradient clipping by global norm, then AdamW or LAMB (`optimizer.name`) on the schedule."""
  if config.name not in OPTIMIZERS:
    raise ConfigError(f"optimizer.name={config.name!r}; choose one of {OPTIMIZERS}.")
  make = optax.adamw if config.name == "adamw" else lamb
  schedule = learning_rate_schedule(config, total_steps)
  optimizer = make(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay)
  if config.schedule == "plateau":
    _check_plateau(config.plateau)
    optimizer = optax.chain(optimizer, scale_by_plateau())
  return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), optimizer)


def turn_config(config: ml_collections.ConfigDict, turn: str) -> ml_collections.ConfigDict:
  """The optimizer of one turn of a TurnTask: `optimizer` with the overrides of `optimizer.turns.<turn>`."""
  merged = ml_collections.ConfigDict({name: config[name] for name in config if name != "turns"})
  overrides = config.turns[turn] if "turns" in config and turn in config.turns else {}
  for name in overrides:
    if name not in merged or name == "ema_decay":
      raise ConfigError(f"optimizer.turns.{turn}.{name} is not a per-turn optimizer key; use one of {sorted(merged)}.")
    merged[name] = overrides[name]
  return merged


def update_ema(ema_params, params, step, decay: float):
  """EMA with the usual warm-up: the effective decay is min(decay, (1 + step) / (10 + step))."""
  step = jnp.asarray(step, jnp.float32)
  effective = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda ema, new: effective * ema + (1.0 - effective) * new, ema_params, params)
