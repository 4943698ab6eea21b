"""SCAM model: shapes and parameter split, label locality of the encoder's latents and of the generator's modulation
(and its loss without semantic masks), the MaskedTransformer against a numpy transcription of the authors' block,
GN-GAN's normalised logits, the noise switch."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.layers.embeddings import sinusoidal_grid_embedding
from storyjax.layers.semantic import MaskedTransformer, SemanticOptions, nearest_resize
from storyjax.models.scam import (
  SCAM,
  SATEncoder,
  SCAMGenerator,
  discriminator_input,
  gradient_normalised_logits,
)

NUM_LABELS, PER_LABEL, DIM = 3, 2, 16
SUBJECT = 1  # the label whose pixels or latents change
# Init draws with the rbg generator: XLA:CPU compiles threefry's many parameter draws several times slower.
INIT_KEY = functools.partial(jax.random.key, impl="rbg")


def _key(seed):
  return INIT_KEY(seed)


def _label_map(size, seed):
  """A random (1, size, size) map in which every label occurs, also at half resolution."""
  rng = np.random.default_rng(seed)
  while True:
    labels = rng.integers(0, NUM_LABELS, (1, size, size)).astype(np.int32)
    if len(np.unique(labels[:, ::2, ::2])) == NUM_LABELS:
      return jnp.asarray(labels)


def _uniform_image(shape, seed):
  """Images in [−1, 1] drawn by numpy (a jax.random draw would be one more XLA compilation)."""
  return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, shape), jnp.float32)


def _latent_slice(label):
  return slice(label * PER_LABEL, (label + 1) * PER_LABEL)


def _params(tree):
  return flax.traverse_util.flatten_dict(nn.unbox(tree)["params"])


@pytest.fixture(scope="module")
def scam():
  model = SCAM(
    NUM_LABELS,
    PER_LABEL,
    DIM,
    encoder_levels=2,
    encoder_width=8,
    position_dim=8,
    generator_widths=(16, 16, 8),
    discriminator_widths=(8, 8, 8, 8),
  )
  image = _uniform_image((2, 16, 16, 3), seed=0)
  labels = jnp.concatenate([_label_map(16, 0), _label_map(16, 1)])
  (reconstruction, logits), variables = jax.jit(model.init_with_output)(_key(1), image, labels)
  return model, variables, image, labels, reconstruction, logits


def test_shapes_parameter_split_and_initialisation(scam):
  model, variables, image, labels, reconstruction, logits = scam
  assert set(variables) == {"params"}
  assert set(variables["params"]) == {"encoder", "generator", "discriminator"}
  latents = jax.eval_shape(functools.partial(model.apply, method="encode"), variables, image, labels)
  assert latents.shape == (2, NUM_LABELS * PER_LABEL, DIM)
  assert reconstruction.shape == image.shape and reconstruction.dtype == jnp.float32
  assert float(jnp.abs(reconstruction).max()) <= 1.0
  # 16² input, k4 p2: 16 → 9 → 5 → 3 (s2) → 4 (s1) → 5; the second scale sees 8²: 8 → 5 → 3 → 2 → 3 → 4.
  assert [tuple(scale.shape) for scale in logits] == [(2, 5, 5, 1), (2, 4, 4, 1)]
  params = _params(variables)
  assert params[("encoder", "latents")].shape == (NUM_LABELS * PER_LABEL, DIM)
  strengths = {path: value for path, value in params.items() if path[-1] == "noise_strength"}
  # mod_0 and mod_1 of both up blocks carry noise, the ToRGB SCAM-op does not; all start at 0.
  assert sorted(path[1:3] for path in strengths) == [("block_0", "mod_0"), ("block_0", "mod_1")] + [
    ("block_1", "mod_0"),
    ("block_1", "mod_1"),
  ]
  assert all(not np.any(value) for value in strengths.values())
  assert ("generator", "block_0", "to_rgb_mod", "latent_fc1", "kernel") in params  # simplex ToRGB: an MLP
  assert not any(path[:3] == ("generator", "block_1", "to_rgb_mod") for path in params)  # last block: 1×1 conv only


def test_encoder_latents_of_a_label_see_only_its_pixels():
  """Level 0 only, per-token LayerNorm: a label's latents ignore the other labels' pixels exactly; without semantic
  masks, or with the LayerNorm over all latents (as coded), they do not."""
  labels = jnp.repeat(_label_map(8, 2), 2, axis=0)
  image = _uniform_image((1, 8, 8, 3), seed=3)
  others = (labels[:1] != SUBJECT)[..., None]
  changed = jnp.where(others, -image, image)
  images = jnp.concatenate([image, changed])

  def encode(norm, semantic_masks, variables=None):
    options = SemanticOptions(inner_dim=DIM, norm=norm, semantic_masks=semantic_masks)
    encoder = SATEncoder(NUM_LABELS, PER_LABEL, DIM, num_levels=1, width=8, position_dim=8, options=options)
    variables = variables or jax.jit(encoder.init)(_key(4), images, labels)
    return jax.jit(encoder.apply)(variables, images, labels), variables

  subject = _latent_slice(SUBJECT)
  latents, variables = encode("token", True)
  np.testing.assert_array_equal(latents[0, subject], latents[1, subject])
  assert np.abs(latents[0] - latents[1]).max() > 1e-2  # the other labels' latents did change
  unmasked, _ = encode("token", False, variables)
  assert np.abs(unmasked[0, subject] - unmasked[1, subject]).max() > 1e-3
  joint, _ = encode("joint", True)
  assert np.abs(joint[0, subject] - joint[1, subject]).max() > 1e-3


@pytest.fixture(scope="module")
def generator():
  """A one-block generator at 8² (start 4²) with per-token LayerNorm, its variables and a 2-sample batch whose
  second latents differ from the first in the subject's latents only."""
  labels = jnp.repeat(_label_map(8, 5), 2, axis=0)
  latents = jnp.asarray(np.random.default_rng(6).normal(size=(1, NUM_LABELS * PER_LABEL, DIM)), jnp.float32)
  changed = latents.at[:, _latent_slice(SUBJECT)].add(1.0)
  latents = jnp.concatenate([latents, changed])
  options = SemanticOptions(inner_dim=DIM, norm="token")
  model = SCAMGenerator(NUM_LABELS, PER_LABEL, (8, 8), options=options)
  variables = jax.jit(model.init)(_key(7), labels, latents)
  return model, variables, labels, latents


