"""SCAM model: shapes and the parameter split (also at the paper's sizes), label locality of the encoder's latents
(lost without semantic masks) and of a SCAM-op's modulation, the MaskedTransformer against a numpy transcription of
the authors' block, GN-GAN's normalised logits, the noise switch, the grid embedding and nearest resize against the
torch formulas."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from storyjax.layers.embeddings import sinusoidal_grid_embedding
from storyjax.layers.semantic import MaskedTransformer, SemanticOptions, latent_labels, nearest_resize
from storyjax.models.scam import (
  SCAM,
  SATEncoder,
  SCAMGenerator,
  SCAMModulation,
  discriminator_input,
  gradient_normalised_logits,
)

pytestmark = pytest.mark.usefixtures("fast_compile")
NUM_LABELS, PER_LABEL, DIM = 3, 2, 16
SUBJECT = 1  # the label whose pixels or latents change
TOKEN_NORM = SemanticOptions(inner_dim=DIM, norm="token")


def _key(seed):
  """Init keys of the unsafe_rbg generator: XLA:CPU compiles threefry's parameter draws about 2-6× slower."""
  return jax.random.key(seed, impl="unsafe_rbg")


def _label_map(size, seed):
  """A random (1, size, size) int32 map in which every label occurs, also at half resolution."""
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


def _flat_params(tree):
  return flax.traverse_util.flatten_dict(nn.unbox(tree)["params"])


def _numpy_variables(shapes, seed):
  """Random values for abstract variables: weights N(0, 1/fan_in), vectors N(0, 0.1²) (no init compilation)."""
  rng = np.random.default_rng(seed)

  def draw(leaf):
    scale = 0.1 if leaf.ndim == 1 else 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
    return jnp.asarray(scale * rng.normal(size=leaf.shape), jnp.float32)

  return jax.tree.map(draw, nn.unbox(shapes))


@pytest.fixture(scope="module")
def scam():
  """A 1-level encoder, 2-block generator (16² from 4²) SCAM with random parameters, a batch and its outputs."""
  model = SCAM(
    NUM_LABELS,
    PER_LABEL,
    DIM,
    encoder_levels=1,
    encoder_width=8,
    position_dim=8,
    generator_widths=(16, 16, 8),
    discriminator_widths=(8, 8, 8, 8),
  )
  image = _uniform_image((2, 16, 16, 3), seed=0)
  labels = jnp.concatenate([_label_map(16, 0), _label_map(16, 1)])
  shapes = jax.eval_shape(model.init, _key(0), image, labels)
  variables = _numpy_variables(shapes, seed=1)
  reconstruction, logits = jax.jit(model.apply)(variables, image, labels)
  return model, shapes, variables, image, labels, reconstruction, logits


def test_shapes_and_parameter_split(scam):
  model, shapes, variables, image, labels, reconstruction, logits = scam
  assert set(shapes) == {"params"}
  assert set(shapes["params"]) == {"encoder", "generator", "discriminator"}
  latents = jax.eval_shape(functools.partial(model.apply, method="encode"), variables, image, labels)
  assert latents.shape == (2, NUM_LABELS * PER_LABEL, DIM)
  assert reconstruction.shape == image.shape and reconstruction.dtype == jnp.float32
  assert float(jnp.abs(reconstruction).max()) <= 1.0 and float(jnp.abs(reconstruction).std()) > 1e-3
  # 16² input, k4 p2: 16 → 9 → 5 → 3 (s2) → 4 (s1) → 5; the second scale sees 8²: 8 → 5 → 3 → 2 → 3 → 4.
  assert [tuple(scale.shape) for scale in logits] == [(2, 5, 5, 1), (2, 4, 4, 1)]
  params = _flat_params(shapes)
  assert params[("encoder", "latents")].shape == (NUM_LABELS * PER_LABEL, DIM)
  # Joint LayerNorm: an affine per (latent, channel).
  assert params[("encoder", "block_0_cross", "attention_norm", "scale")].shape == (NUM_LABELS * PER_LABEL, DIM)
  # Per up block: noise in mod_0 and mod_1; a simplex SCAM-op (latent MLP, no noise) before ToRGB but in the last.
  noisy = sorted(path[1:3] for path in params if path[-1] == "noise_strength")
  assert noisy == [("block_0", "mod_0"), ("block_0", "mod_1"), ("block_1", "mod_0"), ("block_1", "mod_1")]
  assert ("generator", "block_0", "to_rgb_mod", "latent_fc1", "kernel") in params
  assert not any(path[:3] == ("generator", "block_1", "to_rgb_mod") for path in params)
  assert params[("generator", "start_conv", "kernel")].shape == (3, 3, NUM_LABELS, 16)
  assert params[("discriminator", "scale_0_conv_0", "kernel")].shape == (4, 4, 3 + NUM_LABELS, 8)


