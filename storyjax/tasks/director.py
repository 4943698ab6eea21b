"""Director task: E.T.-style camera trajectories, EDM training, guided Heun sampling, tag evaluation."""

import functools
import pathlib

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax import plotting
from storyjax.base_config import check_choices
from storyjax.data.et import camera, tagging
from storyjax.data.et.camera import CAMERA_FEATURES
from storyjax.diffusion import edm, guidance
from storyjax.errors import ConfigError
from storyjax.layers.attention import ATTENTION_IMPLEMENTATIONS, check_probability_dropout
from storyjax.layers.transformer import REMAT_POLICIES
from storyjax.metrics import clatr as clatr_metrics
from storyjax.metrics import distribution
from storyjax.models.director import CAPTION_TOKENS, VARIANTS, Director
from storyjax.tasks import load_trained_task
from storyjax.tasks.trajectory import TrajectoryTask

# eval.protocol: how fd_clatr, P/R/D/C and clatr_score are computed (configs/director.py, README "Results").
PROTOCOLS = ("storyjax", "published")
# Director B's pooled caption learns the camera's direction words at 3e-4, far worse at 1e-3 (README, "Results").
B_LEARNING_RATE_LIMIT = 3e-4


def tag_names(step_classes) -> str:
  """E.T. camera tags per step (N-1,) → their runs as names, e.g. 'push_in → trucking_left'."""
  return " → ".join(tagging.CAMERA_CLASS_NAMES[c] for c in tagging.run_sequence(step_classes))


def _stacked(examples: list[dict], key: str) -> np.ndarray:
  """The `key` arrays of N examples stacked → (N, ...)."""
  return np.stack([example[key] for example in examples])