@functools.partial(jax.jit, static_argnames=("model", "deterministic"))
def _generate(model, variables, labels, latents, deterministic, noise_key):
  """→ image (B, H, W, 3) and the first SCAM-op's γ and β (B, 4, 4, C)."""
  image, state = model.apply(
    variables, labels, latents, deterministic, rngs={"noise": noise_key}, mutable=["intermediates"]
  )
  first = state["intermediates"]["block_0"]["mod_0"]
  return image, first["gamma"][0], first["beta"][0]


def test_generator_modulation_of_a_pixel_depends_only_on_its_label_latents(generator):
  model, variables, labels, latents = generator
  outside = np.asarray(nearest_resize(labels, (4, 4))[0] != SUBJECT)
  _, gamma, beta = _generate(model, variables, labels, latents, True, _key(0))
  for term in (gamma, beta):
    np.testing.assert_array_equal(term[0][outside], term[1][outside])
    assert np.abs(term[0][~outside] - term[1][~outside]).min() > 0
  unmasked = model.clone(options=SemanticOptions(inner_dim=DIM, norm="token", semantic_masks=False))
  _, gamma, beta = _generate(unmasked, variables, labels, latents, True, _key(0))
  assert np.abs(gamma[0][outside] - gamma[1][outside]).max() > 1e-4


def test_noise_only_when_not_deterministic(generator):
  model, variables, labels, latents = generator
  deterministic, *_ = _generate(model, variables, labels, latents, True, _key(0))
  at_init, *_ = _generate(model, variables, labels, latents, False, _key(0))
  np.testing.assert_array_equal(deterministic, at_init)  # strengths start at 0
  noisy_variables = jax.tree_util.tree_map_with_path(
    lambda path, x: jnp.ones_like(x) if "noise_strength" in jax.tree_util.keystr(path) else x, variables
  )
  np.testing.assert_array_equal(deterministic, _generate(model, noisy_variables, labels, latents, True, _key(1))[0])
  noisy = _generate(model, noisy_variables, labels, latents, False, _key(1))[0]
  assert np.abs(noisy - deterministic).max() > 1e-3
  np.testing.assert_array_equal(noisy, _generate(model, noisy_variables, labels, latents, False, _key(1))[0])
  assert np.abs(noisy - _generate(model, noisy_variables, labels, latents, False, _key(2))[0]).max() > 1e-3


def test_gradient_normalisation_of_a_linear_discriminator():
  """D_0(x) = x·w₀ per pixel, D_1(x) = mean over pixels of x·w₁: ‖∇ΣD_0‖ = √(HW)‖w₀‖, ‖∇ΣD_1‖ = ‖w₁‖/√(HW)."""
  rng = np.random.default_rng(8)
  inputs = rng.normal(size=(3, 4, 5, 2)).astype(np.float32)
  weights = rng.normal(size=(2, 2)).astype(np.float32)
  logits_fn = lambda x: [
    jnp.einsum("bhwc,c->bhw", x, weights[0])[..., None],
    jnp.einsum("bhwc,c->b", x, weights[1])[:, None, None, None] / 20.0,
  ]
  normalised = gradient_normalised_logits(logits_fn, jnp.asarray(inputs))
  logits_0 = (inputs @ weights[0])[..., None]
  logits_1 = (inputs @ weights[1]).mean(axis=(1, 2))[:, None, None, None]
  norms = (np.sqrt(20.0) * np.linalg.norm(weights[0]), np.linalg.norm(weights[1]) / np.sqrt(20.0))
  for got, logits, norm in zip(normalised, (logits_0, logits_1), norms):
    np.testing.assert_allclose(got, logits / (norm + np.abs(logits)), rtol=1e-5)
    assert np.abs(got).max() < 1.0


