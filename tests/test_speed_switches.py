"""The switches that change how a model computes but not what: attention implementation, probability dropout,
rematerialisation and mixed precision, each against the plain path (numpy reference or the float32 loss)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clatr as clatr_config
from configs import director as director_config
from storyjax import trainer
from storyjax.errors import ConfigError
from storyjax.kernels import cpu_attention as cpu_attention_lib
from storyjax.layers import attention as attention_lib
from storyjax.layers.attention import ATTENTION_IMPLEMENTATIONS, fused_attention, pallas_attention, xla_attention
from storyjax.tasks import get_task

pytestmark = pytest.mark.usefixtures("fast_compile")


def _numpy_attention(q, k, v, key_mask, drop_mask=None, keep=1.0):
  """Materialised softmax(q·kᵀ/√d)·v in float64; rows with no valid key attend uniformly."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(key_mask[:, None, None, :], logits, -1e300)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  if drop_mask is not None:
    weights = weights * drop_mask / keep
  return np.einsum("bhqk,bkhd->bqhd", weights, v)


def _qkv(seed=0, batch=2, queries=5, keys=7, heads=3, head_dim=4):
  rng = np.random.default_rng(seed)
  shapes = [(batch, queries, heads, head_dim), (batch, keys, heads, head_dim), (batch, keys, heads, head_dim)]
  key_mask = np.ones((batch, keys), bool)
  key_mask[0, 4:] = False
  key_mask[1] = False  # no valid key at all: uniform attention, never NaN
  return [rng.normal(size=shape).astype(np.float32) for shape in shapes] + [key_mask]


ATTEND = {
  "xla": xla_attention,
  "fused": fused_attention,
  "pallas": pallas_attention,
  "cpu": cpu_attention_lib.cpu_attention,
}


@pytest.mark.parametrize("implementation", [name for name in ATTENTION_IMPLEMENTATIONS if name != "auto"])
def test_attention_implementations_match_numpy(implementation):
  q, k, v, key_mask = _qkv()
  ours = np.asarray(jax.jit(ATTEND[implementation])(q, k, v, key_mask))
  np.testing.assert_allclose(ours, _numpy_attention(q, k, v, key_mask), rtol=1e-5, atol=1e-5)


# (batch, queries, keys, heads, head_dim): tiny, cross-attention, head widths off the kernel's 8-float vectors,
# lengths off its 4-row and 16-column tiles.
CPU_KERNEL_SHAPES = [(1, 1, 1, 1, 1), (2, 5, 7, 3, 4), (3, 19, 33, 2, 24), (2, 37, 6, 1, 13), (2, 4, 21, 2, 64)]


@pytest.mark.parametrize("shape", CPU_KERNEL_SHAPES, ids=str)
def test_cpu_kernel_values_and_gradients_match_xla(shape):
  batch, queries, keys, heads, head_dim = shape
  rng = np.random.default_rng(sum(shape))
  q, k, v = (rng.normal(size=(batch, length, heads, head_dim)).astype(np.float32) for length in (queries, keys, keys))
  key_mask = rng.uniform(size=(batch, keys)) < 0.7
  key_mask[0] = False  # a row with no valid key: uniform weights, no gradient through the logits
  weights = rng.normal(size=(batch, queries, heads, head_dim)).astype(np.float32)

  def loss_and_grads(attend):
    loss = lambda q, k, v: jnp.sum(weights * attend(q, k, v, key_mask, scale=0.3) ** 2)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(q, k, v)

  (kernel_loss, kernel_grads), (xla_loss, xla_grads) = map(
    loss_and_grads, (cpu_attention_lib.cpu_attention, xla_attention)
  )
  np.testing.assert_allclose(kernel_loss, xla_loss, rtol=1e-5)
  for kernel_grad, xla_grad in zip(kernel_grads, xla_grads):
    np.testing.assert_allclose(kernel_grad, xla_grad, rtol=1e-4, atol=1e-5 * float(np.abs(xla_grad).max()))