def test_paper_sizes():
  """Abstractly (eval_shape), the released CelebAMask-HQ model in bf16: 152 latents of 256 (B.2), stem channels
  32…1024 (B.3), up blocks to 1024, 1024, 512, 256, 128, 64 channels (B.4), 35² and 19² logits at 256² (B.5).
  A generator from a 3×2 start ends at the label map's size, as iDesigner's 96×64 → 256×170 last block does."""
  model = SCAM(19, dtype=jnp.bfloat16)
  image, labels = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32), jax.ShapeDtypeStruct((1, 256, 256), jnp.int32)
  (reconstruction, logits), shapes = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), image, labels)
  params = _flat_params(shapes)
  assert params[("encoder", "latents")].shape == (152, 256)
  stem = [params[("encoder", f"stem_{level}", "kernel")].shape[-1] for level in range(1, 7)]
  assert stem == [32, 64, 128, 256, 512, 1024]
  blocks = [params[("generator", f"block_{index}", "conv_1", "kernel")].shape[-1] for index in range(6)]
  assert blocks == [1024, 1024, 512, 256, 128, 64]
  assert reconstruction.shape == (1, 256, 256, 3) and reconstruction.dtype == jnp.float32
  assert [scale.shape for scale in logits] == [(1, 35, 35, 1), (1, 19, 19, 1)]
  generator = SCAMGenerator(NUM_LABELS, PER_LABEL, (8, 8, 8), start_size=(3, 2), options=TOKEN_NORM)
  labels, latents = jnp.zeros((1, 17, 11), jnp.int32), jnp.zeros((1, NUM_LABELS * PER_LABEL, DIM))
  reconstruction, _ = jax.eval_shape(generator.init_with_output, jax.random.PRNGKey(0), labels, latents)
  assert reconstruction.shape == (1, 17, 11, 3)


def test_encoder_latents_of_a_label_see_only_its_pixels():
  """One level, per-token LayerNorm: a label's latents ignore the other labels' pixels exactly, and lose that
  without semantic masks. (With the joint LayerNorm as coded, every latent depends on all of them.)"""
  labels = jnp.repeat(_label_map(8, 2), 2, axis=0)
  image = _uniform_image((1, 8, 8, 3), seed=3)
  changed = jnp.where((labels[:1] != SUBJECT)[..., None], -image, image)
  images = jnp.concatenate([image, changed])
  encoder = SATEncoder(NUM_LABELS, PER_LABEL, DIM, num_levels=1, stem_width=8, position_dim=8, options=TOKEN_NORM)
  variables = jax.jit(encoder.init)(_key(4), images, labels)
  table = nn.unbox(variables)["params"]["latents"]
  assert 0.75 < float(table.std()) < 1.25  # learned queries start N(0, 1)

  subject = _latent_slice(SUBJECT)
  latents = jax.jit(encoder.apply)(variables, images, labels)
  np.testing.assert_array_equal(latents[0, subject], latents[1, subject])
  assert np.abs(latents[0] - latents[1]).max() > 1e-2  # the other labels' latents did change
  unmasked = encoder.clone(options=SemanticOptions(inner_dim=DIM, norm="token", semantic_masks=False))
  latents = jax.jit(unmasked.apply)(variables, images, labels)
  assert np.abs(latents[0, subject] - latents[1, subject]).max() > 1e-3


