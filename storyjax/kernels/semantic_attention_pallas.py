"""Pallas kernel for semantic cross-attention (SCA, eq 3.1): flash attention with a label mask built per block.

The (Nq, Nk) logits and mask are never materialised: each program owns one block of queries, loops over key blocks
with an online softmax (fp32 running max m, sum l and accumulator), and builds the mask of that block pair from the
labels (or bit words) it loads alongside the keys. The backward pass is two kernels, dk/dv (one program per key
block, looping over query blocks) and dq (one per query block, looping over key blocks), recomputing the
probabilities from the saved per-row m and l.

Masked logits equal mask_value exactly, as in the reference, so a row whose label no key carries is a softmax of
equal values over its real keys (uniform); the gradient w.r.t. q and k is zero through masked logits (they are a
constant) while dv still receives their probabilities. Padding keys (label < 0, all-zero bits, and the keys added to
reach a block multiple) get −inf and the guards below keep rows without any real key at output 0, never NaN.

m and l are saved rather than logsumexp = m + log l: with τ = −1e9 a uniform row has m = −1e9 and fp32 cannot hold
−1e9 + log Nk, so exp(s − lse) would be 1 instead of 1/Nk; exp(s − m) / l is exact.

Lowering: Pallas Triton on GPU (block sizes powers of two ≥ 16, head dim zero-padded to one; fp32 dots at IEEE
precision, bf16 dots with fp32 accumulation); interpret mode on CPU. The (B, N, H, D) blocks with a squeezed head
axis do not meet TPU tiling rules, so TPU is not a target.
"""

import dataclasses
import functools

import jax
from jax import lax
from jax.experimental import pallas as pl
import jax.numpy as jnp

from storyjax.kernels.semantic_attention import DEFAULT_MASK_VALUE

MAX_BLOCK = 64
TILE_BYTES = 32 * 1024  # one (block, Dp) tile of q, k or v; several (double-buffered) must fit in shared memory


def _block_size(requested: int | None, tokens: int, width: int, itemsize: int) -> int:
  """A power of two ≥ 16: `requested`, or the largest ≤ MAX_BLOCK whose (block, width) tile fits TILE_BYTES;
  shrunk to the next power of two above `tokens` for short sequences."""
  if requested is None:
    requested = MAX_BLOCK
    while requested > 16 and requested * width * itemsize > TILE_BYTES:
      requested //= 2
  if requested < 16 or requested & (requested - 1):
    raise ValueError(f"block size {requested} must be a power of two ≥ 16 (Triton tiles)")
  return max(16, min(requested, pl.next_power_of_2(tokens)))


def _attendable(query_tags, key_tags, bitmask: bool):
  """Mask of one block pair from per-word tag rows: query_tags W × (bq,), key_tags W × (bk,) → (bq, bk), (bk,).

  Returns (allowed: the labels match / the bits meet, key_valid: the key is not padding).
  """
  if not bitmask:
    (query_labels,), (key_labels,) = query_tags, key_tags
    return query_labels[:, None] == key_labels[None, :], key_labels >= 0
  allowed, key_valid = None, None
  for query_word, key_word in zip(query_tags, key_tags):  # unrolled: W is static and small
    meets = (query_word[:, None] & key_word[None, :]) != 0
    carries = key_word != 0
    allowed = meets if allowed is None else allowed | meets
    key_valid = carries if key_valid is None else key_valid | carries
  return allowed, key_valid


def _dot(a, b, contract, precision):
  """a·b contracting dims `contract` = (dim of a, dim of b), fp32 accumulation."""
  dims = (((contract[0],), (contract[1],)), ((), ()))
  return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


def _block_logits(query, key, query_tags, key_tags, *, scale, mask_value, bitmask, precision):
  """Masked logits (bq, bk) fp32 of one block pair and where they depend on q·k (allowed and valid)."""
  logits = _dot(query, key, (1, 1), precision) * scale
  allowed, key_valid = _attendable(query_tags, key_tags, bitmask)
  logits = jnp.where(allowed, logits, mask_value)  # eq 3.1: τ replaces the scaled logit
  logits = jnp.where(key_valid[None, :], logits, -jnp.inf)
  return logits, allowed & key_valid[None, :]


