"""Optimizer, learning-rate schedule and EMA from the `optimizer.*` config keys."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from storyjax.errors import ConfigError


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then cosine decay to `final_lr_fraction`·lr at `total_steps`."""
  warmup = min(config.warmup_steps, max(total_steps - 1, 0))
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


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Gradient clipping by global norm, then AdamW or LAMB (`optimizer.name`) on the schedule."""
  if config.name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer.name {config.name!r}; choose one of {OPTIMIZERS}.")
  make = optax.adamw if config.name == "adamw" else lamb
  return optax.chain(
    optax.clip_by_global_norm(config.grad_clip_norm),
    make(
      learning_rate_schedule(config, total_steps),
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
      weight_decay=config.weight_decay,
    ),
  )


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
