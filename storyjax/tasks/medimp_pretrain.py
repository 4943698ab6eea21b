"""MEDIMP's image–text pretraining (thesis §4.1; facts funnynet-medical-sfd (b) "MEDIMP"): CLIP's symmetric InfoNCE
between a kidney MRI volume and a clinical prompt of its patient and exam.

Data: one example per present (patient, exam, sequence) volume of the kidney cohort (storyjax/data/medical/
kidney.py VolumeSource) with T = len(text.templates) prompts, one per template line (storyjax/data/medical/
prompts.py clinical_prompt: donor age, GFR at that exam, creatinine variability), each a pure function of
(data.seed, patient, exam, line). The loss draws one of the T prompts per example with the step's rng (the
published "one of the 10 texts chosen at random per sample"). Model: storyjax/models/medimp.py.

Evaluation, in eval mode (BatchNorm running averages), on a fixed random subset of the test volumes: zero-shot GFR
band accuracy against the majority band's frequency, the band being the one whose prompts are closest to the image:
template line 1's prompts at the volume's exam and that band, averaged over every age word and creatinine adjective
(CLIP's prompt ensembling; with the GFR sentence alone, reported too, a scratch text tower is near or below chance:
no training prompt is a lone sentence); and image→text retrieval among test batches.
The downstream (storyjax/tasks/exam_sequence.py) reads the pooled ResNet features through `volume_features`.
"""

from collections.abc import Callable
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from storyjax.base_config import compute_dtype
from storyjax.data.medical.kidney import EXAMS, VolumeSource, cohort_from_config
from storyjax.data.medical.prompts import (
  AGE_WORDS,
  EXAM_WORDS,
  GFR_ABOVE_BANDS,
  GFR_BANDS,
  STABLE_ADJECTIVES,
  UNSTABLE_ADJECTIVES,
  clinical_prompt,
  gfr_word,
  parse_templates,
  prompt_vocabulary,
)
from storyjax.errors import ConfigError
from storyjax.losses import clip_contrastive, unit_rows
from storyjax.models.medimp import ImageTextModel
from storyjax.text.caption_inputs import CaptionInputs

BAND_WORDS = (*(word for _, word in GFR_BANDS), GFR_ABOVE_BANDS)  # extremely low … high


def drawn_prompts(batch, rng):
  """One of each example's T prompts, uniformly: text (B, T, L[, Dt]) → (B, L[, Dt]), text_mask (B, T, L) → (B, L)."""
  batch_size, num_prompts = batch["text_mask"].shape[:2]
  choice = jax.random.randint(rng, (batch_size,), 0, num_prompts)
  rows = jnp.arange(batch_size)
  return jnp.asarray(batch["text"])[rows, choice], jnp.asarray(batch["text_mask"])[rows, choice]


def retrieval_hits(image_embeddings, text_embeddings, text):
  """(B,) bool: whether each image's (B, E) most similar text (B, E) in the batch is its own or an identical one
  (text (B, ...)); identical prompts are common in a batch (the sequences of one exam) and cannot be told apart."""
  best = jnp.argmax(unit_rows(image_embeddings) @ unit_rows(text_embeddings).T, axis=-1)
  return jnp.all((text[best] == text).reshape(len(text), -1), axis=-1)