@pytest.fixture(scope="module")
def modulation():
  """One duplex SCAM-op (per-token LayerNorm) on a (2, 4, 4, 8) feature map, initialised, with two latent sets that
  differ in the subject's latents only."""
  rng = np.random.default_rng(6)
  features = jnp.asarray(np.repeat(rng.normal(size=(1, 4, 4, 8)), 2, axis=0), jnp.float32)
  pixel_labels = jnp.repeat(_label_map(4, 5), 2, axis=0)
  latents = jnp.asarray(rng.normal(size=(1, NUM_LABELS * PER_LABEL, DIM)), jnp.float32)
  latents = jnp.concatenate([latents, latents.at[:, _latent_slice(SUBJECT)].add(1.0)])
  own_labels = jnp.broadcast_to(latent_labels(NUM_LABELS, PER_LABEL), latents.shape[:2])
  inputs = (features, latents, pixel_labels, own_labels)
  model = SCAMModulation(options=TOKEN_NORM)
  return model, jax.jit(model.init)(_key(7), *inputs), inputs


@functools.partial(jax.jit, static_argnames=("model", "deterministic"))
def _modulate(model, variables, inputs, deterministic, noise_key):
  """→ the SCAM-op's output (B, 4, 4, 8) and its γ and β."""
  (out, _), state = model.apply(variables, *inputs, deterministic, rngs={"noise": noise_key}, mutable=["intermediates"])
  return out, state["intermediates"]["gamma"][0], state["intermediates"]["beta"][0]


def test_modulation_of_a_pixel_depends_only_on_its_label_latents(modulation):
  model, variables, inputs = modulation
  outside = np.asarray(inputs[2][0] != SUBJECT)
  _, gamma, beta = _modulate(model, variables, inputs, True, _key(0))
  # Without the semantic masks every pixel would attend every latent and the first assertion would fail.
  for term in (gamma, beta):
    np.testing.assert_array_equal(term[0][outside], term[1][outside])
    assert np.abs(term[0][~outside] - term[1][~outside]).min() > 0


def test_noise_only_when_not_deterministic(modulation):
  model, variables, inputs = modulation
  deterministic = _modulate(model, variables, inputs, True, _key(0))[0]
  np.testing.assert_array_equal(deterministic, _modulate(model, variables, inputs, False, _key(0))[0])
  strength = nn.unbox(variables)["params"]["noise_strength"]
  assert strength.shape == (8,) and not np.any(strength)  # one strength per channel, zero at init
  noisy_variables = jax.tree_util.tree_map_with_path(
    lambda path, x: jnp.ones_like(x) if "noise_strength" in jax.tree_util.keystr(path) else x, variables
  )
  np.testing.assert_array_equal(deterministic, _modulate(model, noisy_variables, inputs, True, _key(1))[0])
  noisy = _modulate(model, noisy_variables, inputs, False, _key(1))[0]
  assert np.abs(noisy - deterministic).max() > 1e-3
  np.testing.assert_array_equal(noisy, _modulate(model, noisy_variables, inputs, False, _key(1))[0])
  assert np.abs(noisy - _modulate(model, noisy_variables, inputs, False, _key(2))[0]).max() > 1e-3


