"""Image diffusion with RIN: unconditional, class-conditional, TextRIN and Coherence-Aware Diffusion (CAD).

configs/rin.py (class-conditional RIN) and configs/cad.py (TextRIN with or without the coherence token) both
bind this task. Training (facts cad-rin-cfg §1.6–1.7, §1.4): t ~ U(0, 1), γ = train schedule(t), ε- or
v-prediction, plain MSE, latent self-conditioning with keep rate `diffusion.self_condition_rate`. Sampling:
DDPM or DDIM on the inference schedule with x̂₀ clipped, guided per step by `diffusion.guidance_schedule`
(storyjax/diffusion/guidance.py) in CAD's convention (1 + ω)·cond − ω·uncond, where the unconditional branch is
  class RIN:            label −1 (trained with label dropout `diffusion.condition_dropout`);
  TextRIN (no CAD):     the text masked out (trained with the same dropout);
  CAD (eq 3.4):         the same prompt with coherence 0 ("same_prompt", the paper's form), or CAD's code
                        default, a random "unconfident" prompt with coherence 0 (`diffusion.uncond`).
Evaluation on the embedded scenes uses the attribute judge trained by configs/scene_attributes.py
(storyjax/metrics/scenes.py): `fid` in its feature space and `caption_accuracy` (or `class_accuracy`).
"""

import functools
import json
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax import plotting
from storyjax.base_config import check_choices, check_source_keys, compute_dtype
from storyjax.data import coherence as coherence_lib
from storyjax.data.images import scenes
from storyjax.data.images.arrays import checked_image
from storyjax.data.images.captioned import ImageFolderSource, WebDatasetSource
from storyjax.data.images.tfds_images import TfdsImageSource
from storyjax.data.pipeline import apply_in_batches
from storyjax.diffusion import gaussian, guidance
from storyjax.errors import CheckpointError, ConfigError
from storyjax.layers.attention import ATTENTION_IMPLEMENTATIONS
from storyjax.layers.transformer import REMAT_POLICIES, BlockOptions
from storyjax.metrics import scenes as scene_metrics
from storyjax.metrics.distribution import frechet_distance
from storyjax.models.inception import check_weights_file, load_fid_inception
from storyjax.models.rin import CONDITIONINGS, RIN
from storyjax.models.sd_vae import load_sd_vae
from storyjax.text.caption_inputs import CaptionInputs, empty_prompt_warnings
from storyjax.text.t5 import T5TextFeatures

SOURCES = ("scenes", "tfds", "webdataset", "folder")
TEXT_ENCODERS = ("scratch", "t5")
UNCOND_BRANCHES = ("same_prompt", "unconfident_prompt")
COHERENCE_BINS_FILE = "coherence_bins.json"


