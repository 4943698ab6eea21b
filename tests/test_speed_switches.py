"""The switches that change how a model computes but not what: attention implementation, probability dropout,
rematerialisation and mixed precision, each against the plain path (numpy reference or the float32 loss)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import director as director_config
from storyjax import trainer
from storyjax.errors import ConfigError
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


@pytest.mark.parametrize("implementation", ATTENTION_IMPLEMENTATIONS)
def test_attention_implementations_match_numpy(implementation):
  q, k, v, key_mask = _qkv()
  attend = {"xla": xla_attention, "fused": fused_attention, "pallas": pallas_attention}[implementation]
  ours = np.asarray(jax.jit(attend)(q, k, v, key_mask))
  np.testing.assert_allclose(ours, _numpy_attention(q, k, v, key_mask), rtol=1e-5, atol=1e-5)


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
