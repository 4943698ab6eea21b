"""Semantic cross-attention (eq 3.1): the jnp reference and the Pallas kernel (interpret mode on CPU) against a
float64 numpy reference with a materialised mask, forward and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.kernels import labels_to_bits, semantic_attention, semantic_attention_bitmask
from storyjax.kernels.semantic_attention_pallas import semantic_attention_bitmask_pallas, semantic_attention_pallas

pytestmark = pytest.mark.usefixtures("fast_compile")

NUM_QUERIES, NUM_KEYS, HEADS, HEAD_DIM = 37, 19, 2, 8  # odd sizes: 3 query and 2 key blocks of 16, padded
BLOCKS = {"block_q": 16, "block_k": 16}


def _numpy_sca(q, k, v, allowed, key_valid, mask_value, out_grad):
  """float64 out (B, Nq, H, D) and dq, dk, dv of Σ out·out_grad, from the explicit (B, Nq, Nk) mask."""
  q, k, v, out_grad = (np.asarray(x, np.float64) for x in (q, k, v, out_grad))
  scale = q.shape[-1] ** -0.5
  logits = np.where(allowed[:, None], np.einsum("bqhd,bkhd->bhqk", q, k) * scale, mask_value)
  logits = np.where(key_valid[:, None, None, :], logits, -np.inf)
  row_max = logits.max(-1, keepdims=True)
  weights = np.exp(logits - np.where(np.isfinite(row_max), row_max, 0.0))
  sums = weights.sum(-1, keepdims=True)
  weights /= np.where(sums > 0, sums, 1.0)
  out = np.einsum("bhqk,bkhd->bqhd", weights, v)
  weight_grad = np.einsum("bqhd,bkhd->bhqk", out_grad, v)
  logit_grad = weights * (weight_grad - (weights * weight_grad).sum(-1, keepdims=True))
  logit_grad = np.where(allowed[:, None] & key_valid[:, None, None, :], logit_grad, 0.0) * scale  # τ is a constant
  dq = np.einsum("bhqk,bkhd->bqhd", logit_grad, k)
  dk = np.einsum("bhqk,bqhd->bkhd", logit_grad, q)
  dv = np.einsum("bhqk,bqhd->bkhd", weights, out_grad)
  return out, (dq, dk, dv)


def _numpy_labels_sca(q, k, v, query_labels, key_labels, mask_value, out_grad):
  allowed = query_labels[:, :, None] == key_labels[:, None, :]
  return _numpy_sca(q, k, v, allowed, key_labels >= 0, mask_value, out_grad)


def _case(seed=0, dtype=np.float32):
  """q, k, v, labels and an output cotangent for 3 batch rows: many labels with padding keys and a query label no
  key carries (uniform rows); a single label; only padding keys (output 0)."""
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(3, NUM_QUERIES, HEADS, HEAD_DIM))
  k, v = (rng.normal(size=(3, NUM_KEYS, HEADS, HEAD_DIM)) for _ in range(2))
  query_labels = np.stack([rng.integers(0, 6, NUM_QUERIES), np.zeros(NUM_QUERIES), np.zeros(NUM_QUERIES)])
  key_labels = np.stack([rng.integers(0, 5, NUM_KEYS), np.zeros(NUM_KEYS), np.full(NUM_KEYS, -1)])
  key_labels[0, [1, 7, 8, 15, 18]] = -1
  query_labels[0, :3] = 5  # label 5 is on no key
  out_grad = rng.normal(size=q.shape)
  q, k, v = (jnp.asarray(x, dtype) for x in (q, k, v))
  return q, k, v, query_labels.astype(np.int32), key_labels.astype(np.int32), out_grad.astype(np.float32)


def _value_and_grads(attend, q, k, v, out_grad):
  out, vjp = jax.vjp(attend, q, k, v)
  return out, vjp(out_grad.astype(out.dtype))


@pytest.mark.parametrize("mask_value", [-1e9, -1e4])
def test_xla_reference_matches_numpy(mask_value):
  q, k, v, query_labels, key_labels, out_grad = _case()
  attend = lambda q, k, v: semantic_attention(q, k, v, query_labels, key_labels, mask_value=mask_value)
  out, grads = jax.jit(functools.partial(_value_and_grads, attend))(q, k, v, out_grad)
  expected_out, expected_grads = _numpy_labels_sca(q, k, v, query_labels, key_labels, mask_value, out_grad)
  np.testing.assert_allclose(out, expected_out, atol=1e-5)
  for grad, expected in zip(grads, expected_grads):
    np.testing.assert_allclose(grad, expected, atol=1e-5)


@pytest.mark.parametrize("mask_value", [-1e9, -1e4])
def test_pallas_matches_numpy_forward_and_gradients(mask_value):
  q, k, v, query_labels, key_labels, out_grad = _case(seed=1)
  attend = lambda q, k, v: semantic_attention_pallas(q, k, v, query_labels, key_labels, mask_value=mask_value, **BLOCKS)
  out, grads = jax.jit(functools.partial(_value_and_grads, attend))(q, k, v, out_grad)
  expected_out, expected_grads = _numpy_labels_sca(q, k, v, query_labels, key_labels, mask_value, out_grad)
  assert all(np.isfinite(x).all() for x in (out, *grads))
  np.testing.assert_allclose(out, expected_out, atol=1e-5)
  for grad, expected in zip(grads, expected_grads):
    np.testing.assert_allclose(grad, expected, atol=1e-5)
  # the uniform fallback: a query whose label no key carries averages the real (non-padding) keys
  real_keys = key_labels[0] >= 0
  np.testing.assert_allclose(
    out[0, :3], np.broadcast_to(np.asarray(v)[0, real_keys].mean(0), (3, HEADS, HEAD_DIM)), atol=1e-6
  )
  np.testing.assert_array_equal(out[2], 0.0)  # only padding keys


def test_pallas_bfloat16_inputs():
  """bf16 q/k/v: outputs and gradients are rounded to bf16, whose spacing is 2⁻⁶ ≈ 0.016 on these |x| ≤ 4 values."""
  q, k, v, query_labels, key_labels, out_grad = _case(seed=2, dtype=jnp.bfloat16)
  attend = lambda q, k, v: semantic_attention_pallas(q, k, v, query_labels, key_labels, **BLOCKS)
  out, grads = jax.jit(functools.partial(_value_and_grads, attend))(q, k, v, out_grad)
  expected_out, expected_grads = _numpy_labels_sca(q, k, v, query_labels, key_labels, -1e9, out_grad)
  assert out.dtype == jnp.bfloat16 and all(grad.dtype == jnp.bfloat16 for grad in grads)
  np.testing.assert_allclose(np.asarray(out, np.float32), expected_out, atol=2e-2)
  for grad, expected in zip(grads, expected_grads):
    np.testing.assert_allclose(np.asarray(grad, np.float32), expected, atol=2e-2)


def _numpy_bits(labels, num_words):
  """(B, N) labels → (B, N, W) int32 words with bit label % 32 of word label // 32; label < 0 → no bit."""
  words = np.zeros(labels.shape + (num_words,), np.int64)
  for word in range(num_words):
    inside = (labels >= 0) & (labels // 32 == word)
    words[..., word] = np.where(inside, np.left_shift(1, np.where(inside, labels % 32, 0)), 0)
  return words.astype(np.uint32).view(np.int32)


def test_bitmask_form():
  """bits = 1 << label reproduces the label form; tokens with several labels follow the any(bits_i & bits_j) rule."""
  q, k, v, query_labels, key_labels, out_grad = _case(seed=3)
  labels = np.array([[-1, 0, 31, 32, 39]])
  np.testing.assert_array_equal(labels_to_bits(labels), _numpy_bits(labels, 2))
  by_label = jax.jit(semantic_attention)(q, k, v, query_labels, key_labels)
  by_bits = jax.jit(semantic_attention_bitmask)(q, k, v, _numpy_bits(query_labels, 1), _numpy_bits(key_labels, 1))
  np.testing.assert_array_equal(by_bits, by_label)

  rng = np.random.default_rng(4)  # two words (labels 0..39), up to two labels per token, some keys without any
  query_bits = _numpy_bits(rng.integers(-1, 40, (3, NUM_QUERIES)), 2) | _numpy_bits(
    rng.integers(30, 40, (3, NUM_QUERIES)), 2
  )
  key_bits = _numpy_bits(rng.integers(-1, 40, (3, NUM_KEYS)), 2) | _numpy_bits(rng.integers(-3, 33, (3, NUM_KEYS)), 2)
  allowed = ((query_bits[:, :, None, :] & key_bits[:, None, :, :]) != 0).any(-1)
  expected, _ = _numpy_sca(q, k, v, allowed, (key_bits != 0).any(-1), -1e9, out_grad)
  reference = jax.jit(semantic_attention_bitmask)(q, k, v, query_bits, key_bits)
  np.testing.assert_allclose(reference, expected, atol=1e-5)
  pallas = jax.jit(functools.partial(semantic_attention_bitmask_pallas, **BLOCKS))
  np.testing.assert_allclose(pallas(q, k, v, query_bits, key_bits), expected, atol=1e-5)


def test_training_with_either_implementation_gives_the_same_losses():
  """5 SGD steps of a one-layer SCA regression: the pallas kernel's gradients drive the same trajectory."""
  rng = np.random.default_rng(5)
  tokens = jnp.asarray(rng.normal(size=(2, 24, 16)), jnp.float32)
  targets = jnp.asarray(rng.normal(size=(2, 24, 16)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, (2, 24)), jnp.int32)
  params = {name: jnp.asarray(rng.normal(size=(16, 16)) / 4, jnp.float32) for name in ("query", "key", "value")}

  def losses(implementation):
    def loss_fn(params):
      project = lambda name: (tokens @ params[name]).reshape(2, 24, 1, 16)
      out = semantic_attention(
        project("query"), project("key"), project("value"), labels, labels, implementation=implementation
      )
      return jnp.mean((out.reshape(targets.shape) - targets) ** 2)

    def step(params, _):
      loss, grads = jax.value_and_grad(loss_fn)(params)
      return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), loss

    return np.asarray(jax.jit(lambda p: jax.lax.scan(step, p, None, length=5)[1])(params))

  xla_losses = losses("xla")
  assert xla_losses[-1] < xla_losses[0]
  np.testing.assert_allclose(losses("pallas"), xla_losses, rtol=1e-5)


