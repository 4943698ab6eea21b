"""The `scam` task: SCAM (thesis §3.1) trained as a GAN in two turns, and subject transfer at test time.

Turns (storyjax/tasks/base.py TurnTask), as the authors step (facts laeo-scam B.6–B.7): the generator side
(encoder + generator) on reconstruction — hinge-G on the normalised discriminator, 10·L1, 10·perceptual — then the
discriminator on the real images and the generator's reconstructions of this step (detached: the carry), with the
hinge loss. Evaluation: reconstruction `psnr` / `ssim`; subject transfer swaps the latents of label
eval.swap_label between each test image and the next one, then `region_leak` (change outside that region) and, with
the region probe and known scene parameters, `swap_accuracy` (the region takes the donor's colour and texture).
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax import losses
from storyjax.base_config import check_choices, compute_dtype
from storyjax.data.images.arrays import checked_image
from storyjax.data.images.segmented import NUM_LABELS, SegmentationFolderSource, SegmentedSceneSource
from storyjax.data.pipeline import apply_in_batches
from storyjax.errors import ConfigError, DataError
from storyjax.kernels.semantic_attention import IMPLEMENTATIONS as SCA_IMPLEMENTATIONS
from storyjax.layers.semantic import TRANSFORMER_NORMS
from storyjax.metrics import regions
from storyjax.models.scam import SCAM, discriminator_input, gradient_normalised_logits
from storyjax.models.vgg import load_vgg19
from storyjax.plotting import save_image_grid

DATA_SOURCES = ("scenes", "folder")
PERCEPTUAL_NETWORKS = ("probe", "vgg19", "none")


class Task:
  """Binds SCAM to the generic trainer in turns (the contract: storyjax/tasks/base.py TurnTask)."""

  turns = {"generator": ("encoder", "generator"), "discriminator": ("discriminator",)}
  non_state_keys = {
    "data": ("path", "test_size"),
    "loss": ("perceptual_network",),
  }

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model, data = config.model, config.data
    if data.source not in DATA_SOURCES:
      raise ConfigError(f"data.source={data.source!r}; choose one of {DATA_SOURCES}.")
    if (data.source == "folder") != bool(data.path):
      raise ConfigError(
        f"data.path={data.path!r} with data.source={data.source!r}: the folder source needs a path "
        f"(<path>/{{train,test}}/{{images,labels}}), the embedded scenes none."
      )
    if data.source == "scenes" and data.num_labels != NUM_LABELS:
      raise ConfigError(f"data.num_labels={data.num_labels}, but the embedded scenes have {NUM_LABELS} labels.")
    start_size, remainder = divmod(data.image_size, 2 ** (len(model.generator_widths) - 1))
    if remainder or start_size < 2:
      raise ConfigError(
        f"data.image_size={data.image_size} must be a multiple of 2^(len(model.generator_widths) − 1) = "
        f"{2 ** (len(model.generator_widths) - 1)} with a start map of at least 2×2; change either."
      )
    if not 0 <= config.eval.swap_label < data.num_labels:
      raise ConfigError(f"eval.swap_label={config.eval.swap_label} is not a label id in [0, {data.num_labels}).")
    check_choices(
      ("model.transformer_norm", model.transformer_norm, TRANSFORMER_NORMS),
      ("model.attention", model.attention, SCA_IMPLEMENTATIONS),
    )
    self.image_size, self.num_labels = data.image_size, data.num_labels
    self.model = SCAM(
      num_labels=data.num_labels,
      latents_per_label=model.latents_per_label,
      latent_dim=model.latent_dim,
      heads=model.heads,
      attention_dim=model.attention_dim,
      transformer_norm=model.transformer_norm,
      semantic_masks=model.semantic_masks,
      mask_value=model.mask_value,
      attention=model.attention,
      encoder_levels=model.encoder_levels,
      encoder_width=model.encoder_width,
      position_dim=model.position_dim,
      generator_widths=tuple(model.generator_widths),
      discriminator_widths=tuple(model.discriminator_widths),
      discriminator_scales=model.discriminator_scales,
      dtype=compute_dtype(model.dtype),
    )
    self.loss_weights = {name: config.loss[name] for name in ("adversarial", "l1", "perceptual")}
    self.gradient_normalisation = config.loss.gradient_normalisation
    self._probes = {}  # region probes by workdir: the perceptual network and the evaluation share one
    # Read now (a trained probe or a VGG19 file), not inside the step's trace.
    self.perceptual_network = self._perceptual_network(*self._parse_perceptual_network(config.loss.perceptual_network))
    self._reconstruct = jax.jit(self._reconstruct_batch)
    self._generate = jax.jit(functools.partial(self.model.apply, method=SCAM.generate, deterministic=True))
    self.probe_workdir = config.eval.probe_workdir
    self.swap_label = config.eval.swap_label

  def _parse_perceptual_network(self, spec: str) -> tuple[str, str]:
    """loss.perceptual_network → (kind, path), checked without reading anything."""
    kind, _, path = spec.partition(":")
    if kind not in PERCEPTUAL_NETWORKS or (kind != "none") != bool(path):
      raise ConfigError(
        f"loss.perceptual_network={spec!r}; use 'probe:<region_attributes workdir>', 'vgg19:<file.safetensors>' "
        f"or 'none'."
      )
    if kind == "none" and self.loss_weights["perceptual"]:
      raise ConfigError("loss.perceptual > 0 needs a loss.perceptual_network; set the weight to 0 or a network.")
    return kind, path

  def _perceptual_network(self, kind: str, path: str):
    """(features: images (B, S, S, 3) in [−1, 1] → feature maps, their loss weights), or None for "none". VGG19's
    five maps weigh 1/32 … 1 (B.6); the probe's n stage maps the last n rungs of that ladder (finest 2^−(n−1),
    coarsest 1)."""
    if kind == "none":
      return None
    if kind == "vgg19":
      network, variables = load_vgg19(path)
      return (lambda images: network.apply(variables, images)), losses.PERCEPTUAL_WEIGHTS
    features = self._region_probe(path).features
    image = jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32)
    num_maps = len(jax.eval_shape(features, image))
    return features, tuple(2.0 ** -(num_maps - 1 - index) for index in range(num_maps))

  def _region_probe(self, workdir) -> regions.RegionJudge:
    workdir = str(pathlib.Path(workdir).absolute())
    if workdir in self._probes:
      return self._probes[workdir]
    judge = self._probes[workdir] = regions.RegionJudge.load(workdir)
    if judge.image_size != self.image_size:
      raise ConfigError(
        f"the region probe in {workdir} reads {judge.image_size}² images, SCAM makes {self.image_size}² "
        f"(data.image_size); train a probe with --config.data.image_size={self.image_size}."
      )
    return judge

  def source(self, split: str):
    data = self.config.data
    size = {"train": data.train_size, "test": data.test_size}[split]
    try:
      if data.source == "scenes":
        return SegmentedSceneSource(split, size, data.image_size, seed=data.seed)
      return SegmentationFolderSource(data.path, split, data.image_size, data.num_labels)
    except ValueError as error:
      raise ConfigError(f"data config: {error}") from error

  def preprocess(self, example: dict) -> dict:
    labels = np.asarray(example.get("labels"))
    if labels.shape != (self.image_size, self.image_size):
      raise DataError(f"labels have shape {labels.shape}, expected {(self.image_size,) * 2} (data.image_size)")
    return {"image": checked_image(example, self.image_size) / 127.5 - 1.0, "labels": labels.astype(np.int32)}

  def init(self, rng, batch):
    params_rng, noise_rng = jax.random.split(rng)
    return self.model.init({"params": params_rng, "noise": noise_rng}, batch["image"], batch["labels"])

  def _discriminator_logits(self, variables, images, labels):
    """Per-scale logits of D on (images, labels), normalised (GN-GAN, B.5) when loss.gradient_normalisation."""
    logits_fn = lambda inputs: self.model.apply(variables, inputs, method=SCAM.discriminate_input)
    inputs = discriminator_input(images, labels, self.num_labels)
    return gradient_normalised_logits(logits_fn, inputs) if self.gradient_normalisation else logits_fn(inputs)

  def turn_loss(self, turn, variables, batch, rng, carry):
    images, labels = batch["image"], batch["labels"]
    if turn == "generator":
      latents = self.model.apply(variables, images, labels, method=SCAM.encode)
      fakes = self.model.apply(
        variables, labels, latents, deterministic=False, method=SCAM.generate, rngs={"noise": rng}
      )
      adversarial = -jnp.mean(
        jnp.stack([logits.mean() for logits in self._discriminator_logits(variables, fakes, labels)])
      )
      l1 = jnp.abs(fakes - images).mean()
      terms = {"adversarial": adversarial, "l1": l1}
      if self.perceptual_network is not None:
        features, weights = self.perceptual_network
        terms["perceptual"] = losses.perceptual_l1(features(fakes), features(images), weights)
      loss = sum(self.loss_weights[name] * value for name, value in terms.items())
      return loss, terms, {}, jax.lax.stop_gradient(fakes)
    real_logits = self._discriminator_logits(variables, images, labels)
    fake_logits = self._discriminator_logits(variables, carry, labels)
    real = jnp.mean(jnp.stack([jax.nn.relu(1.0 - logits).mean() for logits in real_logits]))
    fake = jnp.mean(jnp.stack([jax.nn.relu(1.0 + logits).mean() for logits in fake_logits]))
    return real + fake, {"hinge_real": real, "hinge_fake": fake}, {}, None

  def _reconstruct_batch(self, variables, images, labels):
    latents = self.model.apply(variables, images, labels, method=SCAM.encode)
    return self.model.apply(variables, labels, latents, deterministic=True, method=SCAM.generate), latents

  def swap_latents(self, latents, donor_latents, label: int):
    """(B, N_lat, D) latents with the rows of `label` (latents_per_label of them) taken from `donor_latents`."""
    per_label = self.config.model.latents_per_label
    rows = np.arange(latents.shape[1]) // per_label == label
    return np.where(rows[None, :, None], donor_latents, latents)

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Reconstruction psnr/ssim and subject transfer (region_leak; swap_accuracy with the probe) on the first
    eval.num_examples (quick: quick_num_examples) test images; the full run also writes plots/scam_swaps.png."""
    test_source = self.source("test")
    count = min(self.config.eval["quick_num_examples" if quick else "num_examples"], len(test_source))
    if count < 2:
      raise ConfigError(f"evaluation needs at least 2 test images to swap between, got {count} (data.test_size)")
    examples = [test_source[index] for index in range(count)]
    features = [self.preprocess(example) for example in examples]
    batch = {key: np.stack([feature[key] for feature in features]) for key in ("image", "labels")}
    batch_size = self.config.eval.batch_size
    reconstructions, latents = apply_in_batches(
      lambda images, labels: self._reconstruct(variables, images, labels), (batch["image"], batch["labels"]), batch_size
    )
    donors = np.roll(np.arange(count), -1)
    swapped_latents = self.swap_latents(latents, latents[donors], self.swap_label)
    swapped = apply_in_batches(
      lambda labels, latents: self._generate(variables, labels, latents), (batch["labels"], swapped_latents), batch_size
    )
    region = batch["labels"] == self.swap_label
    results = {
      "psnr": regions.psnr(reconstructions, batch["image"]),
      "ssim": regions.ssim(reconstructions, batch["image"]),
      "region_leak": regions.region_leak(swapped, reconstructions, region),
      "num_examples": count,
    }
    if self.probe_workdir and "colour_ids" in examples[0]:
      colours = np.stack([example["colour_ids"] for example in examples])[donors]
      textures = np.stack([example["texture_ids"] for example in examples])[donors]
      judge = self._region_probe(self.probe_workdir)
      kept = (colours[:, self.swap_label] >= 0) & region.any(axis=(1, 2))  # the label in both images
      accuracy = regions.swap_accuracy(
        judge, swapped[kept], batch["labels"][kept], colours[kept], textures[kept], self.swap_label
      )
      results.update({f"swap_{name}" if name != "swap_accuracy" else name: value for name, value in accuracy.items()})
    if not quick and jax.process_index() == 0:
      plots = pathlib.Path(workdir) / "plots"
      plots.mkdir(parents=True, exist_ok=True)
      shown = min(count, 8)
      rows = [batch["image"][:shown], batch["image"][donors][:shown], reconstructions[:shown], swapped[:shown]]
      save_image_grid(plots / "scam_swaps.png", np.stack(rows, axis=1).reshape((-1,) + swapped.shape[1:]), columns=4)
    return {name: float(value) if not isinstance(value, int) else value for name, value in results.items()}

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