class Task:
  """Binds RIN / TextRIN to the generic trainer (the contract: storyjax/tasks/base.py)."""

  non_state_keys = {
    "data": ("test_size", "path", "data_dir"),
    "model": ("attention", "remat", "t5_path", "vae_path"),
    "eval": ("inception_path",),
  }

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model, data, diffusion = config.model, config.data, config.diffusion
    self.conditioning = model.conditioning
    check_choices(
      ("model.conditioning", model.conditioning, CONDITIONINGS),
      ("model.attention", model.attention, ATTENTION_IMPLEMENTATIONS),
      ("model.remat", model.remat, tuple(REMAT_POLICIES)),
      ("model.text_encoder", model.text_encoder, TEXT_ENCODERS),
      ("data.source", data.source, SOURCES),
      ("diffusion.sampler", diffusion.sampler, gaussian.SAMPLERS),
      ("diffusion.prediction", diffusion.prediction, gaussian.PREDICTION_TYPES),
      ("diffusion.uncond", diffusion.uncond, UNCOND_BRANCHES),
    )
    if model.coherence and self.conditioning != "text":
      raise ConfigError("model.coherence (CAD's coherence token) needs model.conditioning='text'.")
    if self.conditioning == "text" and data.source == "tfds":
      raise ConfigError("data.source='tfds' has class labels, not captions; use model.conditioning='class'.")
    if self.conditioning == "class" and data.source in ("webdataset", "folder"):
      raise ConfigError(f"data.source={data.source!r} has captions, not class labels; use conditioning='text'.")
    if model.coherence and diffusion.condition_dropout > 0:
      raise ConfigError(
        f"diffusion.condition_dropout={diffusion.condition_dropout}: CAD never drops its condition (its "
        f"unconditional branch is coherence 0); set it to 0, or model.coherence=False for the CFG baseline."
      )
    try:
      self.train_schedule = gaussian.noise_schedule(diffusion.train_schedule)
      self.sample_schedule = gaussian.noise_schedule(diffusion.sample_schedule)
      for spec in (diffusion.guidance_schedule, *config.eval.schedules):
        guidance.validate_schedule(spec)
    except ValueError as error:
      raise ConfigError(f"diffusion config: {error}") from error
    # The coherence `sample` generates at (configs/cad.py's sample.coherence; 1 = a trusted prompt).
    self.sample_coherence = config.sample.coherence if "sample" in config else 1.0
    if self.sample_coherence != 1.0 and not model.coherence:
      raise ConfigError(
        f"sample.coherence={self.sample_coherence}: this model has no coherence token (model.coherence=False); "
        "leave it at 1."
      )
    if data.coherence_bins == 1:  # (check_values has refused negative values)
      raise ConfigError(f"data.coherence_bins={data.coherence_bins}: 0 (raw scores) or ≥ 2 levels.")
    tfds_name, data_dir, path, t5_path = data.tfds_name, data.data_dir, data.path, model.t5_path
    check_source_keys(
      data.source,
      {
        "data.path": (path, data.source in ("webdataset", "folder")),
        "data.data_dir": (data_dir, data.source == "tfds"),
      },
    )
    if data.source == "tfds" and not tfds_name:  # (it has a default, so one set for no source is not a mistake)
      raise ConfigError("data.source='tfds' needs data.tfds_name; set --config.data.tfds_name.")
    if t5_path and model.text_encoder != "t5":
      raise ConfigError(f"model.t5_path is set but model.text_encoder={model.text_encoder!r}; it is used with 't5'.")
    if model.vae_path and data.channels != 4:
      raise ConfigError(
        f"model.vae_path is set but data.channels={data.channels}: the VAE decodes SD-VAE latents (data.channels=4)."
      )
    if config.eval.inception_path:
      check_weights_file(config.eval.inception_path)
      if data.channels == 4 and not model.vae_path:
        raise ConfigError("eval.inception_path on SD-VAE latents (data.channels=4) needs model.vae_path to decode.")
    self.dtype = compute_dtype(model.dtype)
    self.image_size = data.image_size
    self.num_classes = len(scenes.COLOURS) * len(scenes.SHAPES) if data.source == "scenes" else data.num_classes
    self.caption_inputs = CaptionInputs(
      "scratch", model.max_text_length, scenes.SCENE_VOCABULARY, limit_name="model.max_text_length"
    )
    self._t5 = None
    if model.text_encoder == "t5" and not t5_path and data.source != "webdataset":
      raise ConfigError("model.text_encoder='t5' needs model.t5_path (a local FLAN-T5 checkpoint directory).")
    self._bin_edges = None  # computed on first use, or the run's own from load_assets
    self.model = RIN(
      image_size=(self.image_size, self.image_size),
      channels=data.channels,
      patch_size=model.patch_size,
      interface_dim=model.interface_dim,
      num_latents=model.num_latents,
      latent_dim=model.latent_dim,
      num_blocks=model.num_blocks,
      block_depth=model.block_depth,
      latent_heads=model.latent_heads,
      read_write_heads=model.read_write_heads,
      latent_mlp_ratio=model.latent_mlp_ratio,
      interface_mlp_ratio=model.interface_mlp_ratio,
      dropout_rate=model.dropout_rate,
      stochastic_depth=model.stochastic_depth,
      conditioning=self.conditioning,
      num_classes=self.num_classes if self.conditioning == "class" else 0,
      coherence=model.coherence,
      text_encoder=model.text_encoder,
      vocab_size=self.caption_inputs.vocab_size,
      max_text_length=model.max_text_length,
      text_layers=model.text_layers,
      num_registers=model.num_registers,
      context_layers=model.context_layers,
      context_heads=model.context_heads,
      dtype=self.dtype,
      options=BlockOptions(attention=model.attention, remat=model.remat),
    )

  # ---- data -------------------------------------------------------------------------------------
  def source(self, split: str):
    data = self.config.data
    size = {"train": data.train_size, "test": data.test_size}[split]
    try:
      if data.source == "scenes":
        return scenes.SceneSource(
          split,
          size,
          self.image_size,
          seed=data.seed,
          corrupt_fraction=data.corrupt_fraction,
          min_coherence=data.min_coherence if split == "train" else 0.0,
          max_objects=1 if self.conditioning == "class" else 3,
        )
      if data.source == "tfds":
        return TfdsImageSource(data.tfds_name, split, data.data_dir, self.image_size)
      directory = pathlib.Path(data.path) / split
      if data.source == "folder":
        return ImageFolderSource(directory, self.image_size)
      return WebDatasetSource(
        directory,
        self.image_size * (8 if data.channels == 4 else 1),
        use_latents=data.channels == 4,
        use_t5=self.config.model.text_encoder == "t5",
        max_text_tokens=self.config.model.max_text_length,
      )
    except ValueError as error:
      raise ConfigError(f"data config: {error}") from error

  def _text(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """captions → word ids (N, L) for the scratch encoder or frozen FLAN-T5 features (N, L, D), and masks."""
    if self.config.model.text_encoder == "scratch":
      return self.caption_inputs.texts(captions)
    if self._t5 is None:
      self._t5 = T5TextFeatures(self.config.model.t5_path, max_length=self.config.model.max_text_length)
    return self._t5.encode(captions)

  def bin_edges(self) -> np.ndarray | None:
    """CAD's quantile bin edges (data.coherence_bins + 1,) of the first data.coherence_bin_samples train scores
    (facts §2.4), None for raw scores; deterministic, so every process and loader computes the same."""
    bins = self.config.data.coherence_bins
    if self._bin_edges is None and bins >= 2 and self.conditioning == "text":
      train_source = self.source("train")
      count = min(len(train_source), self.config.data.coherence_bin_samples)
      if isinstance(train_source, scenes.SceneSource):  # the scenes' scores without rendering the images
        scores = train_source.coherences()[:count]
      else:
        scores = np.array([train_source[index]["coherence"] for index in range(count)], np.float64)
      self._bin_edges = coherence_lib.coherence_bin_edges(scores, bins)
    return self._bin_edges

  def _coherence_level(self, score: float) -> np.float32:
    edges = self.bin_edges()
    if edges is None:
      return np.float32(score)
    return np.float32(coherence_lib.bin_coherence(np.array([score]), edges)[0])

  def _image(self, example: dict) -> np.ndarray:
    """The example's image (S, S, 3), or its SD-VAE latents (S, S, 4) when data.channels=4, as float32."""
    channels = self.config.data.channels
    return checked_image(example, self.image_size, channels, "latents" if channels == 4 else "image")

  def preprocess(self, example: dict) -> dict:
    """One source example → image (S, S, C) float32, and label () int32 or text (L[, D]) + text_mask + coherence."""
    features = {"image": self._image(example)}
    if self.conditioning == "class":
      features["label"] = np.int32(self._label(example))
    elif self.conditioning == "text":
      if "text_features" in example:
        text, text_mask = example["text_features"], example["text_mask"]
      else:
        text, text_mask = (array[0] for array in self._text([example["caption"]]))
      features.update(
        text=np.asarray(text),
        text_mask=np.asarray(text_mask, bool),
        coherence=self._coherence_level(float(example["coherence"])),
      )
    return features

  def _label(self, example: dict) -> int:
    """A scene's class is its single object's colour × shape; TFDS examples carry theirs."""
    if "label" in example:
      return int(example["label"])
    slot = int(np.argmax(example["present"]))
    return int(example["colour"][slot]) * len(scenes.SHAPES) + int(example["shape"][slot])

  def batch(self, examples: list[dict]) -> dict:
    return jax.tree.map(lambda *leaves: jnp.asarray(np.stack(leaves)), *map(self.preprocess, examples))

  # ---- model ------------------------------------------------------------------------------------
  def _apply(self, variables, batch, noisy, gamma, latents_prev, train=False, rng=None):
    return self.model.apply(
      variables,
      noisy,
      gamma,
      latents_prev,
      batch.get("label"),
      batch.get("text"),
      batch.get("text_mask"),
      batch.get("coherence"),
      deterministic=not train,
      rngs={"dropout": rng} if train else None,
    )

  def init(self, rng, batch):
    gamma = jnp.ones(batch["image"].shape[:1], jnp.float32)
    return self.model.init({"params": rng}, batch["image"], gamma, None, *self._conditions(batch))

  @staticmethod
  def _conditions(batch) -> tuple:
    return batch.get("label"), batch.get("text"), batch.get("text_mask"), batch.get("coherence")

  def _drop_conditions(self, batch, drop):
    """The unconditional input of CFG-trained models for the samples marked in drop (B,): label −1 / no text."""
    if self.conditioning == "class":
      return {**batch, "label": jnp.where(drop, -1, batch["label"])}
    if self.conditioning == "text":
      return {**batch, "text_mask": batch["text_mask"] & ~drop[:, None]}
    return batch

  def loss(self, variables, batch, rng):
    """Unweighted MSE of the ε (or v) prediction, on the self-conditioned second pass (facts §1.4, §1.7)."""
    diffusion = self.config.diffusion
    rng_time, rng_noise, rng_drop, rng_keep, rng_first, rng_second = jax.random.split(rng, 6)
    clean = batch["image"]
    batch_size = clean.shape[0]
    gamma = self.train_schedule(gaussian.sample_time(rng_time, batch_size))
    noise = jax.random.normal(rng_noise, clean.shape, jnp.float32)
    noisy = gaussian.add_noise(clean, noise, gamma)
    if diffusion.condition_dropout > 0:
      batch = self._drop_conditions(batch, jax.random.bernoulli(rng_drop, diffusion.condition_dropout, (batch_size,)))
    latents_prev = None
    if diffusion.self_condition_rate > 0:
      _, latents_prev = self._apply(variables, batch, noisy, gamma, None, True, rng_first)
      keep = jax.random.bernoulli(rng_keep, diffusion.self_condition_rate, (batch_size, 1, 1))
      latents_prev = jax.lax.stop_gradient(latents_prev) * keep
    prediction, _ = self._apply(variables, batch, noisy, gamma, latents_prev, True, rng_second)
    loss, _ = gaussian.diffusion_mse(prediction, gaussian.training_target(clean, noise, gamma, diffusion.prediction))
    return loss, {}, {}

  # ---- sampling ---------------------------------------------------------------------------------
  def _uncond_batch(self, batch):
    """The unconditional branch's inputs (see the module docstring)."""
    batch_size = batch["image"].shape[0]
    if not self.config.model.coherence:
      return self._drop_conditions(batch, jnp.ones((batch_size,), bool))
    uncond = {**batch, "coherence": jnp.zeros_like(batch["coherence"])}
    if self.config.diffusion.uncond == "unconfident_prompt":
      uncond.update(batch["unconfident"])
    return uncond

  @functools.cached_property
  def _generate(self):
    return jax.jit(self.generate, static_argnums=(3,))

  def generate(self, variables, batch, rng, guidance_spec: str, guidance_weight):
    """Guided DDPM/DDIM samples (B, S, S, C) in [−1, 1] for a batch of conditions (its `image` gives the shape).

    guidance_weight is ω in (1 + ω)·cond − ω·uncond; its per-step weights follow `guidance_spec`. The cond and
    uncond branches keep separate self-conditioning latents, as CAD's sampler does (facts §1.4).
    """
    diffusion = self.config.diffusion
    batch_size = batch["image"].shape[0]
    rng_noise, rng_sampler = jax.random.split(rng)
    weights = jnp.asarray(guidance.schedule_weights(guidance_spec, diffusion.num_steps, 1.0, diffusion.guidance_start))
    weights = weights * guidance_weight
    both = jax.tree.map(lambda c, u: jnp.concatenate([c, u]), batch, self._uncond_batch(batch))

    def model_fn(noisy, gamma, step_index, latents_prev):
      prediction, latents = self._apply(
        variables, both, jnp.concatenate([noisy, noisy]), jnp.concatenate([gamma, gamma]), latents_prev
      )
      cond, uncond = prediction[:batch_size], prediction[batch_size:]
      return guidance.classifier_free_guidance(cond, uncond, weights[step_index], "cad"), latents

    latents0 = jnp.zeros((2 * batch_size, self.model.num_latents, self.model.latent_dim), self.dtype)
    samples, _ = gaussian.sample(
      model_fn,
      jax.random.normal(rng_noise, batch["image"].shape, jnp.float32),
      self.sample_schedule,
      diffusion.num_steps,
      diffusion.sampler,
      rng=rng_sampler,
      prediction=diffusion.prediction,
      initial_state=latents0,
    )
    return jnp.clip(samples, -1.0, 1.0)

  def _prompt_batch(self, examples: list[dict], coherence: float = 1.0) -> dict:
    """Conditions of N examples for generation (coherence 1: the prompt is trusted), plus CAD's unconfident ones."""
    shape = (len(examples), self.image_size, self.image_size, self.config.data.channels)
    batch = {"image": jnp.zeros(shape, jnp.float32)}
    if self.conditioning == "class":
      batch["label"] = jnp.asarray([self._label(example) for example in examples], jnp.int32)
    elif self.conditioning == "text":
      text, text_mask = self._text([example["caption"] for example in examples])
      batch.update(
        text=jnp.asarray(text),
        text_mask=jnp.asarray(text_mask),
        coherence=jnp.full((len(examples),), coherence, jnp.float32),
      )
      if self.config.model.coherence and self.config.diffusion.uncond == "unconfident_prompt":
        rng = np.random.default_rng(len(examples))
        words = [" ".join(rng.choice(scenes.SCENE_VOCABULARY, size=rng.integers(3, 7))) for _ in examples]
        unconfident_text, unconfident_mask = self._text(words)
        batch["unconfident"] = {"text": jnp.asarray(unconfident_text), "text_mask": jnp.asarray(unconfident_mask)}
    return batch

  def generate_examples(
    self, variables, examples: list[dict], rng, guidance_spec: str, guidance_weight: float, coherence: float = 1.0
  ):
    """Samples (N, S, S, C) for N examples' conditions at `coherence` (CAD), eval.batch_size at a time (the last
    batch padded)."""
    batch_size = self.config.eval.batch_size
    generated = []
    for start in range(0, len(examples), batch_size):
      chunk = examples[start : start + batch_size]
      padded = chunk + chunk[-1:] * (batch_size - len(chunk))
      samples = self._generate(
        variables,
        self._prompt_batch(padded, coherence),
        jax.random.fold_in(rng, start),
        guidance_spec,
        guidance_weight,
      )
      generated.append(np.asarray(samples)[: len(chunk)])
    return np.concatenate(generated)

  # ---- evaluation -------------------------------------------------------------------------------
  def _judge(self):
    """The scene judge (embedded scenes only), or None with a warning saying why its metrics are skipped."""
    if self.config.data.source != "scenes":
      logging.warning(
        "fid and caption accuracy need the embedded scenes' judge; data.source=%r has none.", self.config.data.source
      )
      return None
    try:
      return scene_metrics.SceneJudge(pathlib.Path(self.config.eval.judge_workdir).absolute())
    except CheckpointError as error:
      logging.warning("%s: fid and caption/class accuracy are skipped.", error)
      return None

  def _has_rgb(self) -> bool:
    """Whether samples can be shown as RGB: images, or SD-VAE latents with model.vae_path to decode them."""
    return self.config.data.channels != 4 or bool(self.config.model.vae_path)

  def _rgb(self, images: np.ndarray) -> np.ndarray:
    """Images (N, S, S, 3) as they are, or SD-VAE latents (N, S, S, 4) decoded by the VAE at model.vae_path."""
    if self.config.data.channels != 4:
      return images
    return decode_latents(load_sd_vae(self.config.model.vae_path), images)

  def prompted_test_examples(self, num_samples: int) -> list[dict]:
    """The first num_samples test examples (at most all), each prompted with its true caption where it has one."""
    test_source = self.source("test")
    examples = [test_source[index] for index in range(min(num_samples, len(test_source)))]
    for example in examples:
      example["caption"] = example.get("true_caption", example.get("caption"))
    return examples

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Generates for the first test examples' prompts (the scenes' true captions) or classes and scores the images.

    With the scene judge: fid, the Fréchet distance between the judge's features of the generations and of the
    real test images, and caption_accuracy (text) / class_accuracy (class), the prompt's attributes the judge
    finds (text: also claims_present / _empty / _colour / _shape / _size for the configured guidance, the fraction
    of each kind of claim it gets right, storyjax/metrics/scenes.py). With eval.inception_path, on any data:
    fid_inception, the same distance in FID Inception-v3's pool features (images resized to 299; latents decoded
    first). For the configured guidance and, unless it is ω = 0 already, unguided (suffix _unguided; the quick
    evaluation too, as guidance trades fid for accuracy), then (full evaluation) for each schedule in
    eval.schedules. The full evaluation also writes each prompt's accuracy per setting to workdir/eval_prompts.npz
    (with its "prompt"), which scripts/compare_evaluations.py pairs across runs.
    """
    eval_config, diffusion = self.config.eval, self.config.diffusion
    judge = self._judge()
    inception = load_fid_inception(eval_config.inception_path) if eval_config.inception_path else None
    if judge is None and inception is None:
      return {}
    examples = self.prompted_test_examples(eval_config.quick_num_samples if quick else eval_config.num_samples)
    num_samples = len(examples)
    real_images = np.stack([self._image(example) for example in examples])
    real_features = judge.features(real_images) if judge else None
    real_inception = inception.features(self._rgb(real_images)) if inception else None
    rng = jax.random.PRNGKey(eval_config.seed)
    claims = None  # the text prompts' claims: the prompts are the true captions, so the real images' attributes
    if judge is not None and self.conditioning != "class":
      claims = {key: np.stack([example[key] for example in examples]) for key in scenes.PER_SLOT_KEYS}
    results, prompt_scores = {}, {}

    def score(guidance_spec: str, guidance_weight: float, suffix: str = "") -> np.ndarray:
      images = self.generate_examples(variables, examples, rng, guidance_spec, guidance_weight)
      if inception:
        results[f"fid_inception{suffix}"] = frechet_distance(real_inception, inception.features(self._rgb(images)))
      if judge is None:
        return images
      results[f"fid{suffix}"] = scene_metrics.fid(real_features, judge.features(images))
      predicted = judge.attributes(images)
      if self.conditioning == "class":
        key, accuracies = f"class_accuracy{suffix}", _class_hits(predicted, examples)
      else:
        key, accuracies = f"caption_accuracy{suffix}", scene_metrics.prompt_caption_accuracies(predicted, claims)
        if not suffix:  # which claims the configured guidance gets right
          kinds = scene_metrics.claim_accuracies(predicted, claims)
          results.update({f"claims_{kind}": value for kind, value in kinds.items()})
      results[key], prompt_scores[key] = float(np.mean(accuracies)), accuracies
      return images

    images = score(diffusion.guidance_schedule, diffusion.guidance_weight)
    if diffusion.guidance_weight != 0:
      score("static", 0.0, "_unguided")
    if quick:
      return results
    for spec in eval_config.schedules:
      score(spec, diffusion.guidance_weight, f"_{spec.split(':')[0]}")
    results.update(
      num_samples=num_samples,
      guidance_schedule=diffusion.guidance_schedule,
      guidance_weight=float(diffusion.guidance_weight),
    )
    if jax.process_index() == 0:
      prompts = [example.get("caption") or example.get("label", "") for example in examples]
      if prompt_scores:
        np.savez(workdir / "eval_prompts.npz", prompt=np.asarray([str(prompt) for prompt in prompts]), **prompt_scores)
      if self._has_rgb():
        plots_dir = workdir / "plots"
        plots_dir.mkdir(parents=True, exist_ok=True)
        plotting.save_image_grid(plots_dir / "samples.png", self._rgb(images[: eval_config.num_plots]))
        (plots_dir / "samples.txt").write_text("".join(f"{prompt}\n" for prompt in prompts[: eval_config.num_plots]))
    return results

  @functools.cached_property
  def _denoise(self):
    """Jitted (variables, conditions, noisy, γ) → the one-pass x̂₀ (no self-conditioning), unclipped."""

    def denoise(variables, conditions, noisy, gamma):
      prediction, _ = self._apply(variables, conditions, noisy, gamma, None)
      x0_hat, _ = gaussian.predicted_x0_and_eps(
        prediction, noisy, gamma, self.config.diffusion.prediction, clip_x0=False
      )
      return x0_hat

    return jax.jit(denoise)

  def _noised(self, examples: list[dict], gammas, rng) -> tuple[jnp.ndarray, list[tuple]]:
    """(clean (N, H, W, C), [(γ (N,), noisy)] per γ of `gammas`, the noise drawn from rng folded with γ's index)."""
    clean = jnp.asarray(np.stack([self._image(example) for example in examples]))
    noised = []
    for index, value in enumerate(gammas):
      gamma = jnp.full(clean.shape[:1], value, jnp.float32)
      noise = jax.random.normal(jax.random.fold_in(rng, index), clean.shape, jnp.float32)
      noised.append((gamma, gaussian.add_noise(clean, noise, gamma)))
    return clean, noised

  def denoising_errors(self, variables, examples: list[dict], gammas, rng) -> dict:
    """Whether the model reads its conditions, without sampling: the x̂₀ MSE of N examples' images noised to each
    signal variance γ in `gammas`, predicted in one pass (no self-conditioning) from the examples' own conditions
    (coherence 1), from the next example's (conditions rolled by one) and, for CAD, from their own at coherence 0.

    → {"gamma", "own", "other"[, "coherence_0"]: lists of floats, one per γ; "image_variance": the MSE of
    predicting the mean image}. At high noise (γ → 0) a model that ignores its conditions scores own ≈ other ≈
    image_variance, and ε-prediction's x̂₀ error is its ε̂ error times (1 − γ)/γ.
    """
    conditions = self._prompt_batch(examples)
    branches = {"own": conditions, "other": jax.tree.map(lambda leaf: jnp.roll(leaf, 1, axis=0), conditions)}
    if self.config.model.coherence:
      branches["coherence_0"] = {**conditions, "coherence": jnp.zeros_like(conditions["coherence"])}
    clean, noised = self._noised(examples, gammas, rng)
    errors = {"gamma": [float(value) for value in gammas], **{name: [] for name in branches}}
    errors["image_variance"] = float(jnp.var(clean, axis=0).mean())
    for gamma, noisy in noised:
      for name, branch in branches.items():
        errors[name].append(float(jnp.mean((self._denoise(variables, branch, noisy, gamma) - clean) ** 2)))
    return errors

  def denoised_images(self, variables, examples: list[dict], gammas, rng) -> np.ndarray:
    """(1 + len(gammas), N, H, W, C): the examples' images, then per γ the x̂₀ of denoising_errors' "own" branch
    (the same noise), clipped to [−1, 1]."""
    clean, noised = self._noised(examples, gammas, rng)
    conditions = self._prompt_batch(examples)
    denoised = [
      np.clip(np.asarray(self._denoise(variables, conditions, noisy, gamma)), -1, 1) for gamma, noisy in noised
    ]
    return np.stack([np.asarray(clean), *denoised])

  # ---- generation -------------------------------------------------------------------------------
  def sample(self, variables, prompts, rng) -> dict:
    """One image per prompt: a caption (text), or a class name such as "red circle" (class) → image (N, S, S, C)."""
    if self.conditioning == "class":
      names = [f"{colour} {shape}" for colour in scenes.COLOURS for shape in scenes.SHAPES]
      unknown = [prompt for prompt in prompts if prompt not in names]
      if unknown:
        raise ConfigError(f"unknown class prompt(s) {unknown}; the classes are {names}")
      examples = [{"label": names.index(prompt)} for prompt in prompts]
    else:
      examples = [{"caption": prompt} for prompt in prompts]
    diffusion, coherence = self.config.diffusion, self.sample_coherence
    images = self.generate_examples(
      variables, examples, rng, diffusion.guidance_schedule, diffusion.guidance_weight, coherence
    )
    return {"image": images, "prompt": np.array(prompts)}

  def prompt_warnings(self, prompts) -> list[str]:
    """Empty prompts; for scratch captions also tokens cut at model.max_text_length and words outside the
    vocabulary (base.GenerativeTask). Class names (an unknown one is an error in `sample`) and T5 captions: empty
    ones only; unconditional models (model.conditioning='none') read no prompt, so none."""
    if self.conditioning == "text" and self.config.model.text_encoder == "scratch":
      return self.caption_inputs.prompt_warnings(prompts)
    return empty_prompt_warnings(prompts) if self.conditioning != "none" else []

  def save_samples(self, samples: dict, out_dir: pathlib.Path) -> None:
    """One PNG per sample and a grid of all. SD-VAE latents (data.channels=4) are decoded by the VAE at
    model.vae_path first; without one they stay in samples.npz only."""
    if not self._has_rgb():
      logging.info("samples are SD-VAE latents: set model.vae_path to decode them into PNGs")
      return
    images = self._rgb(samples["image"])
    for index, image in enumerate(images):
      plotting.save_image_grid(out_dir / f"sample_{index:03d}.png", image[None])
    plotting.save_image_grid(out_dir / "grid.png", images)

  def save_assets(self, workdir: pathlib.Path) -> None:
    """The caption tokenizer and the coherence bin edges (CAD recomputes them per run; we store them)."""
    self.caption_inputs.save(workdir)
    edges = self.bin_edges()
    if edges is not None:
      (workdir / COHERENCE_BINS_FILE).write_text(json.dumps({"edges": edges.tolist()}))

  def load_assets(self, workdir: pathlib.Path) -> None:
    self.caption_inputs.load(workdir)
    if self.config.data.coherence_bins >= 2 and self.conditioning == "text":
      path = workdir / COHERENCE_BINS_FILE
      if not path.is_file():
        raise CheckpointError(f"{path} is missing: the run's coherence bin edges are needed to bin its data")
      self._bin_edges = np.asarray(json.loads(path.read_text())["edges"], np.float64)


def _class_hits(predicted: dict, examples: list[dict]) -> np.ndarray:
  """(N,) float64: 1 where the judge finds an object of the prompted colour and shape in the generation."""
  hits = []
  for index, example in enumerate(examples):
    slot = int(np.argmax(example["present"]))
    colour, shape = example["colour"][slot], example["shape"][slot]
    found = predicted["present"][index] & (predicted["colour"][index] == colour) & (predicted["shape"][index] == shape)
    hits.append(bool(found.any()))
  return np.asarray(hits, np.float64)


def decode_latents(vae, latents: np.ndarray, batch_size: int = 8) -> np.ndarray:
  """Scaled SD-VAE latents (N, h, w, 4) → RGB images (N, h·f, w·f, 3) in about [−1, 1], `batch_size` at a time
  (fewer latents than that in one call; the last chunk padded to the others' shape)."""
  return apply_in_batches(vae.decode, (latents,), min(batch_size, len(latents)))
