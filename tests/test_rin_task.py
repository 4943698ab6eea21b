"""The RIN / CAD task: each model's unconditional branch, unguided sampling, sample.coherence, coherence bins,
CIFAR-10 via TFDS, the denoising errors."""

import functools
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cad as cad_config
from configs import rin as rin_config
from storyjax import base_config
from storyjax.diffusion import gaussian
from storyjax.errors import ConfigError
from storyjax.tasks import get_task

# XLA:CPU without LLVM's optimisations for this file's own jits: less than half the compile time, most of each test.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _task_and_examples(config):
  task = get_task(config)
  source = task.source("test")
  return task, [source[index] for index in range(2)]


def _random_variables(task, examples):
  variables = nn.unbox(fast_jit(task.init)(jax.random.PRNGKey(0), task.batch(examples)))  # one compile in all
  # Random parameters everywhere, so that conditions (zero-initialised paths included) reach the output.
  rng = np.random.default_rng(1)  # numpy draws and sums: jax ops, one per shape, would each compile

  def perturbed(leaf):
    return jnp.asarray(np.asarray(leaf) + (0.2 * rng.normal(size=leaf.shape)).astype(np.float32))

  return jax.tree.map(perturbed, variables)


@pytest.mark.parametrize("variant", [None, "textrin"])
def test_unconditional_branch_and_unguided_sampling(variant):
  config = cad_config.get_config("smoke")
  if variant == "textrin":
    config.model.coherence, config.diffusion.condition_dropout = False, 0.1
  task, examples = _task_and_examples(config)
  batch = task._prompt_batch(examples)
  uncond = task._uncond_batch(batch)
  if variant is None:  # CA-CFG, eq 3.4: the same prompt at coherence 0
    np.testing.assert_array_equal(uncond["text"], batch["text"])
    np.testing.assert_array_equal(uncond["text_mask"], batch["text_mask"])
    np.testing.assert_array_equal(batch["coherence"], 1.0)
    np.testing.assert_array_equal(uncond["coherence"], 0.0)
  else:  # plain CFG: the text masked out
    assert not np.asarray(uncond["text_mask"]).any() and np.asarray(batch["text_mask"]).any()
    return  # the sampling below is the same code for both
  variables = _random_variables(task, examples)
  # ω = 0 is the conditional model alone: the same as sampling it without any unconditional branch.
  # Both samplers jitted (ω traced, so ω = 0 and 3 share one compile).
  generate = fast_jit(task.generate, static_argnums=(3,))
  rng = jax.random.PRNGKey(3)
  guided = generate(variables, batch, rng, "static", 0.0)
  diffusion = config.diffusion

  @fast_jit
  def sample_alone(variables, batch, rng):
    rng_noise, rng_sampler = jax.random.split(rng)

    def model_fn(noisy, gamma, step_index, latents_prev):
      return task._apply(variables, batch, noisy, gamma, latents_prev)

    latents0 = jnp.zeros((2, task.model.num_latents, task.model.latent_dim))
    alone, _ = gaussian.sample(
      model_fn,
      jax.random.normal(rng_noise, batch["image"].shape),
      task.sample_schedule,
      diffusion.num_steps,
      diffusion.sampler,
      rng=rng_sampler,
      prediction=diffusion.prediction,
      initial_state=latents0,
    )
    return alone

  alone = sample_alone(variables, batch, rng)
  # Equal up to float32 rounding: the guided call runs a batch of 4 (cond and uncond), this one a batch of 2.
  np.testing.assert_allclose(guided, jnp.clip(alone, -1, 1), atol=1e-4)
  assert np.abs(generate(variables, batch, rng, "static", 3.0) - guided).max() > 1e-3


