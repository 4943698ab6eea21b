"""RIN / TextRIN: shapes, key masking of padded text, LayerScale and self-conditioning initialisation, tokens."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.models.rin import RIN

pytestmark = pytest.mark.usefixtures("fast_compile")

IMAGE = (16, 16)
SIZES = {"interface_dim": 16, "num_latents": 8, "latent_dim": 32, "num_blocks": 2, "block_depth": 1}
SIZES.update({"latent_heads": 2, "read_write_heads": 2, "num_registers": 3, "context_heads": 2})


def _inputs(rng, batch=2, text_width=None):
  noisy = jax.random.normal(rng, (batch, *IMAGE, 3))
  gamma = jnp.linspace(0.2, 0.9, batch)
  text_mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], bool)[:batch]
  if text_width is None:
    text = jnp.array([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]], jnp.int32)[:batch]
  else:
    text = jax.random.normal(jax.random.fold_in(rng, 1), (batch, 5, text_width))
  return noisy, gamma, text, text_mask


@pytest.fixture(scope="module")
def cad():
  """A CAD TextRIN on frozen text features (B, L, 12) with its initial variables, and randomised parameters."""
  model = RIN(IMAGE, conditioning="text", coherence=True, text_encoder="t5", **SIZES)
  noisy, gamma, text, text_mask = _inputs(jax.random.PRNGKey(0), text_width=12)
  zeros = _zero_latents()
  coherence = jnp.array([1.0, 0.0])
  variables = jax.jit(model.init)(jax.random.PRNGKey(1), noisy, gamma, zeros, None, text, text_mask, coherence)
  # Random values everywhere, so that zero-initialised layers (self-conditioning's LayerNorm) are exercised too.
  rng = np.random.default_rng(2)  # numpy draws: one jax.random call per shape would compile each
  randomised = jax.tree.map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape), jnp.float32), variables)
  return model, variables, randomised, (noisy, gamma, text, text_mask, coherence)


def _zero_latents(batch=2):
  """No previous latents (what None means to RIN), as an array so that one compiled program serves every call."""
  return jnp.zeros((batch, SIZES["num_latents"], SIZES["latent_dim"]))


def test_textrin_shapes_and_initialisation(cad):
  model, variables, _, (noisy, gamma, text, text_mask, coherence) = cad
  apply, zeros = jax.jit(model.apply), _zero_latents()
  prediction, latents = apply(variables, noisy, gamma, zeros, None, text, text_mask, coherence)
  assert prediction.shape == noisy.shape and prediction.dtype == jnp.float32
  assert latents.shape == (2, SIZES["num_latents"], SIZES["latent_dim"])
  params = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables["params"]))
  layer_scales = {path: value for path, value in params.items() if path[-1].endswith("_layer_scale")}
  # Two context layers × (attention, MLP) LayerScale vectors of D_z, all 0.1 (§2.2 step 5).
  assert len(layer_scales) == 2 * model.context_layers
  for value in layer_scales.values():
    np.testing.assert_array_equal(nn_unbox(value), np.full(SIZES["latent_dim"], 0.1, np.float32))
  registers = nn_unbox(params[("context", "registers")])
  assert registers.shape == (SIZES["num_registers"], SIZES["latent_dim"])
  # Self-conditioning enters through a LayerNorm with zero scale and bias: no effect at initialisation.
  again, _ = apply(variables, noisy, gamma, 5.0 + latents, None, text, text_mask, coherence)
  np.testing.assert_array_equal(again, prediction)


def nn_unbox(value):
  return np.asarray(value.unbox() if hasattr(value, "unbox") else value)


def test_padded_text_cannot_change_the_output(cad):
  model, _, randomised, (noisy, gamma, text, text_mask, coherence) = cad
  apply, zeros = jax.jit(model.apply), _zero_latents()
  prediction, latents = apply(randomised, noisy, gamma, zeros, None, text, text_mask, coherence)
  changed_text = jnp.where(text_mask[..., None], text, 100.0 * jnp.ones_like(text))
  changed, changed_latents = apply(randomised, noisy, gamma, zeros, None, changed_text, text_mask, coherence)
  np.testing.assert_allclose(changed, prediction, atol=1e-5)
  np.testing.assert_allclose(changed_latents, latents, atol=1e-5)
  # ... while a valid text token, the coherence and the previous latents do change it.
  other_token = text.at[0, 0].add(1.0)
  assert (
    np.abs(apply(randomised, noisy, gamma, zeros, None, other_token, text_mask, coherence)[0] - prediction).max() > 1e-3
  )
  flipped = apply(randomised, noisy, gamma, zeros, None, text, text_mask, 1.0 - coherence)[0]
  assert np.abs(flipped - prediction).max() > 1e-3
  self_conditioned = apply(randomised, noisy, gamma, latents, None, text, text_mask, coherence)[0]
  assert np.abs(self_conditioned - prediction).max() > 1e-3


def test_class_and_time_tokens():
  model = RIN(IMAGE, conditioning="class", num_classes=5, **SIZES)
  noisy, gamma, _, _ = _inputs(jax.random.PRNGKey(5))
  apply, zeros = jax.jit(model.apply), _zero_latents()
  labels = jnp.array([2, -1])
  variables = jax.jit(model.init)(jax.random.PRNGKey(6), noisy, gamma, zeros, labels)
  learned = nn_unbox(variables["params"]["latents"])
  assert learned.shape == (SIZES["num_latents"] - 2, SIZES["latent_dim"])  # time and class tokens are latents too
  prediction, latents = apply(variables, noisy, gamma, zeros, labels)
  assert latents.shape[1] == SIZES["num_latents"]
  other = apply(variables, noisy, gamma, zeros, jnp.array([3, -1]))[0]
  assert np.abs(other[0] - prediction[0]).max() > 1e-4
  np.testing.assert_array_equal(other[1], prediction[1])  # samples are independent
  unconditional = RIN(IMAGE, conditioning="none", **SIZES)
  unconditional_params = jax.eval_shape(unconditional.init, jax.random.PRNGKey(6), noisy, gamma)["params"]
  assert unconditional_params["latents"].unbox().shape[0] == SIZES["num_latents"] - 1  # the time token only


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"conditioning": "image"}, "conditioning"),
    ({"conditioning": "class", "num_classes": 0}, "num_classes"),
    ({"conditioning": "class", "num_classes": 3, "coherence": True}, "coherence"),
    ({"conditioning": "none", "num_latents": 1}, "no learned latents"),
  ],
)
def test_bad_settings_are_named(kwargs, message):
  noisy, gamma, _, _ = _inputs(jax.random.PRNGKey(0))
  model = RIN(IMAGE, **{**SIZES, **kwargs})
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(model.init, jax.random.PRNGKey(0), noisy, gamma, None, jnp.zeros((2,), jnp.int32))