def _probabilities(logits, row_max, row_sum):
  """softmax rows from the saved running max and sum; rows without a real key (m = −inf, l = 0) give 0."""
  safe_max = jnp.where(row_max == -jnp.inf, 0.0, row_max)
  safe_sum = jnp.where(row_sum > 0, row_sum, 1.0)
  return jnp.exp(logits - safe_max[:, None]) / safe_sum[:, None]


def _tag_rows(tags_ref, num_words, tokens):
  return [tags_ref[word, tokens] for word in range(num_words)]


def _forward_kernel(
  query_ref, key_ref, value_ref, query_tags_ref, key_tags_ref, out_ref, max_ref, sum_ref, *, block_k, **logit_kw
):
  """One query block (bq, Dp) against all keys (Nk, Dp): out (bq, Dp), running max and sum (bq,)."""
  num_words = query_tags_ref.shape[0]
  query = query_ref[...]
  query_tags = _tag_rows(query_tags_ref, num_words, slice(None))
  block_q, width = query.shape

  def over_keys(index, carry):
    accumulator, previous_max, previous_sum = carry
    keys = pl.ds(index * block_k, block_k)
    value = value_ref[keys, :]
    logits, _ = _block_logits(query, key_ref[keys, :], query_tags, _tag_rows(key_tags_ref, num_words, keys), **logit_kw)
    row_max = jnp.maximum(previous_max, logits.max(-1))
    safe_max = jnp.where(row_max == -jnp.inf, 0.0, row_max)  # −inf − −inf would be NaN
    correction = jnp.exp(previous_max - safe_max)
    unnormalised = jnp.exp(logits - safe_max[:, None])
    row_sum = correction * previous_sum + unnormalised.sum(-1)
    attended = _dot(unnormalised.astype(value.dtype), value, (1, 0), logit_kw["precision"])
    return correction[:, None] * accumulator + attended, row_max, row_sum

  initial = (
    jnp.zeros((block_q, width), jnp.float32),
    jnp.full((block_q,), -jnp.inf, jnp.float32),
    jnp.zeros((block_q,), jnp.float32),
  )
  accumulator, row_max, row_sum = lax.fori_loop(0, key_ref.shape[0] // block_k, over_keys, initial)
  out_ref[...] = (accumulator / jnp.where(row_sum > 0, row_sum, 1.0)[:, None]).astype(out_ref.dtype)
  max_ref[...] = row_max
  sum_ref[...] = row_sum


def _key_grad_kernel(
  query_ref,
  key_ref,
  value_ref,
  query_tags_ref,
  key_tags_ref,
  out_grad_ref,
  max_ref,
  sum_ref,
  delta_ref,
  key_grad_ref,
  value_grad_ref,
  *,
  block_q,
  **logit_kw,
):
  """One key block (bk, Dp) against all queries: dk, dv (bk, Dp)."""
  num_words = query_tags_ref.shape[0]
  key, value = key_ref[...], value_ref[...]
  key_tags = _tag_rows(key_tags_ref, num_words, slice(None))
  precision, scale = logit_kw["precision"], logit_kw["scale"]

  def over_queries(index, carry):
    key_grad, value_grad = carry
    rows = pl.ds(index * block_q, block_q)
    query, out_grad = query_ref[rows, :], out_grad_ref[rows, :]
    logits, depends = _block_logits(query, key, _tag_rows(query_tags_ref, num_words, rows), key_tags, **logit_kw)
    probabilities = _probabilities(logits, max_ref[rows], sum_ref[rows])
    value_grad += _dot(probabilities.astype(out_grad.dtype), out_grad, (0, 0), precision)
    probability_grad = _dot(out_grad, value, (1, 1), precision)
    logit_grad = jnp.where(depends, probabilities * (probability_grad - delta_ref[rows][:, None]), 0.0) * scale
    key_grad += _dot(logit_grad.astype(query.dtype), query, (0, 0), precision)
    return key_grad, value_grad

  initial = (jnp.zeros(key.shape, jnp.float32), jnp.zeros(value.shape, jnp.float32))
  key_grad, value_grad = lax.fori_loop(0, query_ref.shape[0] // block_q, over_queries, initial)
  key_grad_ref[...] = key_grad.astype(key_grad_ref.dtype)
  value_grad_ref[...] = value_grad.astype(value_grad_ref.dtype)


def _query_grad_kernel(
  query_ref,
  key_ref,
  value_ref,
  query_tags_ref,
  key_tags_ref,
  out_grad_ref,
  max_ref,
  sum_ref,
  delta_ref,
  query_grad_ref,
  *,
  block_k,
  **logit_kw,
):
  """One query block (bq, Dp) against all keys: dq (bq, Dp)."""
  num_words = query_tags_ref.shape[0]
  query, out_grad = query_ref[...], out_grad_ref[...]
  query_tags = _tag_rows(query_tags_ref, num_words, slice(None))
  row_max, row_sum, delta = max_ref[...], sum_ref[...], delta_ref[...]
  precision, scale = logit_kw["precision"], logit_kw["scale"]

  def over_keys(index, query_grad):
    keys = pl.ds(index * block_k, block_k)
    key, value = key_ref[keys, :], value_ref[keys, :]
    logits, depends = _block_logits(query, key, query_tags, _tag_rows(key_tags_ref, num_words, keys), **logit_kw)
    probabilities = _probabilities(logits, row_max, row_sum)
    probability_grad = _dot(out_grad, value, (1, 1), precision)
    logit_grad = jnp.where(depends, probabilities * (probability_grad - delta[:, None]), 0.0) * scale
    return query_grad + _dot(logit_grad.astype(key.dtype), key, (1, 0), precision)

  query_grad = lax.fori_loop(0, key_ref.shape[0] // block_k, over_keys, jnp.zeros(query.shape, jnp.float32))
  query_grad_ref[...] = query_grad.astype(query_grad_ref.dtype)


@dataclasses.dataclass(frozen=True)
class _Config:
  """Static settings of one kernel launch (hashable: custom_vjp's non-differentiable argument)."""

  scale: float
  mask_value: float
  bitmask: bool
  block_q: int
  block_k: int
  interpret: bool
  precision: lax.Precision  # HIGHEST (IEEE fp32 dots, not TF32) for fp32 inputs

  def logit_kw(self):
    return {"scale": self.scale, "mask_value": self.mask_value, "bitmask": self.bitmask, "precision": self.precision}

  def call(self, kernel, name, grid, in_specs, out_specs, out_shape, width):
    compiler_params = None
    if not self.interpret:
      from jax.experimental.pallas import triton as plgpu

      compiler_params = plgpu.CompilerParams(num_warps=4 if width <= 64 else 8, num_stages=2)
    return pl.pallas_call(
      kernel,
      grid=grid,
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      compiler_params=compiler_params,
      interpret=self.interpret,
      name=name,
    )


def _specs(rows, width, num_words, blocked):
  """BlockSpecs for (B, N, H, Dp) tokens and (B, W, N) tags: one block of `rows` if `blocked`, else all rows."""
  if blocked:
    tokens = pl.BlockSpec((None, rows, None, width), lambda i, b, h: (b, i, h, 0))
    tags = pl.BlockSpec((None, num_words, rows), lambda i, b, h: (b, 0, i))
    stats = pl.BlockSpec((None, None, rows), lambda i, b, h: (b, h, i))
  else:
    tokens = pl.BlockSpec((None, rows, None, width), lambda i, b, h: (b, 0, h, 0))
    tags = pl.BlockSpec((None, num_words, rows), lambda i, b, h: (b, 0, 0))
    stats = pl.BlockSpec((None, None, rows), lambda i, b, h: (b, h, 0))
  return tokens, tags, stats


def _forward(config, query, key, value, query_tags, key_tags):
  """Padded query (B, Nq, H, Dp), key/value (B, Nk, H, Dp), tags (B, W, N) → out, row max and sum (B, H, Nq)."""
  batch, num_queries, heads, width = query.shape
  num_keys, num_words = key.shape[1], query_tags.shape[1]
  tokens_q, tags_q, stats_q = _specs(config.block_q, width, num_words, blocked=True)
  tokens_k, tags_k, _ = _specs(num_keys, width, num_words, blocked=False)
  stats_shape = jax.ShapeDtypeStruct((batch, heads, num_queries), jnp.float32)
  kernel = functools.partial(_forward_kernel, block_k=config.block_k, **config.logit_kw())
  return config.call(
    kernel,
    "semantic_attention_forward",
    (num_queries // config.block_q, batch, heads),
    [tokens_q, tokens_k, tokens_k, tags_q, tags_k],
    [tokens_q, stats_q, stats_q],
    [jax.ShapeDtypeStruct(query.shape, value.dtype), stats_shape, stats_shape],
    width,
  )(query, key, value, query_tags, key_tags)


def _backward(config, query, key, value, query_tags, key_tags, out, row_max, row_sum, out_grad):
  """dq, dk, dv of the padded inputs from the saved out and row statistics."""
  batch, num_queries, heads, width = query.shape
  num_keys, num_words = key.shape[1], query_tags.shape[1]
  delta = jnp.einsum("bqhd,bqhd->bhq", out.astype(jnp.float32), out_grad.astype(jnp.float32))  # Σ_j p·dp = o·do
  inputs = (query, key, value, query_tags, key_tags, out_grad, row_max, row_sum, delta)
  block_q, block_k = config.block_q, config.block_k

  all_q, all_q_tags, all_q_stats = _specs(num_queries, width, num_words, blocked=False)
  block_of_k, block_of_k_tags, _ = _specs(block_k, width, num_words, blocked=True)
  key_grad, value_grad = config.call(
    functools.partial(_key_grad_kernel, block_q=block_q, **config.logit_kw()),
    "semantic_attention_key_grad",
    (num_keys // block_k, batch, heads),
    [all_q, block_of_k, block_of_k, all_q_tags, block_of_k_tags, all_q, all_q_stats, all_q_stats, all_q_stats],
    [block_of_k, block_of_k],
    [jax.ShapeDtypeStruct(key.shape, key.dtype), jax.ShapeDtypeStruct(value.shape, value.dtype)],
    width,
  )(*inputs)

  block_of_q, block_of_q_tags, block_of_q_stats = _specs(block_q, width, num_words, blocked=True)
  all_k, all_k_tags, _ = _specs(num_keys, width, num_words, blocked=False)
  query_grad = config.call(
    functools.partial(_query_grad_kernel, block_k=block_k, **config.logit_kw()),
    "semantic_attention_query_grad",
    (num_queries // block_q, batch, heads),
    [block_of_q, all_k, all_k, block_of_q_tags, all_k_tags, block_of_q, block_of_q_stats, block_of_q_stats]
    + [block_of_q_stats],
    block_of_q,
    jax.ShapeDtypeStruct(query.shape, query.dtype),
    width,
  )(*inputs)
  return query_grad, key_grad, value_grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(config, query, key, value, query_tags, key_tags):
  return _forward(config, query, key, value, query_tags, key_tags)[0]


def _flash_forward(config, query, key, value, query_tags, key_tags):
  out, row_max, row_sum = _forward(config, query, key, value, query_tags, key_tags)
  return out, (query, key, value, query_tags, key_tags, out, row_max, row_sum)


def _flash_backward(config, residuals, out_grad):
  query_grad, key_grad, value_grad = _backward(config, *residuals, out_grad)
  return query_grad, key_grad, value_grad, None, None  # integer tags: no cotangent


_flash.defvjp(_flash_forward, _flash_backward)


def _pad_axis(array, axis, size, fill):
  padding = [(0, 0)] * array.ndim
  padding[axis] = (0, size - array.shape[axis])
  return jnp.pad(array, padding, constant_values=fill)


def _attention(query, key, value, query_tags, key_tags, *, mask_value, bitmask, block_q, block_k, interpret):
  """Shared wrapper: pads tokens to block multiples and the head dim to a power of two, runs _flash, crops."""
  if not query.dtype == key.dtype == value.dtype:
    raise ValueError(
      f"the pallas semantic attention needs query, key, value of one dtype, got {query.dtype}, {key.dtype}, "
      f"{value.dtype}; cast them first"
    )
  if interpret is None:
    if jax.default_backend() not in ("cpu", "gpu"):
      raise ValueError(
        f"the pallas semantic attention compiles for GPU (Triton), not {jax.default_backend()}; use "
        "implementation='xla' there, or interpret=True"
      )
    interpret = jax.default_backend() == "cpu"
  _, num_queries, _, head_dim = query.shape
  num_keys = key.shape[1]
  width = max(16, pl.next_power_of_2(head_dim))
  block_q = _block_size(block_q, num_queries, width, query.dtype.itemsize)
  block_k = _block_size(block_k, num_keys, width, query.dtype.itemsize)
  padded_queries, padded_keys = pl.cdiv(num_queries, block_q) * block_q, pl.cdiv(num_keys, block_k) * block_k
  query = _pad_axis(_pad_axis(query, 3, width, 0), 1, padded_queries, 0)
  key, value = (_pad_axis(_pad_axis(array, 3, width, 0), 1, padded_keys, 0) for array in (key, value))
  # Padded queries are cropped below; padded keys are padding (label −1 / no bits).
  query_tags = _pad_axis(query_tags.astype(jnp.int32), 2, padded_queries, 0)
  key_tags = _pad_axis(key_tags.astype(jnp.int32), 2, padded_keys, 0 if bitmask else -1)
  config = _Config(
    scale=head_dim**-0.5,
    mask_value=float(mask_value),
    bitmask=bitmask,
    block_q=block_q,
    block_k=block_k,
    interpret=interpret,
    precision=lax.Precision.HIGHEST if value.dtype == jnp.float32 else lax.Precision.DEFAULT,
  )
  out = _flash(config, query, key, value, query_tags, key_tags)
  return out[:, :num_queries, :, :head_dim]


def semantic_attention_pallas(
  query,
  key,
  value,
  query_labels,
  key_labels,
  *,
  mask_value: float = DEFAULT_MASK_VALUE,
  block_q: int | None = None,
  block_k: int | None = None,
  interpret: bool | None = None,
):
  """SCA kernel: query (B, Nq, H, D), key/value (B, Nk, H, D), int labels (B, Nq), (B, Nk) → (B, Nq, H, D).

  Same semantics as semantic_attention's reference (key label < 0 = padding). Blocks (powers of two ≥ 16) default
  to 64 tokens, halved while a (block, D) tile exceeds 32 KiB. interpret=None: interpret mode on CPU, Triton on
  GPU. Inputs are not validated here; call through semantic_attention.
  """
  return _attention(
    query,
    key,
    value,
    query_labels[:, None, :],
    key_labels[:, None, :],
    mask_value=mask_value,
    bitmask=False,
    block_q=block_q,
    block_k=block_k,
    interpret=interpret,
  )


def semantic_attention_bitmask_pallas(
  query,
  key,
  value,
  query_bits,
  key_bits,
  *,
  mask_value: float = DEFAULT_MASK_VALUE,
  block_q: int | None = None,
  block_k: int | None = None,
  interpret: bool | None = None,
):
  """SCA kernel with bit words (B, Nq, W), (B, Nk, W): i attends j where any(bits_i & bits_j != 0).

  A key with all-zero words is padding. W is padded to a power of two with zero words (Triton tile sizes).
  """
  num_words = query_bits.shape[-1]
  padded_words = pl.next_power_of_2(num_words)
  query_bits, key_bits = (_pad_axis(bits, 2, padded_words, 0).transpose(0, 2, 1) for bits in (query_bits, key_bits))
  return _attention(
    query,
    key,
    value,
    query_bits,
    key_bits,
    mask_value=mask_value,
    bitmask=True,
    block_q=block_q,
    block_k=block_k,
    interpret=interpret,
  )