def test_denoising_errors_against_a_hand_computation():
  """x̂₀ MSE from own, rolled and coherence-0 conditions, recomputed from the v-prediction formula in numpy."""
  config = cad_config.get_config("smoke")
  assert config.diffusion.prediction == "v"
  task, examples = _task_and_examples(config)
  variables = _random_variables(task, examples)
  rng, gammas = jax.random.PRNGKey(5), (0.5, 0.01)
  errors = task.denoising_errors(variables, examples, gammas, rng)
  denoised = task.denoised_images(variables, examples, gammas, rng)
  assert set(errors) == {"gamma", "own", "other", "coherence_0", "image_variance"}
  clean = np.stack([example["image"] for example in examples])
  batch = task._prompt_batch(examples)
  swapped = {key: value[::-1] for key, value in batch.items()}  # two examples: rolling by one swaps them
  apply = fast_jit(task._apply)
  for index, gamma in enumerate(gammas):
    noise = np.asarray(jax.random.normal(jax.random.fold_in(rng, index), clean.shape))
    noisy = np.sqrt(gamma) * clean + np.sqrt(1 - gamma) * noise
    for name, conditions in (("own", batch), ("other", swapped), ("coherence_0", {**batch, "coherence": jnp.zeros(2)})):
      v_hat, _ = apply(variables, conditions, jnp.asarray(noisy), jnp.full((2,), gamma), None)
      x0_hat = np.sqrt(gamma) * noisy - np.sqrt(1 - gamma) * np.asarray(v_hat)
      np.testing.assert_allclose(errors[name][index], np.mean((x0_hat - clean) ** 2), rtol=1e-4)
      if name == "own":
        np.testing.assert_allclose(denoised[1 + index], np.clip(x0_hat, -1, 1), atol=1e-5)
  np.testing.assert_array_equal(denoised[0], clean)
  assert abs(errors["own"][1] - errors["other"][1]) > 1e-3  # random parameters read the caption
  np.testing.assert_allclose(errors["image_variance"], clean.var(axis=0).mean(), rtol=1e-5)


class ThresholdJudge:
  """A scene judge that finds exactly a prompt's claims in images whose first pixel is positive, else no object."""

  def __init__(self, claims: dict):
    self.claims = claims

  def features(self, images):
    return np.asarray(images).reshape(len(images), -1)[:, :5]

  def attributes(self, images):
    lit = np.asarray(images)[:, 0, 0, 0] > 0
    return {key: np.where(lit[:, None], value, 0) for key, value in self.claims.items()}


def test_evaluation_scores_each_setting_per_prompt(tmp_path, monkeypatch):
  """The configured guidance, unguided (in the quick evaluation too) and each schedule, scored per prompt and written
  to eval_prompts.npz; the generations stand in for a model (lit where guided statically, dark elsewhere)."""
  config = cad_config.get_config("smoke")
  config.eval.schedules = ("linear",)
  task = get_task(config)
  examples = task.prompted_test_examples(config.eval.num_samples)
  present = np.stack([example["present"] for example in examples])
  claims = {key: np.stack([example[key] for example in examples]) for key in ("present", "colour", "shape", "size")}
  monkeypatch.setattr(task, "_judge", lambda: ThresholdJudge(claims))

  def generate_examples(variables, examples, rng, guidance_spec, guidance_weight):
    lit = guidance_spec == "static" and guidance_weight > 0
    return np.full((len(examples), 16, 16, 3), 0.5 if lit else -0.5, np.float32)

  monkeypatch.setattr(task, "generate_examples", generate_examples)
  quick = task.evaluate(None, tmp_path, quick=True)
  kinds = {f"claims_{kind}" for kind in ("present", "empty", "colour", "shape", "size")}
  assert set(quick) == {"fid", "caption_accuracy", "fid_unguided", "caption_accuracy_unguided", *kinds}
  assert all(quick[kind] == 1.0 for kind in kinds)  # the lit images: every claim found
  assert not (tmp_path / "eval_prompts.npz").exists()
  results = task.evaluate(None, tmp_path)
  # A dark image is right only about the prompt's empty slots: (4 − n) of its 4·n + (4 − n) claims.
  num_objects = present.sum(1)
  dark = (4 - num_objects) / (3 * num_objects + 4)
  assert results["caption_accuracy"] == 1.0 and results["caption_accuracy_unguided"] == pytest.approx(dark.mean())
  with np.load(tmp_path / "eval_prompts.npz") as prompts:
    assert set(prompts) == {"prompt", "caption_accuracy", "caption_accuracy_unguided", "caption_accuracy_linear"}
    np.testing.assert_array_equal(prompts["prompt"], [example["caption"] for example in examples])
    np.testing.assert_array_equal(prompts["caption_accuracy"], np.ones(len(examples)))
    np.testing.assert_allclose(prompts["caption_accuracy_linear"], dark)
  assert results["fid_linear"] == pytest.approx(results["fid_unguided"]) and results["num_samples"] == len(examples)