def test_cpu_kernel_drops_the_same_probabilities_as_xla():
  """Same seed, same hashed mask: the two paths agree in values and in every gradient; dropout does act."""
  rng = np.random.default_rng(4)
  queries, context = rng.normal(size=(2, 11, 12)).astype(np.float32), rng.normal(size=(2, 9, 12)).astype(np.float32)
  key_mask = np.arange(9)[None, :] < np.array([[9], [5]])
  layer = lambda implementation, rate: attention_lib.MultiHeadAttention(
    3, dropout_rate=rate, implementation=implementation
  )
  params = layer("xla", 0.3).init(jax.random.PRNGKey(0), queries, context, key_mask)

  def loss_and_grads(implementation, rate):
    def loss(params, queries, context):
      rngs = {"dropout": jax.random.PRNGKey(7)}
      out = layer(implementation, rate).apply(params, queries, context, key_mask, deterministic=False, rngs=rngs)
      return jnp.sum(out**2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(params, queries, context)

  (kernel_loss, kernel_grads), (xla_loss, xla_grads) = loss_and_grads("cpu", 0.3), loss_and_grads("xla", 0.3)
  np.testing.assert_allclose(kernel_loss, xla_loss, rtol=1e-5)
  scale = max(float(np.abs(leaf).max()) for leaf in jax.tree.leaves(xla_grads))  # the key bias's is 0 up to rounding
  for kernel_grad, xla_grad in zip(jax.tree.leaves(kernel_grads), jax.tree.leaves(xla_grads)):
    np.testing.assert_allclose(kernel_grad, xla_grad, rtol=1e-4, atol=1e-5 * scale)
  assert abs(float(loss_and_grads("cpu", 0.0)[0]) - float(kernel_loss)) > 1e-3 * abs(float(kernel_loss))


def test_cpu_kernel_takes_bfloat16_and_no_mask():
  q, k, v, _ = _qkv(seed=3)
  as_bf16 = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
  out = jax.jit(cpu_attention_lib.cpu_attention)(*as_bf16)
  assert out.dtype == jnp.bfloat16 and out.shape == q.shape
  reference = _numpy_attention(*(np.asarray(x, np.float32) for x in as_bf16), np.ones(k.shape[:2], bool))
  np.testing.assert_allclose(np.asarray(out, np.float32), reference, atol=2e-2)


def test_cpu_kernel_refuses_mismatched_head_sizes():
  with pytest.raises(ValueError, match=r"\(2, 3, 4, 8\), \(2, 5, 4, 6\)"):
    cpu_attention_lib.cpu_attention(jnp.zeros((2, 3, 4, 8)), jnp.zeros((2, 5, 4, 6)), jnp.zeros((2, 5, 4, 6)))


def test_auto_attention_is_the_cpu_kernel_only_on_one_cpu_device(monkeypatch):
  assert jax.device_count() == 8  # the tests' fake devices: "auto" stays on XLA
  assert attention_lib.resolve_implementation("auto") == "xla"
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert attention_lib.resolve_implementation("auto") == "cpu"
  assert attention_lib.resolve_implementation("auto", needs_xla=True) == "xla"  # probability dropout
  assert attention_lib.resolve_implementation("fused") == "fused"
  monkeypatch.setenv("CXX", "no-such-compiler")
  assert attention_lib.resolve_implementation("auto") == "xla"
  with pytest.raises(ConfigError, match="no-such-compiler"):
    cpu_attention_lib.library_path()


def test_cpu_kernel_build_failure_names_the_command(monkeypatch, tmp_path):
  monkeypatch.setenv("STORYJAX_CACHE", str(tmp_path))
  monkeypatch.setattr(cpu_attention_lib, "COMPILE_FLAGS", ("--no-such-flag",))
  with pytest.raises(ConfigError, match="model.attention='xla'.*--no-such-flag"):
    cpu_attention_lib.library_path()
  assert not list(tmp_path.glob("*.so"))  # nothing half-built is left to load


def test_probability_dropout_equals_dropout_on_the_normalised_weights():
  q, k, v, key_mask = _qkv(seed=1)
  keep = 0.7
  drop_mask = np.random.default_rng(2).uniform(size=(2, 3, 5, 7)) < keep
  ours = xla_attention(q, k, v, key_mask, dropout_fn=lambda weights: weights * drop_mask / keep)
  np.testing.assert_allclose(np.asarray(ours), _numpy_attention(q, k, v, key_mask, drop_mask, keep), atol=1e-5)


# ---- the switches on Director's smoke config --------------------------------------------------------------------
def _director_loss_and_grads(config, params, batch):
  task = get_task(config)
  loss_fn = lambda p: task.loss({"params": p}, batch, jax.random.PRNGKey(3))[0]
  return jax.jit(jax.value_and_grad(loss_fn))(params)


@pytest.fixture(scope="module")
def plain_director():
  """(config, params, batch, loss, grads) of Director A's smoke config (one block: compiles fast) on the plain path."""
  config = director_config.get_config("smoke")
  config.mesh.data = 1
  config.model.num_layers = 1
  setup = trainer.TrainSetup(get_task(config), config)
  iterator = setup.train_iterator()
  batch = next(iterator)
  iterator.close()
  params = setup.init_state()["params"]
  return (config, params, batch) + tuple(_director_loss_and_grads(config, params, batch))


# Each switch changes how the same loss is computed; remat also keeps the parameter tree (same `params` apply).
SWITCHES = {
  "fused attention, remat dots": ({"attention": "fused", "remat": "dots"}, 1e-5),
  "pallas attention, remat block": ({"attention": "pallas", "remat": "block"}, 1e-5),
  "cpu kernel attention": ({"attention": "cpu"}, 1e-5),
  "bfloat16 compute": ({"dtype": "bfloat16"}, 2e-2),
}


def _norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(leaf, np.float64))) for leaf in jax.tree.leaves(tree))))


