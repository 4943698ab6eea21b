"""Normalisation layers: one constructor for every choice, partitioned scale/bias, statistics in fp32."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any
NORMS = ("layer", "rms", "group", "batch", "none")


def make_norm(
  kind: str,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
  *,
  axis_name: str = "embed",
  affine: bool = True,
  epsilon: float = 1e-6,
  num_groups: int = 32,
  train: bool = False,
  momentum: float = 0.9,
) -> Callable:
  """A normalisation over the last (feature) axis of (..., C), named `kind` (one of NORMS).

  "layer": LayerNorm; "rms": RMSNorm (scale only); "group": GroupNorm with `num_groups` groups over every
  non-batch axis; "batch": BatchNorm over every axis but the last, on batch statistics when `train` (then
  the model must be applied with mutable=["batch_stats"], which holds the running averages, updated as
  avg ← momentum·avg + (1 − momentum)·batch) and on the running averages otherwise; "none": the identity.
  Scale and bias are (C,) parameters on logical axis `axis_name`; `affine=False` drops them.
  """
  partitioned = lambda init: nn.with_logical_partitioning(init, (axis_name,))
  affine_terms = {"use_scale": affine, "scale_init": partitioned(nn.initializers.ones)}
  if kind != "rms":
    affine_terms.update(use_bias=affine, bias_init=partitioned(nn.initializers.zeros))
  # Every flax norm below reduces in fp32 (force_float32_reductions) whatever the compute dtype.
  if kind == "layer":
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name, **affine_terms)
  if kind == "rms":
    return nn.RMSNorm(epsilon=epsilon, dtype=dtype, name=name, **affine_terms)
  if kind == "group":
    return nn.GroupNorm(num_groups=num_groups, epsilon=epsilon, dtype=dtype, name=name, **affine_terms)
  if kind == "batch":
    return nn.BatchNorm(
      use_running_average=not train, momentum=momentum, epsilon=epsilon, dtype=dtype, name=name, **affine_terms
    )
  if kind == "none":
    return lambda inputs: inputs
  raise ValueError(f"Unknown norm {kind!r}; choose one of {NORMS}.")