def test_unconfident_prompt_and_class_label_branches():
  config = cad_config.get_config("smoke")
  config.diffusion.uncond = "unconfident_prompt"
  task, examples = _task_and_examples(config)
  batch = task._prompt_batch(examples)
  uncond = task._uncond_batch(batch)
  assert not np.array_equal(uncond["text"], batch["text"])
  np.testing.assert_array_equal(uncond["coherence"], 0.0)
  rin_task, rin_examples = _task_and_examples(rin_config.get_config("smoke"))
  class_batch = rin_task._prompt_batch(rin_examples)
  assert (np.asarray(class_batch["label"]) >= 0).all()
  np.testing.assert_array_equal(rin_task._uncond_batch(class_batch)["label"], -1)


def test_sample_coherence_is_the_prompts_coherence(monkeypatch):
  config = cad_config.get_config("smoke")
  config.sample.coherence = 0.25
  task = get_task(config)
  seen = []

  def generate(variables, batch, rng, guidance_spec, guidance_weight):
    seen.append(np.asarray(batch["coherence"]))
    return np.zeros(batch["image"].shape, np.float32)

  monkeypatch.setattr(task, "_generate", generate)
  task.sample(None, ["a red circle at the top left"], jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.concatenate(seen), 0.25)
  config.sample.coherence = 1.5
  with pytest.raises(ConfigError, match=r"^sample.coherence=1.5: it is a probability, decay or coherence in"):
    base_config.check_values(config)
  config.sample.coherence = 0.25
  config.model.coherence, config.diffusion.condition_dropout = False, 0.1  # TextRIN
  with pytest.raises(ConfigError, match=r"^sample.coherence=0.25: this model has no coherence token"):
    get_task(config)


def test_coherence_bins_are_stored_with_the_run(tmp_path):
  config = cad_config.get_config("smoke")
  task = get_task(config)
  assert config.data.coherence_bins == 4
  task.save_assets(tmp_path)
  edges = json.loads((tmp_path / "coherence_bins.json").read_text())["edges"]
  assert len(edges) == 5 and edges[0] == 0.0 and edges[-1] == 1.0
  levels = {float(task.preprocess(task.source("train")[index])["coherence"]) for index in range(32)}
  assert levels <= {float(np.float32(level)) for level in (0.0, 1 / 3, 2 / 3, 1.0)}
  reloaded = get_task(config)
  reloaded.load_assets(tmp_path)
  np.testing.assert_array_equal(reloaded.bin_edges(), task.bin_edges())


def test_class_conditional_rin_on_cifar10_through_tfds(tmp_path):
  config = rin_config.get_config("smoke")
  config.data.update({"source": "tfds", "tfds_name": "cifar10", "data_dir": str(tmp_path), "num_classes": 10})
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    task = get_task(config)
    source = task.source("train")
    examples = [task.preprocess(source[index]) for index in range(4)]
  assert examples[0]["image"].shape == (16, 16, 3) and all(0 <= example["label"] < 10 for example in examples)
  batch = jax.tree.map(lambda *leaves: np.stack(leaves), *examples)
  variables = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
  assert variables["params"]["class_embedding"]["kernel"].unbox().shape == (10, config.model.latent_dim)
  loss, _, _ = jax.eval_shape(task.loss, nn.unbox(variables), batch, jax.random.PRNGKey(1))
  assert loss.shape == () and loss.dtype == np.float32
