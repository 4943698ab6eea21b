"""Feed-forward block and partitioned Dense / LayerNorm helpers."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from storyjax.layers.dropout import Dropout
from storyjax.layers.norms import make_norm

Dtype = Any


def dense(
  features: int,
  axes: tuple[str, str],
  dtype: Dtype = jnp.float32,
  name: str | None = None,
  kernel_init=nn.initializers.lecun_normal(),
  use_bias: bool = True,
) -> nn.Dense:
  """A Dense layer whose kernel carries logical axis names `axes` = (input axis, output axis)."""
  return nn.Dense(
    features,
    dtype=dtype,
    name=name,
    use_bias=use_bias,
    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
  )


def layer_norm(dtype: Dtype = jnp.float32, name: str | None = None, affine: bool = True) -> nn.LayerNorm:
  """LayerNorm (eps 1e-6) over the `embed` axis, statistics in fp32; `affine=False` drops scale and bias."""
  return make_norm("layer", dtype, name, affine=affine)


ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "none": lambda inputs: inputs}


class MlpBlock(nn.Module):
  """Dense → activation (one of ACTIVATIONS) → dropout → Dense: (..., D) → (..., D)."""

  hidden_dim: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  activation: str = "gelu"

  @nn.compact
  def __call__(self, inputs, deterministic: bool = True):
    hidden = dense(self.hidden_dim, ("embed", "mlp"), self.dtype, name="fc1")(inputs)
    hidden_axes = ("activation_batch",) + ("activation_length",) * (hidden.ndim - 2) + ("activation_mlp",)
    hidden = ACTIVATIONS[self.activation](nn.with_logical_constraint(hidden, hidden_axes))
    hidden = Dropout(self.dropout_rate)(hidden, deterministic=deterministic)
    return dense(inputs.shape[-1], ("mlp", "embed"), self.dtype, name="fc2")(hidden)


class GatedDense(nn.Module):
  """GELU(x·W₁ + b₁) ⊙ (x·W₂ + b₂): (..., Din) → (..., features), FunnyNet-W's `linear` block (exact GELU)."""

  features: int
  dtype: Dtype = jnp.float32
  axes: tuple[str, str] = ("embed", "mlp")

  @nn.compact
  def __call__(self, inputs):
    init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")  # torch.nn.Linear's default
    gate = dense(self.features, self.axes, self.dtype, "gate", init)(inputs)
    value = dense(self.features, self.axes, self.dtype, "value", init)(inputs)
    return nn.gelu(gate, approximate=False) * value
