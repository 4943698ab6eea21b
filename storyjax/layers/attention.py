"""Multi-head attention with logical axis names, behind one switch for how the attention itself is computed.

`implementation` (config `model.attention`):
  "xla":   einsums and an explicit fp32 softmax, written for XLA:CPU (queries scaled before the logits, the
           softmax normalised after the value product, so the (B, H, Lq, Lk) tensor is touched fewer times);
           with "cpu", the paths with dropout on the attention probabilities.
  "fused": jax.nn.dot_product_attention: cuDNN's fused (flash) kernel on GPU where its dtype and shape rules
           allow (bf16/fp16), XLA elsewhere; the probabilities are never materialised by the kernel.
  "pallas": storyjax.kernels.semantic_attention with one label for every token (flash attention): the Pallas
           kernel, compiled through Triton on GPU, interpreted (slow, for tests) on CPU.
  "cpu":   storyjax.kernels.cpu_attention, a C++ kernel for XLA:CPU (compiled on first use with the system
           g++), about twice as fast as "xla" on CPU (docs/cpu.md), with the same probability dropout. CPU
           only; with several devices XLA gathers its inputs onto every device, so use it on one.
  "auto":  "cpu" in a process with one CPU device and a C++ compiler, "xla" otherwise (the configs'
           default; `resolve_implementation`).
All mask keys the same way and agree to rounding (tests/test_speed_switches.py).

`masking`: "key" (masked keys get no weight: softmax over the valid keys only, what every paper describes) or
"adapt_code", ADAPT's masked self-attention as its authors coded it (adapt_code_attention, for parity; "xla" only).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from storyjax.errors import ConfigError
from storyjax.kernels import semantic_attention
from storyjax.kernels.cpu_attention import compiler_available, cpu_attention
from storyjax.layers.dropout import Dropout
from storyjax.layers.mlp import dense

Dtype = Any
HEAD_AXES = ("activation_batch", "activation_length", "activation_heads", "activation_kv")
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "fused", "pallas", "cpu")
MASKINGS = ("key", "adapt_code")
PROBABILITY_DROPOUT_IMPLEMENTATIONS = ("auto", "xla", "cpu")  # the others are fused kernels


def check_probability_dropout(implementation_key: str, implementation: str, rate_key: str, rate: float) -> None:
  """A ConfigError naming both config keys when `rate` > 0 drops probabilities `implementation` cannot drop."""
  if rate > 0 and implementation not in PROBABILITY_DROPOUT_IMPLEMENTATIONS:
    raise ConfigError(
      f"{rate_key}={rate} drops attention probabilities, which {implementation_key}={implementation!r} cannot (a "
      f"fused kernel); use one of {PROBABILITY_DROPOUT_IMPLEMENTATIONS}, or {rate_key}=0."
    )


def resolve_implementation(implementation: str, needs_xla: bool = False) -> str:
  """The attention that `implementation` names; "auto" is "cpu" where it is faster and can run, else "xla".

  `needs_xla`: the attention uses what only "xla" has (ADAPT's coded masking).
  """
  if implementation != "auto":
    return implementation
  one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
  return "cpu" if one_cpu and not needs_xla and compiler_available() else "xla"


def xla_attention(query, key, value, key_mask=None, dropout_fn=None, scale=None):
  """softmax(q·kᵀ·scale)·v for q (B, Lq, H, Dh), k/v (B, Lk, H, Dh), key_mask (B, Lk) → (B, Lq, H, Dh).

  `scale` defaults to 1/√Dh.
  Logits and softmax in fp32. dropout_fn, if given, drops unnormalised probabilities (B, H, Lq, Lk); since
  dropout is an elementwise mask-and-rescale, dividing by the undropped row sums afterwards equals dropping
  the normalised probabilities. A query whose keys are all masked attends uniformly.
  """
  scale = query.shape[-1] ** -0.5 if scale is None else scale
  scaled_query = query * jnp.asarray(scale, query.dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", scaled_query, key).astype(jnp.float32)
  if key_mask is not None:
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  unnormalised = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
  row_sums = unnormalised.sum(-1)  # (B, H, Lq)
  if dropout_fn is not None:
    unnormalised = dropout_fn(unnormalised)
  attended = jnp.einsum("bhqk,bkhd->bqhd", unnormalised.astype(value.dtype), value)
  return (attended / jnp.moveaxis(row_sums, 1, 2)[..., None]).astype(value.dtype)


def adapt_code_attention(query, key, value, present):
  """ADAPT's masked self-attention as coded (facts funnynet-medical-sfd (c)) for q/k/v (B, L, H, Dh), present (B, L).

  With m = presentᵢ·presentⱼ and logits S = q·kᵀ/√Dh: A = softmax(S + (1 − m)·(−max S)) ⊙ m. The shift is one
  scalar, the maximum over the whole (B, H, L, L) tensor (so one example's logits move another's), masked logits
  stay in the softmax's denominator, and the rows are not renormalised after ⊙ m. A missing token therefore
  changes the others' outputs unless its input is a fixed placeholder, which is how ADAPT feeds missing
  modalities (storyjax/models/multimodal.py does the same).
  """
  if query.shape[1] != key.shape[1]:
    raise ValueError(f"adapt_code masking is for self-attention; got {query.shape[1]} queries, {key.shape[1]} keys")
  scaled_query = query * jnp.asarray(query.shape[-1] ** -0.5, query.dtype)
  logits = jnp.einsum("bqhd,bkhd->bhqk", scaled_query, key).astype(jnp.float32)
  pair_mask = present[:, None, :, None] & present[:, None, None, :]
  weights = jax.nn.softmax(jnp.where(pair_mask, logits, logits - logits.max()), axis=-1) * pair_mask
  return jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)


def fused_attention(query, key, value, key_mask=None, scale=None):
  """jax.nn.dot_product_attention with the same shapes, scale and masking as xla_attention (no dropout)."""
  mask = None if key_mask is None else key_mask[:, None, None, :]
  return jax.nn.dot_product_attention(query, key, value, mask=mask, scale=scale)


def pallas_attention(query, key, value, key_mask=None):
  """The Pallas SCA kernel with all labels equal, same shapes and masking as xla_attention (no dropout).

  Masked keys get label 1 against the queries' 0 (not the padding label −1) with τ = the float32 minimum, so they
  get no weight unless a query has no valid key, which then attends uniformly, as in xla_attention.
  """
  batch, num_queries, num_keys = query.shape[0], query.shape[1], key.shape[1]
  query_labels = jnp.zeros((batch, num_queries), jnp.int32)
  valid = jnp.ones((batch, num_keys), bool) if key_mask is None else jnp.broadcast_to(key_mask, (batch, num_keys))
  key_labels = jnp.where(valid, 0, 1).astype(jnp.int32)
  mask_value = float(jnp.finfo(jnp.float32).min)
  return semantic_attention(query, key, value, query_labels, key_labels, mask_value=mask_value, implementation="pallas")


class MultiHeadAttention(nn.Module):
  """Attention of queries (B, Lq, D) over context (B, Lk, Dc) → (B, Lq, D).

  `key_mask` (B, Lk) bool marks valid context tokens; masked keys get no weight. Queries, keys and values are
  projected to `inner_dim` = H·Dh (default D; RIN's read/write attend at min(D, Dc)), the output back to D.
  Projection kernels are (D, H·Dh) with the head-major output axis named `heads`, so tensor parallelism
  splits whole heads. `dropout_rate` drops attention probabilities ("xla" and "cpu"). `masking` is one of MASKINGS
  ("adapt_code": self-attention only, `key_mask` then being each token's presence); `use_bias=False` drops the
  projections' biases (ADAPT's q/k/v). `logit_scale` replaces 1/√Dh ("xla", "fused", "cpu"; FunnyNet-W's fusion as
  coded uses 1); `output_projection=False` returns the attended values (B, Lq, H·Dh) without the last Dense.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  dropout_rate: float = 0.0
  implementation: str = "xla"
  inner_dim: int | None = None
  masking: str = "key"
  use_bias: bool = True
  logit_scale: float | None = None
  output_projection: bool = True

  @nn.compact
  def __call__(self, queries, context, key_mask=None, deterministic: bool = True):
    width = self.inner_dim or queries.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"attention width {width} is not divisible by num_heads {self.num_heads}")
    if self.implementation not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention implementation {self.implementation!r}; choose one of {ATTENTION_IMPLEMENTATIONS}")
    if self.masking not in MASKINGS:
      raise ValueError(f"attention masking {self.masking!r}; choose one of {MASKINGS}")
    implementation = resolve_implementation(self.implementation, self.masking != "key")
    if self.masking == "adapt_code" and (implementation != "xla" or key_mask is None or self.dropout_rate > 0):
      raise ValueError("adapt_code masking needs the 'xla' attention, a key_mask and no probability dropout")
    if implementation not in PROBABILITY_DROPOUT_IMPLEMENTATIONS and self.dropout_rate > 0:
      raise ValueError(
        f"dropout on attention probabilities ({self.dropout_rate}) runs only with the 'xla' or 'cpu' attention, "
        f"not {implementation!r}"
      )
    if self.logit_scale is not None and (implementation == "pallas" or self.masking == "adapt_code"):
      raise ValueError("logit_scale runs only with the 'xla', 'fused' or 'cpu' attention and 'key' masking")
    head_dim = width // self.num_heads

    def project(name, inputs):  # (B, L, D) → (B, L, H, Dh)
      init = nn.initializers.xavier_uniform()
      projected = dense(width, ("embed", "heads"), self.dtype, name, init, self.use_bias)(inputs)
      return nn.with_logical_constraint(projected.reshape(inputs.shape[:-1] + (self.num_heads, head_dim)), HEAD_AXES)

    query, key, value = project("query", queries), project("key", context), project("value", context)
    if self.masking == "adapt_code":
      attended = adapt_code_attention(query, key, value, key_mask)
    elif implementation == "fused":
      attended = fused_attention(query, key, value, key_mask, self.logit_scale)
    elif implementation == "pallas":
      attended = pallas_attention(query, key, value, key_mask)
    elif implementation == "cpu":
      dropout = Dropout(self.dropout_rate)
      seed = None if deterministic or self.dropout_rate == 0 else dropout.seed()
      attended = cpu_attention(query, key, value, key_mask, self.logit_scale, seed, 1.0 - self.dropout_rate)
    else:
      dropout_fn = lambda probabilities: Dropout(self.dropout_rate)(probabilities, deterministic)
      attended = xla_attention(query, key, value, key_mask, dropout_fn, self.logit_scale)
    attended = attended.reshape(attended.shape[:-2] + (width,))
    if not self.output_projection:
      return attended
    out = dense(queries.shape[-1], ("heads", "embed"), self.dtype, "out", nn.initializers.xavier_uniform())
    return out(attended)