@pytest.mark.parametrize("switch", SWITCHES)
def test_director_switch_matches_the_plain_loss_and_gradients(plain_director, switch):
  config, params, batch, loss, grads = plain_director
  overrides, tolerance = SWITCHES[switch]
  switched = config.copy_and_resolve_references()
  switched.model.update(overrides)
  switched_loss, switched_grads = _director_loss_and_grads(switched, params, batch)
  np.testing.assert_allclose(switched_loss, loss, rtol=tolerance)
  difference = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), switched_grads, grads)
  assert _norm(difference) <= 3 * tolerance * _norm(grads)
  assert {leaf.dtype for leaf in jax.tree.leaves(switched_grads)} == {jnp.dtype(jnp.float32)}


def test_mixed_precision_keeps_float32_parameters_and_optimizer_state():
  config = director_config.get_config("smoke")
  config.model.dtype = "bfloat16"
  config.mesh.data = 1
  setup = trainer.TrainSetup(get_task(config), config)
  floating = [leaf.dtype for leaf in jax.tree.leaves(setup.abstract_state) if jnp.issubdtype(leaf.dtype, jnp.floating)]
  assert floating and set(floating) == {jnp.dtype(jnp.float32)}
  hlo = setup.lower_train_step().as_text()
  assert "bf16" in hlo and "dot_general" in hlo  # the matmuls run in bfloat16


def test_fused_attention_refuses_probability_dropout():
  config = director_config.get_config("smoke")
  config.model.update({"attention": "fused", "attention_dropout_rate": 0.1})
  with pytest.raises(ConfigError, match="attention_dropout_rate"):
    get_task(config)
  clatr = clatr_config.get_config("smoke")  # CLaTr drops probabilities at its model.dropout_rate
  clatr.model.attention = "pallas"
  with pytest.raises(ConfigError, match="model.dropout_rate=0.1 drops attention probabilities.*'pallas'"):
    get_task(clatr)
