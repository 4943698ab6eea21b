"""Optimizer, learning-rate schedule and EMA from the `optimizer.*` config keys."""

import jax
import jax.numpy as jnp
import ml_collections
import optax


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


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """Gradient clipping by global norm, then AdamW on the schedule."""
  if config.name != "adamw":
    raise ValueError(f"Unknown optimizer.name {config.name!r}; supported: 'adamw'.")
  return optax.chain(
    optax.clip_by_global_norm(config.grad_clip_norm),
    optax.adamw(
      learning_rate_schedule(config, total_steps),
      b1=config.b1,
      b2=config.b2,
      eps=config.eps,
      weight_decay=config.weight_decay,
    ),
  )


def update_ema(ema_params, params, step, decay: float):
  """EMA with the usual warm-up: the effective decay is min(decay, (1 + step) / (10 + step))."""
  step = jnp.asarray(step, jnp.float32)
  effective = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda ema, new: effective * ema + (1.0 - effective) * new, ema_params, params)
