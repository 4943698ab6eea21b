"""Semantic cross-attention (SCA, thesis eq 3.1): attention restricted to tokens that share a semantic label.

SCA(q, k, v) = softmax(where(label_q == label_k, q·kᵀ/√D, mask_value))·v. The mask value replaces the logit after
the 1/√D scaling (the authors' code: masked_fill(−1e4); the thesis: τ = −1e9), so a query whose label no key
carries sees equal logits everywhere and attends uniformly to all keys (never NaN). A key label < 0 marks padding:
such a key is never attended, not even by that uniform fallback; a row whose keys are all padding outputs 0.

The bitmask form carries several labels per token as int32 bit words (B, N, W): i may attend j where any word of
bits_i & bits_j is non-zero; a key whose words are all zero is padding. With bits = 1 << label it equals the
label form.

`implementation`: "xla" (this file's jnp reference; materialises the (B, H, Nq, Nk) logits), "pallas" (the blocked
online-softmax kernel in semantic_attention_pallas.py, which never does), "auto" (pallas on GPU, xla elsewhere).
"""

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("xla", "pallas", "auto")
DEFAULT_MASK_VALUE = -1e9  # τ of eq 3.1 (thesis footnote); the authors' code uses −1e4


def _check_inputs(query, key, value, query_tags, key_tags, tag_name, tag_rank):
  """ValueError naming the problem for wrong ranks, shapes or dtypes of q/k/v (B, N, H, D) and labels/bits."""
  for name, array in (("query", query), ("key", key), ("value", value)):
    if array.ndim != 4:
      raise ValueError(f"{name} must be (B, N, H, D), got shape {array.shape}")
    if not jnp.issubdtype(array.dtype, jnp.floating):
      raise ValueError(f"{name} must be floating point, got {array.dtype}")
  if key.shape != value.shape:
    raise ValueError(f"key {key.shape} and value {value.shape} must have the same shape (B, Nk, H, D)")
  if query.shape[0] != key.shape[0] or query.shape[2:] != key.shape[2:]:
    raise ValueError(f"query {query.shape} and key {key.shape} must share batch, heads and head dim (B, ·, H, D)")
  for name, array, tokens in (("query", query_tags, query.shape[1]), ("key", key_tags, key.shape[1])):
    expected = (query.shape[0], tokens) + ((query_tags.shape[-1],) if tag_rank == 3 else ())
    if array.ndim != tag_rank or array.shape[:2] != expected[:2]:
      layout = "(B, N, W)" if tag_rank == 3 else "(B, N)"
      raise ValueError(f"{name}_{tag_name} must be {layout} = {expected}, got shape {array.shape}")
    if not jnp.issubdtype(array.dtype, jnp.integer):
      raise ValueError(f"{name}_{tag_name} must be an integer array, got {array.dtype}")
  if tag_rank == 3 and query_tags.shape[-1] != key_tags.shape[-1]:
    raise ValueError(f"query_bits {query_tags.shape} and key_bits {key_tags.shape} need the same number W of words")


def _resolve(implementation: str) -> str:
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"semantic attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")
  if implementation == "auto":
    # The kernel's (B, N, H, D) blocks follow the Pallas Triton (GPU) backend; TPU tiling rules are not met.
    return "pallas" if jax.default_backend() == "gpu" else "xla"
  return implementation


def masked_attention_reference(query, key, value, allowed, key_valid, mask_value):
  """softmax(where(allowed, q·kᵀ/√D, mask_value) over valid keys)·v with an explicit (B, Nq, Nk) mask.

  query (B, Nq, H, D), key/value (B, Nk, H, D), allowed (B, Nq, Nk) bool, key_valid (B, Nk) bool → (B, Nq, H, D)
  in value.dtype. Logits and softmax in fp32; invalid keys get −inf, a row without valid keys outputs 0.
  """
  scale = query.shape[-1] ** -0.5
  logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32) * scale
  logits = jnp.where(allowed[:, None], logits, jnp.float32(mask_value))
  logits = jnp.where(key_valid[:, None, None, :], logits, -jnp.inf)
  row_max = jax.lax.stop_gradient(logits.max(-1, keepdims=True))
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)  # all keys padding: exp(−inf − 0) = 0, not NaN
  unnormalised = jnp.exp(logits - row_max)
  row_sums = unnormalised.sum(-1)  # (B, H, Nq)
  attended = jnp.einsum("bhqk,bkhd->bqhd", unnormalised, value.astype(jnp.float32))
  row_sums = jnp.moveaxis(jnp.where(row_sums > 0, row_sums, 1.0), 1, 2)[..., None]
  return (attended / row_sums).astype(value.dtype)


def labels_to_bits(labels, num_words: int | None = None):
  """int labels (B, N) → int32 bit words (B, N, W): bit label % 32 of word label // 32; label < 0 → 0.

  num_words defaults to what the largest label needs; pass it under jit (the labels are traced there).
  """
  labels = jnp.asarray(labels, jnp.int32)
  if num_words is None:
    num_words = max(1, (int(np.max(labels)) // 32) + 1) if labels.size else 1
  words = jnp.arange(num_words, dtype=jnp.int32)
  bit = jnp.left_shift(jnp.int32(1), labels % 32)
  hit = (labels[..., None] >= 0) & (labels[..., None] // 32 == words)
  return jnp.where(hit, bit[..., None], 0).astype(jnp.int32)


def semantic_attention(
  query, key, value, query_labels, key_labels, *, mask_value: float = DEFAULT_MASK_VALUE, implementation: str = "xla"
):
  """SCA (eq 3.1): query (B, Nq, H, D), key/value (B, Nk, H, D), int labels (B, Nq), (B, Nk) → (B, Nq, H, D).

  Key label < 0 = padding (never attended). Output in value.dtype; logits and softmax in fp32.
  """
  _check_inputs(query, key, value, query_labels, key_labels, "labels", 2)
  if _resolve(implementation) == "pallas":
    from storyjax.kernels.semantic_attention_pallas import semantic_attention_pallas

    return semantic_attention_pallas(query, key, value, query_labels, key_labels, mask_value=mask_value)
  allowed = query_labels[:, :, None] == key_labels[:, None, :]
  return masked_attention_reference(query, key, value, allowed, key_labels >= 0, mask_value)


def semantic_attention_bitmask(
  query, key, value, query_bits, key_bits, *, mask_value: float = DEFAULT_MASK_VALUE, implementation: str = "xla"
):
  """SCA with several labels per token: int32 bit words (B, Nq, W), (B, Nk, W); q/k/v as in semantic_attention.

  Query i may attend key j where any(bits_i & bits_j != 0); a key with all-zero words is padding.
  """
  _check_inputs(query, key, value, query_bits, key_bits, "bits", 3)
  if _resolve(implementation) == "pallas":
    from storyjax.kernels.semantic_attention_pallas import semantic_attention_bitmask_pallas

    return semantic_attention_bitmask_pallas(query, key, value, query_bits, key_bits, mask_value=mask_value)
  allowed = jnp.any((query_bits[:, :, None, :] & key_bits[:, None, :, :]) != 0, axis=-1)
  return masked_attention_reference(query, key, value, allowed, jnp.any(key_bits != 0, axis=-1), mask_value)