def test_gradient_normalised_scam_discriminator(scam):
  """On the PatchGAN, given the discriminator's parameters alone: the concatenated-input path equals
  discriminate(image, labels); D̂ keeps D's sign, |D̂| < 1; a hinge loss on D̂ differentiates (through ∇ₓD) to
  every discriminator parameter's gradient, finite."""
  model, variables, _, labels, reconstruction, logits = scam
  inputs = discriminator_input(reconstruction, labels, NUM_LABELS)
  discriminator_side = {"discriminator": variables["params"]["discriminator"]}

  @jax.jit
  def loss_and_grads(params):
    logits_fn = lambda x: model.apply({"params": params}, x, method="discriminate_input")

    def loss(params):
      normalised = gradient_normalised_logits(
        lambda x: model.apply({"params": params}, x, method="discriminate_input"), inputs
      )
      return sum(jnp.mean(jax.nn.relu(1.0 + scale)) for scale in normalised), normalised

    (_, normalised), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return normalised, logits_fn(inputs), grads

  normalised, raw, grads = loss_and_grads(discriminator_side)
  for scale, (got, expected) in enumerate(zip(raw, logits)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"scale {scale}")
  for scale_normalised, scale_raw in zip(normalised, raw):
    assert np.all(np.abs(scale_normalised) < 1.0)
    np.testing.assert_array_equal(np.sign(scale_normalised), np.sign(scale_raw))
  grad_leaves = jax.tree.leaves(nn.unbox(grads))
  assert all(np.all(np.isfinite(leaf)) for leaf in grad_leaves)
  assert min(float(np.abs(leaf).max()) for leaf in grad_leaves) > 0


def test_masked_transformer_matches_the_authors_block():
  """Joint LayerNorm over (tokens, channels), masked logits −1e4 after the 1/√d scaling, LReLU FFN (B.1)."""
  rng = np.random.default_rng(9)
  tokens = rng.normal(size=(1, 4, 8)).astype(np.float32)
  context = rng.normal(size=(1, 6, 12)).astype(np.float32)
  token_labels = np.array([[0, 0, 1, 2]], np.int32)  # label 2 has no context token: uniform attention
  context_labels = np.array([[1, 0, 1, 0, 1, 1]], np.int32)
  block = MaskedTransformer(SemanticOptions(inner_dim=8))
  shapes = jax.eval_shape(block.init, jax.random.PRNGKey(0), tokens, context, token_labels, context_labels)
  variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), nn.unbox(shapes))
  got = block.apply(variables, tokens, context, token_labels, context_labels)

  p = variables["params"]
  linear = lambda x, layer: x @ layer["kernel"] + layer["bias"]
  attention = p["attention"]
  query, key, value = (
    linear(tokens, attention["query"]),
    linear(context, attention["key"]),
    linear(context, attention["value"]),
  )
  logits = query @ key.transpose(0, 2, 1) / np.sqrt(8.0)
  logits = np.where(token_labels[:, :, None] == context_labels[:, None, :], logits, -1e4)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  attended = linear((weights / weights.sum(-1, keepdims=True)) @ value, attention["out"])

  def joint_norm(x, layer):
    centred = x - x.mean(axis=(1, 2), keepdims=True)
    return centred / np.sqrt(centred.var(axis=(1, 2), keepdims=True) + 1e-5) * layer["scale"] + layer["bias"]

  leaky = lambda x: np.where(x > 0, x, 0.2 * x)
  hidden = joint_norm(attended + tokens, p["attention_norm"])
  expected = joint_norm(leaky(linear(leaky(linear(hidden, p["fc1"])), p["fc2"])) + hidden, p["mlp_norm"])
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_grid_embedding_and_nearest_resize_follow_the_torch_code():
  # SinusoidalPositionalEmbedding(dim): inv_freq over dim/2, linspace(−1, 1) coordinates, [sin w, sin h, cos w, cos h].
  height, width, dim = 3, 5, 8
  inv_freq = 1.0 / 10000 ** (np.arange(0, dim // 2, 2) / (dim // 2))
  h = np.linspace(-1, 1, height)[:, None, None] * inv_freq
  w = np.linspace(-1, 1, width)[None, :, None] * inv_freq
  h, w = np.broadcast_to(h, (height, width, 2)), np.broadcast_to(w, (height, width, 2))
  expected = np.concatenate([np.sin(w), np.sin(h), np.cos(w), np.cos(h)], axis=-1)
  np.testing.assert_allclose(sinusoidal_grid_embedding(height, width, dim), expected, rtol=1e-6, atol=1e-6)
  # F.interpolate(mode="nearest") reads source row ⌊i·5/3⌋ = 0, 1, 3 and column ⌊j·4/8⌋ = 0, 0, 1, 1, …
  grid = jnp.arange(20).reshape(1, 5, 4)
  expected = np.arange(20).reshape(5, 4)[[0, 1, 3]][:, np.arange(8) // 2]
  np.testing.assert_array_equal(nearest_resize(grid, (3, 8))[0], expected)