class Task:
  """Binds ImageTextModel to the trainer (contract: storyjax/tasks/base.py)."""

  non_state_keys = {"eval": ("quick_num_samples",), "model": ("clip_path",)}

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model = config.model
    self.templates = parse_templates(config.text.templates)
    if model.clip_path and model.text_encoder != "clip":
      raise ConfigError(
        f"model.clip_path is set but model.text_encoder={model.text_encoder!r}; the path is used only with "
        f"text_encoder='clip'."
      )
    self.caption_inputs = CaptionInputs(
      model.text_encoder, model.max_length, prompt_vocabulary(self.templates), model.clip_path
    )
    if not self.caption_inputs.frozen:
      self._check_prompt_length(model.max_length)
    self.model = ImageTextModel(
      vocab_size=self.caption_inputs.vocab_size,
      width=model.width,
      stage_sizes=tuple(model.stage_sizes),
      embed_dim=model.embed_dim,
      text_encoder=model.text_encoder,
      text_width=model.text_width,
      text_layers=model.text_layers,
      text_heads=model.text_heads,
      max_length=model.max_length,
      dtype=compute_dtype(model.dtype),
    )
    apply = lambda method: jax.jit(lambda variables, *inputs: self.model.apply(variables, *inputs, method=method))
    self._encode_image = apply(ImageTextModel.encode_image)
    self._encode_text = apply(ImageTextModel.encode_text)
    self._image_features = apply(ImageTextModel.image_features)
    self._test_examples: dict[int, dict[str, np.ndarray]] = {}

  def _check_prompt_length(self, max_length: int) -> None:
    """ConfigError when the longest prompt the templates can give has more tokens than max_length (it would be cut)."""
    gfr_per_band = [bound - 1 for bound, _ in GFR_BANDS] + [GFR_BANDS[-1][0]]
    longest = [
      clinical_prompt(line, 0.0, gfr, exam, 0.0, np.random.default_rng(0))
      for line in self.templates
      for gfr in gfr_per_band
      for exam in EXAM_WORDS
    ]
    num_tokens = max(len(ids) for ids in self.caption_inputs.tokenizer(longest)["input_ids"])
    if num_tokens > max_length:
      raise ConfigError(
        f"model.max_length={max_length} is shorter than the longest prompt of text.templates ({num_tokens} tokens "
        f"with [BOS] and [EOS]); raise it to {num_tokens} or shorten the templates."
      )

  def source(self, split: str) -> VolumeSource:
    return VolumeSource(cohort_from_config(self.config.data, split))

  def prompts(self, example: dict) -> list[str]:
    """The T prompts of a VolumeSource example, one per template line, its creatinine adjective drawn from a
    generator seeded by (data.seed, patient, exam, line)."""
    exam = int(example["exam"])
    seed = (self.config.data.seed, int(example["patient"]), exam)
    return [
      clinical_prompt(
        line,
        float(example["donor_age"]),
        float(example["gfr"]),
        EXAMS[exam],
        float(example["creatinine_std"]),
        np.random.default_rng([*seed, line_index]),
      )
      for line_index, line in enumerate(self.templates)
    ]

  def preprocess(self, example: dict) -> dict:
    """→ volume (S, S, S, 1) float32, text (T, L) int32 ids or (T, 77, Dt) CLIP features, text_mask (T, L) bool."""
    text, text_mask = self.caption_inputs.texts(self.prompts(example))
    return {"volume": np.asarray(example["volume"], np.float32), "text": text, "text_mask": text_mask}

  def init(self, rng, batch):
    return self.model.init({"params": rng}, batch["volume"], batch["text"][:, 0], batch["text_mask"][:, 0])

  def loss(self, variables, batch, rng):
    text, text_mask = drawn_prompts(batch, rng)
    (image_embeddings, text_embeddings, logit_scale), updated = self.model.apply(
      variables, batch["volume"], text, text_mask, train=True, mutable=["batch_stats"]
    )
    loss = clip_contrastive(image_embeddings, text_embeddings, logit_scale)
    metrics = {
      "logit_scale": logit_scale,
      "image_text_top1": retrieval_hits(image_embeddings, text_embeddings, text).mean(),
    }
    return loss, metrics, updated

  def volume_features(self, variables) -> Callable[[np.ndarray], np.ndarray]:
    """→ a function volumes (N, S, S, S, 1) → the pooled ResNet features (N, 8·width) numpy, eval mode."""
    return lambda volumes: np.asarray(self._image_features(variables, np.asarray(volumes, np.float32)))

  def _in_batches(self, encode, *arrays) -> np.ndarray:
    """encode over arrays (N, ...) in batches of batch_size (the last one padded: one compiled shape) → (N, E)."""
    size, count = self.config.batch_size, len(arrays[0])
    outputs = []
    for start in range(0, count, size):
      rows = np.minimum(np.arange(start, start + size), count - 1)
      outputs.append(np.asarray(encode(*(array[rows] for array in arrays)))[: count - start])
    return np.concatenate(outputs)

  def _test_subset(self, num_samples: int) -> dict[str, np.ndarray]:
    """The first num_samples of a fixed permutation (data.seed) of the test volumes: preprocessed features with
    their exam (N,) and GFR (N,), computed once per size."""
    if num_samples not in self._test_examples:
      source = self.source("test")
      order = np.random.default_rng(self.config.data.seed).permutation(len(source))[:num_samples]
      examples = [source[int(index)] for index in order]
      arrays = [self.preprocess(example) for example in examples]
      subset = {name: np.stack([array[name] for array in arrays]) for name in arrays[0]}
      subset.update({name: np.array([example[name] for example in examples]) for name in ("exam", "gfr")})
      self._test_examples[num_samples] = subset
    return self._test_examples[num_samples]

  def _band_prompts(self, full: bool) -> list[str]:
    """Template line 1's zero-shot prompts, exam-major, then band, then variant: (4 · 5 · V,) with V = 1, its GFR
    sentence alone, or with `full` V = 12, its whole prompt for every age word and creatinine adjective (CLIP's
    prompt ensembling), the sentences in clinical_prompt's order."""
    age_template, gfr_template, creatinine_template = self.templates[0]
    adjectives = UNSTABLE_ADJECTIVES + STABLE_ADJECTIVES
    contexts = [("", "")]
    if full:
      contexts = [
        (f"{age_template.format(age=age)} ", f" {creatinine_template.format(adj=adjective)}")
        for age in AGE_WORDS
        for adjective in adjectives
      ]
    return [
      f"{before}{gfr_template.format(gfr=band, date=EXAM_WORDS[exam])}{after}"
      for exam in EXAMS
      for band in BAND_WORDS
      for before, after in contexts
    ]

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """Eval-mode metrics on the first eval.quick_num_samples (`quick`) or all volumes of a fixed permutation of the
    test split.

    Zero-shot GFR band of each volume with a GFR: the band whose class embedding is closest (cosine) to the image's.
    gfr_band_accuracy: the class embedding is the mean over template line 1's full prompts at that band and the
    volume's exam, for every age word and creatinine adjective; gfr_sentence_band_accuracy: template line 1's GFR
    sentence alone, which no training prompt is (a scratch text tower often fails on it); gfr_band_chance: the
    majority band's frequency. image_text_top1: retrieval of template line 1's prompt among the examples of each
    batch_size chunk (identical prompts count as found); image_text_chance: its expectation for a random pick.
    """
    del workdir  # nothing to plot
    num_volumes = len(self.source("test"))
    num_samples = min(self.config.eval.quick_num_samples if quick else num_volumes, num_volumes)
    subset = self._test_subset(num_samples)
    encode_image = lambda volumes: self._encode_image(variables, volumes)
    encode_text = lambda text, mask: self._encode_text(variables, text, mask)
    image_embeddings = self._in_batches(encode_image, subset["volume"])
    text_embeddings = self._in_batches(encode_text, subset["text"][:, 0], subset["text_mask"][:, 0])

    hits, chance = [], []
    for start in range(0, num_samples, self.config.batch_size):
      batch = slice(start, start + self.config.batch_size)
      text = subset["text"][batch, 0].reshape(len(subset["text"][batch]), -1)
      hits.append(np.asarray(retrieval_hits(image_embeddings[batch], text_embeddings[batch], text)))
      chance.append(np.mean(np.all(text[:, None] == text[None], axis=-1), axis=-1))
    results = {
      "image_text_top1": float(np.concatenate(hits).mean()),
      "image_text_chance": float(np.concatenate(chance).mean()),
      "num_samples": num_samples,
    }

    has_gfr = ~np.isnan(subset["gfr"])
    if has_gfr.any():
      image_embeddings = np.asarray(unit_rows(image_embeddings[has_gfr]))
      exams = subset["exam"][has_gfr]
      true_band = np.array([BAND_WORDS.index(gfr_word(gfr)) for gfr in subset["gfr"][has_gfr]])
      results["gfr_band_chance"] = float(np.bincount(true_band).max() / len(true_band))
      for name, full in (("gfr_band", True), ("gfr_sentence_band", False)):
        classes = self._in_batches(encode_text, *self.caption_inputs.texts(self._band_prompts(full)))
        classes = np.asarray(unit_rows(classes)).reshape(len(EXAMS), len(BAND_WORDS), -1, classes.shape[-1])
        classes = np.asarray(unit_rows(classes.mean(2)))  # (4, 5, E)
        predicted = np.einsum("ne,nbe->nb", image_embeddings, classes[exams]).argmax(-1)
        results[f"{name}_accuracy"] = float(np.mean(predicted == true_band))
    return results

  def save_assets(self, workdir: pathlib.Path) -> None:
    self.caption_inputs.save(workdir)

  def load_assets(self, workdir: pathlib.Path) -> None:
    self.caption_inputs.load(workdir)