def test_kernels_lower_to_triton_for_gpu():
  """Forward and both backward kernels pass the Pallas Triton lowering (cross-lowered for CUDA on this machine)."""
  q, k, v, query_labels, key_labels, _ = _case()
  loss = lambda q, k, v: semantic_attention_pallas(q, k, v, query_labels, key_labels, interpret=False).sum()
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(lowering_platforms=("cuda",)).as_text()
  assert hlo.count("__gpu$xla.gpu.triton") == 3


def test_auto_is_xla_on_cpu_and_bad_inputs_raise():
  q, k, v, query_labels, key_labels, _ = _case()
  if jax.default_backend() == "cpu":
    attend = jax.jit(semantic_attention, static_argnames="implementation")
    np.testing.assert_array_equal(
      attend(q, k, v, query_labels, key_labels, implementation="auto"), attend(q, k, v, query_labels, key_labels)
    )
  bad = {
    "must be \\(B, N, H, D\\)": (q[0], k, v, query_labels, key_labels),
    "same shape": (q, k, v[:, :5], query_labels, key_labels),
    "share batch, heads": (q[..., :4], k, v, query_labels, key_labels),
    "query_labels must be": (q, k, v, query_labels[:, :5], key_labels),
    "key_labels must be an integer": (q, k, v, query_labels, key_labels.astype(np.float32)),
    "query must be floating": (q.astype(jnp.int32), k, v, query_labels, key_labels),
  }
  for message, arguments in bad.items():
    with pytest.raises(ValueError, match=message):
      semantic_attention(*arguments)
  with pytest.raises(ValueError, match="implementation"):
    semantic_attention(q, k, v, query_labels, key_labels, implementation="triton")
  with pytest.raises(ValueError, match="same number W"):
    semantic_attention_bitmask(q, k, v, labels_to_bits(query_labels, 1), labels_to_bits(key_labels, 2))