def test_gradient_normalisation_of_a_linear_discriminator():
  """D_0(x) = x·w₀ per pixel, D_1(x) = mean over pixels of x·w₁: ‖∇ΣD_0‖ = √(HW)‖w₀‖, ‖∇ΣD_1‖ = ‖w₁‖/√(HW).
  The derivative of a loss on D̂ with respect to w (through ∇ₓD) matches central finite differences."""
  rng = np.random.default_rng(8)
  inputs = jnp.asarray(rng.normal(size=(3, 4, 5, 2)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)

  def normalise(weights):
    logits_fn = lambda x: [
      jnp.einsum("bhwc,c->bhw", x, weights[0])[..., None],
      jnp.einsum("bhwc,c->b", x, weights[1])[:, None, None, None] / 20.0,
    ]
    return gradient_normalised_logits(logits_fn, inputs)

  normalised = jax.jit(normalise)(weights)
  x, w = np.asarray(inputs, np.float64), np.asarray(weights, np.float64)
  logits_0, logits_1 = (x @ w[0])[..., None], (x @ w[1]).mean(axis=(1, 2))[:, None, None, None]
  norms = (np.sqrt(20.0) * np.linalg.norm(w[0]), np.linalg.norm(w[1]) / np.sqrt(20.0))
  for got, logits, norm in zip(normalised, (logits_0, logits_1), norms):
    np.testing.assert_allclose(got, logits / (norm + np.abs(logits)), rtol=1e-5, atol=1e-7)
    assert np.abs(got).max() < 1.0

  loss = jax.jit(lambda weights: sum(jnp.mean(jax.nn.relu(1.0 - scale)) for scale in normalise(weights)))
  step = 1e-2
  finite_differences = np.zeros((2, 2))
  for index in np.ndindex(2, 2):
    shift = jnp.zeros((2, 2)).at[index].set(step)
    finite_differences[index] = (loss(weights + shift) - loss(weights - shift)) / (2 * step)
  np.testing.assert_allclose(jax.jit(jax.grad(loss))(weights), finite_differences, rtol=2e-2, atol=1e-4)


def test_gradient_normalised_scam_discriminator(scam):
  """On the PatchGAN, from the discriminator's parameters alone: the concatenated-input path equals
  discriminate(image, labels), and D̂ keeps D's sign with |D̂| < 1."""
  model, _, variables, _, labels, reconstruction, logits = scam
  inputs = discriminator_input(reconstruction, labels, NUM_LABELS)

  @jax.jit
  def normalised_and_raw(params):
    logits_fn = lambda x: model.apply({"params": params}, x, method="discriminate_input")
    return gradient_normalised_logits(logits_fn, inputs), logits_fn(inputs)

  normalised, raw = normalised_and_raw({"discriminator": variables["params"]["discriminator"]})
  for scale, (got, expected) in enumerate(zip(raw, logits)):
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"scale {scale}")
  for scale_normalised, scale_raw in zip(normalised, raw):
    assert np.all(np.abs(scale_normalised) < 1.0)
    np.testing.assert_array_equal(np.sign(scale_normalised), np.sign(scale_raw))


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
  got = jax.jit(block.apply)(variables, tokens, context, token_labels, context_labels)

  params = variables["params"]
  linear = lambda x, layer: x @ layer["kernel"] + layer["bias"]
  attention = params["attention"]
  query = linear(tokens, attention["query"])
  key, value = linear(context, attention["key"]), linear(context, attention["value"])
  logits = query @ key.transpose(0, 2, 1) / np.sqrt(8.0)
  logits = np.where(token_labels[:, :, None] == context_labels[:, None, :], logits, -1e4)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  attended = linear((weights / weights.sum(-1, keepdims=True)) @ value, attention["out"])

  def joint_norm(x, layer):
    centred = x - x.mean(axis=(1, 2), keepdims=True)
    return centred / np.sqrt(centred.var(axis=(1, 2), keepdims=True) + 1e-5) * layer["scale"] + layer["bias"]

  leaky = lambda x: np.where(x > 0, x, 0.2 * x)
  hidden = joint_norm(attended + tokens, params["attention_norm"])
  expected = joint_norm(leaky(linear(leaky(linear(hidden, params["fc1"])), params["fc2"])) + hidden, params["mlp_norm"])
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_grid_embedding_and_nearest_resize_follow_the_torch_code():
  # SinusoidalPositionalEmbedding(dim): inv_freq over dim/2, linspace(−1, 1) coordinates, [sin w, sin h, cos w, cos h].
  height, width, dim = 3, 5, 8
  inv_freq = 1.0 / 10000 ** (np.arange(0, dim // 2, 2) / (dim // 2))
  rows = np.broadcast_to(np.linspace(-1, 1, height)[:, None, None] * inv_freq, (height, width, 2))
  columns = np.broadcast_to(np.linspace(-1, 1, width)[None, :, None] * inv_freq, (height, width, 2))
  expected = np.concatenate([np.sin(columns), np.sin(rows), np.cos(columns), np.cos(rows)], axis=-1)
  got = jax.jit(sinusoidal_grid_embedding, static_argnums=(0, 1, 2))(height, width, dim)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  # F.interpolate(mode="nearest") reads source row ⌊i·5/3⌋ = 0, 1, 3 and column ⌊j·4/8⌋ = 0, 0, 1, 1, …
  grid = np.arange(20).reshape(1, 5, 4)
  resized = jax.jit(nearest_resize, static_argnums=1)(grid, (3, 8))
  np.testing.assert_array_equal(resized[0], grid[0][[0, 1, 3]][:, np.arange(8) // 2])