class Task(TrajectoryTask):
  """Binds the Director model to the generic trainer (the contract: storyjax/tasks/base.py)."""

  # How the network computes, not what it is: a run may resume with other values.
  non_state_keys = {
    **TrajectoryTask.non_state_keys,
    "model": (*TrajectoryTask.non_state_keys["model"], "attention", "remat"),
  }

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    model, diffusion = config.model, config.diffusion
    check_choices(
      ("model.variant", model.variant, VARIANTS),
      ("model.caption_tokens", model.caption_tokens, CAPTION_TOKENS),
      ("model.attention", model.attention, ATTENTION_IMPLEMENTATIONS),
      ("model.remat", model.remat, tuple(REMAT_POLICIES)),
    )
    try:
      guidance.validate_schedule(diffusion.guidance_schedule)
    except ValueError as error:
      raise ConfigError(f"diffusion config: {error}") from error
    if config.eval.protocol not in PROTOCOLS:
      raise ConfigError(f"eval.protocol={config.eval.protocol!r}; choose one of {PROTOCOLS}.")
    check_probability_dropout(
      "model.attention", model.attention, "model.attention_dropout_rate", model.attention_dropout_rate
    )
    if model.variant == "B" and config.optimizer.learning_rate > B_LEARNING_RATE_LIMIT:
      logging.warning(
        "model.variant='B' with optimizer.learning_rate=%g: on the embedded data B learned the caption's camera "
        "words far worse above %g (tag_accuracy 0.69 at 1e-3 against 0.885 at 3e-4; README, 'Results'); "
        "configs/director.py:B trains B at %g.",
        config.optimizer.learning_rate,
        B_LEARNING_RATE_LIMIT,
        B_LEARNING_RATE_LIMIT,
      )
    self.diffusion = diffusion  # EDM σ_data, training noise distribution, sampling schedule
    self.model = Director(
      num_frames=self.num_frames,
      width=model.width,
      num_layers=model.num_layers,
      num_heads=model.num_heads,
      text_encoder=model.text_encoder,
      vocab_size=self.caption_inputs.vocab_size,
      text_width=model.text_width,
      text_layers=model.text_layers,
      text_heads=model.text_heads,
      max_caption_length=model.max_caption_length,
      variant=model.variant,
      caption_tokens=model.caption_tokens,
      num_registers=model.num_registers,
      condition_layers=model.condition_layers,
      mlp_ratio=model.mlp_ratio,
      dropout_rate=model.dropout_rate,
      stochastic_depth=model.stochastic_depth,
      attention_dropout_rate=model.attention_dropout_rate,
      attention=model.attention,
      remat=model.remat,
      dtype=self.dtype,
    )

  # ---- data -------------------------------------------------------------------------------------
  def preprocess(self, example: dict) -> dict:
    """One source example → camera_traj (T, 9), char_traj (T, 3), mask (T,), caption and caption_mask."""
    return self.example_arrays(example, ("camera_traj", "char_traj", "mask"))

  # ---- model ------------------------------------------------------------------------------------
  def _apply(self, variables, batch, camera_in, c_noise, drop_char, drop_caption, train=False, rng=None):
    return self.model.apply(
      variables,
      camera_in,
      c_noise,
      batch["char_traj"],
      batch["caption"],
      batch["caption_mask"],
      batch["mask"],
      drop_char,
      drop_caption,
      train=train,
      rngs={"dropout": rng} if train else None,
    )

  def init(self, rng, batch):
    """Boxed (logically partitioned) parameters for a batch of model features."""
    no_drop = jnp.zeros(batch["mask"].shape[:1], bool)
    c_noise = jnp.zeros(batch["mask"].shape[:1], jnp.float32)
    return self.model.init(
      {"params": rng},
      batch["camera_traj"],
      c_noise,
      batch["char_traj"],
      batch["caption"],
      batch["caption_mask"],
      batch["mask"],
      no_drop,
      no_drop,
    )

  def loss(self, variables, batch, rng):
    """EDM loss on the frame-valid entries of σ_data-scaled features ('edm2 normalisation')."""
    rng_drop, rng_noise, rng_dropout = jax.random.split(rng, 3)
    batch_size = batch["mask"].shape[0]
    drop_all, drop_char, drop_caption = jax.random.bernoulli(
      rng_drop, self.config.diffusion.condition_dropout, (3, batch_size)
    )
    network_fn = lambda camera_in, c_noise: self._apply(
      variables, batch, camera_in, c_noise, drop_all | drop_char, drop_all | drop_caption, True, rng_dropout
    )
    clean = batch["camera_traj"] * self.diffusion.sigma_data
    loss, _ = edm.edm_loss(
      network_fn,
      rng_noise,
      clean,
      self.diffusion.sigma_data,
      self.diffusion.p_mean,
      self.diffusion.p_std,
      weight_mask=batch["mask"][..., None],
    )
    return loss, {}, {}

  @functools.cached_property
  def _generate(self):
    return jax.jit(self.generate, static_argnums=3)

  def generate(self, variables, batch, rng, guidance_weight: float):
    """Guided Heun sampling → standardized camera features (B, T, 9), zero on padded frames.

    guidance_weight w is Director's (uncond + w·(cond − uncond)); diffusion.guidance_schedule spreads CAD's
    ω = w − 1 over the noise levels σ_0 … σ_{N−1} with mean ω (storyjax/diffusion/guidance.py). The weight is a
    function of σ: Heun's correction at σ_{i+1} uses σ_{i+1}'s weight.
    """
    batch_size = batch["mask"].shape[0]
    noise = jax.random.normal(rng, (batch_size, self.num_frames, CAMERA_FEATURES))
    sigmas = edm.karras_sigmas(
      self.diffusion.num_steps, self.diffusion.sigma_min, self.diffusion.sigma_max, self.diffusion.rho
    )
    keep = jnp.zeros((batch_size,), bool)
    omegas = guidance.schedule_weights(
      self.diffusion.guidance_schedule, self.diffusion.num_steps, guidance_weight - 1.0
    )
    weights = jnp.asarray(guidance.to_convention(np.append(omegas, omegas[-1]), "director"))

    if guidance_weight == 1.0:  # uncond + 1·(cond − uncond) is the conditional model alone.

      def denoise_fn(noisy, sigma):
        network_fn = lambda camera_in, c_noise: self._apply(variables, batch, camera_in, c_noise, keep, keep)
        return edm.denoise(network_fn, noisy, jnp.full((batch_size,), sigma), self.diffusion.sigma_data)
    else:
      doubled = jax.tree.map(lambda leaf: jnp.concatenate([leaf, leaf]), batch)
      drop = jnp.concatenate([keep, ~keep])

      def denoise_fn(noisy, sigma):
        network_fn = lambda camera_in, c_noise: self._apply(variables, doubled, camera_in, c_noise, drop, drop)
        both = edm.denoise(
          network_fn, jnp.concatenate([noisy, noisy]), jnp.full((2 * batch_size,), sigma), self.diffusion.sigma_data
        )
        weight = weights[jnp.argmin(jnp.abs(sigmas - sigma))]
        return guidance.classifier_free_guidance(both[:batch_size], both[batch_size:], weight)

    samples = edm.heun_sample(denoise_fn, noise, sigmas) / self.diffusion.sigma_data
    return samples * batch["mask"][..., None]

  # ---- evaluation -------------------------------------------------------------------------------
  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Samples the test captions and scores the trajectories.

    tag_*: the E.T. tagger re-run on the decoded generated poses against the caption's motion classes.
    With a CLaTr checkpoint in eval.clatr_workdir, also the published metrics on CLaTr means: fd_clatr,
    precision / recall / density / coverage (k = 3) and clatr_score, computed by eval.protocol ("storyjax":
    _clatr_metrics, "published": _published_clatr_metrics). `quick`: tag accuracy of the first
    eval.quick_num_samples test captions only, no plots.
    """
    eval_config = self.config.eval
    test_source = self.source("test")
    num_samples = min(eval_config.quick_num_samples if quick else eval_config.num_samples, len(test_source))
    rng = jax.random.PRNGKey(eval_config.seed)
    num_plots = 0 if quick else eval_config.num_plots
    plots_dir = workdir / "plots"
    if num_plots:
      plots_dir.mkdir(parents=True, exist_ok=True)
    examples = [test_source[index] for index in range(num_samples)]
    generated = self._generate_examples(variables, examples, rng)
    matches, reference_matches, step_agreement, truths = [], [], [], []
    for index, example in enumerate(examples):
      num_frames = int(example["num_frames"])
      truth = tuple(int(c) for c in example["cam_classes"] if c != tagging.PAD_CLASS)
      poses = camera.decode_camera(generated[index, :num_frames])
      tags = tagging.tag_camera(poses)
      reference_tags = tagging.tag_camera(camera.decode_camera(example["camera_traj"][:num_frames]))
      matches.append(tagging.run_sequence(tags) == truth)
      reference_matches.append(tagging.run_sequence(reference_tags) == truth)
      step_agreement.append(np.mean(tags == reference_tags))
      truths.append(truth)
      if index < num_plots and jax.process_index() == 0:
        char_pos = camera.decode_character(example["char_traj"][:num_frames])
        plotting.plot_camera_trajectory(
          plots_dir / f"sample_{index:03d}.png",
          poses,
          char_pos,
          caption=example["caption"],
          tags=f"generated tags: {tag_names(tags)}",
        )
    if quick:
      return {"tag_accuracy": float(np.mean(matches)), "tag_step_accuracy": float(np.mean(step_agreement))}
    _, counts = np.unique(np.array([str(t) for t in truths]), return_counts=True)
    results = {
      "tag_accuracy": float(np.mean(matches)),
      "tag_accuracy_chance": float(counts.max() / counts.sum()),
      "reference_tag_accuracy": float(np.mean(reference_matches)),
      "tag_step_accuracy": float(np.mean(step_agreement)),
      "num_samples": num_samples,
      "subset": self.config.data.subset,
      "guidance_weight": float(self.config.diffusion.guidance_weight),
      "guidance_schedule": self.config.diffusion.guidance_schedule,
      "protocol": eval_config.protocol,
    }
    clatr_workdir = pathlib.Path(eval_config.clatr_workdir) if eval_config.clatr_workdir else None
    if clatr_workdir and not (clatr_workdir / "config.json").is_file():
      logging.warning(
        "no CLaTr run in %s: fd_clatr, precision/recall/density/coverage and clatr_score are "
        "skipped; train it with `python -m storyjax.train --config=configs/clatr.py --workdir=%s`.",
        clatr_workdir,
        clatr_workdir,
      )
    elif clatr_workdir and eval_config.protocol == "published":
      results.update(self._published_clatr_metrics(variables, generated, examples, rng))
    elif clatr_workdir:
      results.update(self._clatr_metrics(generated, examples))
    return results

  def _generate_examples(self, variables, examples: list[dict], rng, first_index: int = 0) -> np.ndarray:
    """Guided samples (N, T, 9) for N examples, eval.batch_size at a time (the last batch padded with its last
    example); a batch's noise key is `rng` folded in with the index of its first example, counted from first_index.
    """
    batch_size = self.config.eval.batch_size
    generated = []
    for start in range(0, len(examples), batch_size):
      batch_examples = examples[start : start + batch_size]
      padded = batch_examples + batch_examples[-1:] * (batch_size - len(batch_examples))
      samples = self._generate(
        variables,
        self.batch(padded),
        jax.random.fold_in(rng, first_index + start),
        self.config.diffusion.guidance_weight,
      )
      generated.append(np.asarray(samples)[: len(batch_examples)])
    return np.concatenate(generated)

  def _load_clatr(self):
    """The CLaTr trained in eval.clatr_workdir as a feature extractor (see storyjax/tasks/clatr.py)."""
    workdir = pathlib.Path(self.config.eval.clatr_workdir).absolute()
    clatr, variables = load_trained_task(workdir, "clatr")
    encoder = clatr.feature_extractor(variables)
    if encoder.max_frames != self.num_frames:
      raise ConfigError(
        f"the CLaTr checkpoint in {workdir} encodes {encoder.max_frames} frames but "
        f"data.max_frames={self.num_frames}; train CLaTr with the same max_frames."
      )
    return encoder

  def _clatr_metrics(self, generated: np.ndarray, examples: list[dict]) -> dict:
    """eval.protocol "storyjax": FD_CLaTr and P/R/D/C of the test generations (N, T, 9) against the first
    eval.num_reference train examples, CLaTr-Score with their captions; *_reference: the same metrics for the real
    test trajectories (the ceiling on this data)."""
    encoder = self._load_clatr()
    train_source = self.source("train")
    reference = [train_source[index] for index in range(min(self.config.eval.num_reference, len(train_source)))]
    mask = _stacked(examples, "mask")
    reference_feats = encoder.trajectory_features(_stacked(reference, "camera_traj"), _stacked(reference, "mask"))
    text_feats = encoder.text_features([example["caption"] for example in examples])

    def scores(traj_feats) -> dict:
      return {
        "fd_clatr": distribution.frechet_distance(reference_feats, traj_feats),
        **distribution.prdc(reference_feats, traj_feats, k=3, published_quirks=self.config.eval.prdc_published_quirks),
        "clatr_score": clatr_metrics.clatr_score(text_feats, traj_feats),
      }

    real_scores = scores(encoder.trajectory_features(_stacked(examples, "camera_traj"), mask))
    return {
      **scores(encoder.trajectory_features(generated, mask)),
      **{f"{key}_reference": value for key, value in real_scores.items()},
      "num_reference": len(reference),
    }

  def _published_clatr_metrics(self, variables, test_generated: np.ndarray, test_examples: list[dict], rng) -> dict:
    """eval.protocol "published", DIRECTOR's released evaluation (its src/evaluate.py: a test pass over the train
    split, then one over the test split; src/training/diffuser.py test_step pairs each generation with the ground
    truth of the same example): fd_clatr and P/R/D/C of trajectories generated for the first eval.num_samples train
    examples against those examples' own trajectories, P/R/D/C with the released quirks over 5 chunks of the whole
    set; clatr_score of the test generations (N, T, 9) with their captions.
    """
    encoder = self._load_clatr()
    train_source = self.source("train")
    train_examples = [train_source[index] for index in range(min(self.config.eval.num_samples, len(train_source)))]
    # The train batches continue the test batches' noise indices, so no key is drawn twice.
    train_generated = self._generate_examples(variables, train_examples, rng, first_index=len(test_examples))
    train_mask = _stacked(train_examples, "mask")
    real_feats = self._published_trajectory_features(encoder, _stacked(train_examples, "camera_traj"), train_mask)
    generated_feats = self._published_trajectory_features(encoder, train_generated, train_mask)
    try:
      manifold = distribution.prdc(real_feats, generated_feats, k=3, published_quirks=True)
    except ValueError as error:
      raise ConfigError(f"eval.protocol='published' with eval.num_samples={len(train_examples)}: {error}") from error
    test_feats = self._published_trajectory_features(encoder, test_generated, _stacked(test_examples, "mask"))
    text_feats = encoder.text_features([example["caption"] for example in test_examples])
    return {
      "fd_clatr": distribution.frechet_distance(real_feats, generated_feats),
      **manifold,
      "clatr_score": clatr_metrics.clatr_score(text_feats, test_feats),
      "num_train_samples": len(train_examples),
    }

  def _published_trajectory_features(self, encoder, camera_traj: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """CLaTr means (N, D) of standardized features (N, T, 9) as DIRECTOR's release encodes them: ×σ_data first.

    Its src/training/diffuser.py test_step scales the real features in place (`data *= sigma_data`, edm2
    normalisation) before encoding them, and its generations stay in that σ_data-scaled space; CLaTr was trained
    on the unscaled features, so both sides reach it at σ_data (0.5) times their scale.
    """
    return encoder.trajectory_features(self.diffusion.sigma_data * camera_traj, mask)

  # ---- generation -------------------------------------------------------------------------------
  def sample(self, variables, prompts, rng) -> dict:
    """One trajectory per prompt, conditioned on test example sample.char_index's character (-1: standing).

    Returns numpy arrays: camera_pose (N, T, 3, 4) camera-to-world, camera_traj (N, T, 9), char_traj (N, T, 3)
    world positions, caption (N,), tags (N,) E.T. tag runs joined by ' → ', mask (N, T).
    """
    char_index = self.config.sample.char_index
    test_source = self.source("test")
    if char_index >= len(test_source):
      raise ConfigError(f"sample.char_index={char_index} but the test split has {len(test_source)} examples")
    if char_index >= 0:
      reference = test_source[char_index]
    else:
      reference = {
        "char_traj": camera.encode_character(np.zeros((self.num_frames, 3))),
        "mask": np.ones((self.num_frames,), bool),
      }
    examples = [
      {
        "camera_traj": np.zeros((self.num_frames, CAMERA_FEATURES), np.float32),
        "char_traj": reference["char_traj"],
        "mask": reference["mask"],
        "caption": prompt,
      }
      for prompt in prompts
    ]
    batch = self.batch(examples)
    camera_traj = np.asarray(self._generate(variables, batch, rng, self.config.diffusion.guidance_weight))
    mask = np.asarray(batch["mask"])
    num_frames = int(mask[0].sum())
    poses = np.zeros(camera_traj.shape[:2] + (3, 4))
    poses[:, :num_frames] = camera.decode_camera(camera_traj[:, :num_frames])
    char_pos = np.zeros(camera_traj.shape[:2] + (3,))
    char_pos[:, :num_frames] = camera.decode_character(np.asarray(batch["char_traj"])[:, :num_frames])
    tags = [tag_names(tagging.tag_camera(pose[:num_frames])) for pose in poses]
    return {
      "camera_pose": poses,
      "camera_traj": camera_traj,
      "char_traj": char_pos,
      "caption": np.array(prompts),
      "tags": np.array(tags),
      "mask": mask,
    }

  def prompt_warnings(self, prompts) -> list[str]:
    """Empty prompts, tokens cut at the caption limit, words outside the scratch vocabulary (base.GenerativeTask)."""
    return self.caption_inputs.prompt_warnings(prompts)

  def save_samples(self, samples: dict, out_dir: pathlib.Path) -> None:
    """One KITTI pose file (E.T.'s traj/ format) and one PNG plot per sample."""
    for index, caption in enumerate(samples["caption"]):
      num_frames = int(samples["mask"][index].sum())
      poses = samples["camera_pose"][index, :num_frames]
      camera.write_kitti_poses(out_dir / f"sample_{index:03d}.txt", poses)
      plotting.plot_camera_trajectory(
        out_dir / f"sample_{index:03d}.png",
        poses,
        samples["char_traj"][index, :num_frames],
        caption=str(caption),
        tags=f"generated tags: {samples['tags'][index]}",
      )
