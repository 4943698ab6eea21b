"""LAEO-Net++ (thesis §2.1): are two people Looking At Each Other in a window of T frames? (facts laeo-scam A)

Data (`data.source`):
  "procedural"  the embedded scenes (storyjax/data/laeo/scenes.py): labels from 3-D geometry, hard-case categories;
  "uco_laeo"    UCO-LAEO in its released layout under data.root (partition-1 train / val / test);
  "ava_laeo"    AVA-LAEO under data.root: ava_laeo_{train,val}.csv, ava_{train,val}_v2.2.csv and frames/ (ava.py's
                layout); AVA's val is the test split and 15 % of train is held out for validation, as published.
Training as published (A.4): softmax cross-entropy, Adam (configs/laeo.py), classes balanced by oversampling
(`data.balance`), one random transform per example shared by its frames and both heads (storyjax/data/laeo/
augment.py), the learning rate × 0.2 after 5 quick evaluations without a better validation AP (optimizer.schedule
"plateau"). Quick evaluations use the validation split; the full one the test split and, for the procedural data,
also the social analysis of a procedural episode (storyjax/social.py): friend-ness against the planted friendships.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.stats

from storyjax import social
from storyjax.base_config import check_source_keys, compute_dtype
from storyjax.data.laeo import augment, scenes
from storyjax.data.laeo.ava import AvaLaeoSource
from storyjax.data.laeo.uco import UcoLaeoSource
from storyjax.data.laeo.windows import check_channel_order
from storyjax.data.pipeline import ClassBalancedSource, SubsetSource
from storyjax.errors import ConfigError, DataError
from storyjax.metrics.classification import average_precision, roc_auc
from storyjax.models.laeo import LaeoNet, load_keras_weights

SOURCES = ("procedural", "uco_laeo", "ava_laeo")
SPLITS = ("train", "val", "test")
INPUTS = ("head_left", "head_right", "head_map")
AVA_VALIDATION_SHARE = 0.15


class Task:
  """Binds LaeoNet to the trainer (contract: storyjax/tasks/base.py)."""

  non_state_keys = {
    "data": ("root", "test_examples", "val_examples"),
    "eval": ("quick_num_samples", "batch_size", "episode_seed", "episode_shots"),
    "model": ("keras_weights",),
  }

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    model, data = config.model, config.data
    if data.source not in SOURCES:
      raise ConfigError(f"data.source={data.source!r}; choose one of {SOURCES}")
    check_source_keys(data.source, {"data.root": (data.root, data.source != "procedural")})
    check_channel_order(data.channel_order)
    if data.map_mean and data.source == "procedural":
      raise ConfigError("data.map_mean is for real data with the released weights; the procedural maps have none")
    if model.version not in (1, 2):
      raise ConfigError(f"model.version={model.version!r}; choose 1 (LAEO-Net) or 2 (LAEO-Net++)")
    self.model = LaeoNet(
      version=model.version,
      head_widths=tuple(model.head_widths),
      embedding_dim=model.embedding_dim,
      hidden_dim=model.hidden_dim,
      dropout_rate=model.dropout_rate,
      use_head_map=model.use_head_map,
      dtype=compute_dtype(model.dtype),
    )
    self._probability = jax.jit(
      lambda variables, batch: jax.nn.softmax(self.model.apply(variables, *(batch[name] for name in INPUTS)))[:, 1]
    )
    self._sources = {}

  @functools.cached_property
  def _map_mean(self):
    """The released mean map (data.map_mean), read once for all splits; None when not given."""
    path = self.config.data.map_mean
    if not path:
      return None
    try:
      return np.load(path)
    except OSError as error:
      raise ConfigError(f"data.map_mean={path!r} cannot be read ({error}); give the released meanmaps10.npy") from error

  def _split_source(self, split: str):
    data = self.config.data
    if split not in SPLITS:
      raise ConfigError(f"unknown split {split!r}; LAEO has {SPLITS}")
    if data.source == "procedural":
      sizes = {"train": data.train_examples, "val": data.val_examples, "test": data.test_examples}
      return scenes.LaeoSceneSource(
        sizes[split], seed=data.seed * len(SPLITS) + SPLITS.index(split), window=data.window
      )
    real = {"map_mean": self._map_mean, "channel_order": data.channel_order, "window": data.window}
    if data.source == "uco_laeo":
      return UcoLaeoSource(data.root, split, **real)
    root = pathlib.Path(data.root)
    ava_split = "val" if split == "test" else "train"
    source = AvaLaeoSource(
      root / f"ava_laeo_{ava_split}.csv", root / f"ava_{ava_split}_v2.2.csv", root / "frames", **real
    )
    if split == "test":
      return source
    held_out = np.random.default_rng(data.seed).permutation(len(source))
    count = round(AVA_VALIDATION_SHARE * len(source))
    return SubsetSource(source, np.sort(held_out[:count] if split == "val" else held_out[count:]))

  def source(self, split: str):
    if split not in self._sources:
      source = self._split_source(split)
      if split == "train" and self.config.data.balance:
        source = ClassBalancedSource(source, self.labels(source))
      self._sources[split] = source
    return self._sources[split]

  @staticmethod
  def labels(source) -> np.ndarray:
    """(N,) labels of a LAEO source without reading its images."""
    if isinstance(source, SubsetSource):
      return Task.labels(source.source)[source.indices]
    if isinstance(source, scenes.LaeoSceneSource):
      return source.labels()
    return np.array([sample.label for sample in source.samples], np.int32)

  def preprocess(self, example: dict) -> dict:
    window = self.config.data.window
    features = {}
    for name in INPUTS:
      value = np.asarray(example[name], np.float32)
      if value.shape != (window, 64, 64, 3):
        raise DataError(f"example {name} has shape {value.shape}, expected ({window}, 64, 64, 3) (data.window)")
      features[name] = value
    features["label"] = np.int32(example["label"])
    return features

  def init(self, rng, batch):
    params_rng, dropout_rng = jax.random.split(rng)
    inputs = (batch[name] for name in INPUTS)
    variables = self.model.init({"params": params_rng, "dropout": dropout_rng}, *inputs)
    if self.config.model.keras_weights:
      loaded = load_keras_weights(self.config.model.keras_weights, self.model)
      variables = jax.tree.map(
        lambda boxed, array: boxed.replace_boxed(jnp.asarray(array)) if hasattr(boxed, "replace_boxed") else array,
        variables,
        loaded,
        is_leaf=lambda leaf: hasattr(leaf, "replace_boxed"),
      )
    return variables

  def loss(self, variables, batch, rng):
    augment_rng, dropout_rng = jax.random.split(rng)
    settings = self.config.augment
    inputs = (batch[name] for name in INPUTS)
    if settings.enabled:
      inputs = augment.augment_pair(
        augment_rng, *inputs, settings.shift, settings.zoom, tuple(settings.brightness), settings.channel_shift
      )
    logits, updated = self.model.apply(
      variables, *inputs, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng}
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["label"]).mean()}, updated

  def predict(self, variables):
    """→ a function from inputs {"head_left", "head_right", "head_map": (N, T, 64, 64, 3)} to LAEO probabilities
    (N,) numpy (eval mode), run in batches of eval.batch_size (the last one zero-padded, so it compiles once)."""
    batch_size = self.config.eval.batch_size

    def predict(inputs):
      count, scores = len(inputs["head_left"]), []
      for start in range(0, count, batch_size):
        batch = {name: inputs[name][start : start + batch_size] for name in INPUTS}
        padding = [(0, batch_size - len(batch["head_left"]))] + [(0, 0)] * 4
        scores.append(np.asarray(self._probability(variables, {name: np.pad(batch[name], padding) for name in INPUTS})))
      return np.concatenate(scores)[:count]

    return predict

  def _scores(self, variables, source, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(LAEO probabilities (N,), labels (N,), categories (N,) or None) of the first `count` examples."""
    batch_size, predict = self.config.eval.batch_size, self.predict(variables)
    scores, labels, categories = [], [], []
    for start in range(0, count, batch_size):  # one batch of examples in memory at a time
      examples = [source[index] for index in range(start, min(start + batch_size, count))]
      features = [self.preprocess(example) for example in examples]
      scores.append(predict({name: np.stack([feature[name] for feature in features]) for name in INPUTS}))
      labels += [int(feature["label"]) for feature in features]
      categories += [int(example["category"]) for example in examples if "category" in example]
    return np.concatenate(scores), np.array(labels), np.array(categories) if categories else None

  def evaluate(self, variables, workdir: pathlib.Path, quick: bool = False) -> dict:
    """AP (scikit-learn's), accuracy at 0.5 and ROC AUC on the validation split (`quick`, the plateau schedule's
    metric) or the test split, with AP / accuracy per hard-case category of the procedural data, and (full,
    procedural) friend-ness on a procedural episode against its planted friendships."""
    source = self.source("val" if quick else "test")
    count = min(self.config.eval.quick_num_samples, len(source)) if quick else len(source)
    scores, labels, categories = self._scores(variables, source, count)
    results = {
      "ap": average_precision(labels, scores),
      "accuracy": float(np.mean((scores > 0.5) == labels)),
      "auc": roc_auc(scores, labels),
      "positive_rate": float(labels.mean()),
      "num_examples": int(count),
    }
    if categories is not None and not quick:
      for index, name in enumerate(scenes.CATEGORIES):
        members = categories == index
        if members.any():
          results[f"accuracy_{name}"] = float(np.mean((scores[members] > 0.5) == labels[members]))
          if 0 < labels[members].sum() < members.sum():
            results[f"ap_{name}"] = average_precision(labels[members], scores[members])
    if self.config.data.source == "procedural" and not quick:
      results.update(self.social_analysis(variables, workdir))
    return results

  def social_analysis(self, variables, workdir: pathlib.Path) -> dict:
    """Friend-ness of a procedural episode (storyjax/social.py) → Spearman correlations with the planted friendship
    and with the ground-truth LAEO frame fraction, over the character pairs that share a shot; draws
    `workdir/social_graph.png`."""
    settings = self.config.eval
    episode = scenes.sample_episode(settings.episode_seed, num_shots=settings.episode_shots)
    predict = self.predict(variables)
    image_size = episode.shots[0].scene.image_size
    statistics = []
    for index, shot in enumerate(episode.shots):
      crops = scenes.render_shot_tracks(shot, (settings.episode_seed, index))
      boxes = scenes.head_boxes(shot.scene)
      tracks = [
        social.HeadTrack(int(character), 0, crops[person], boxes[:, person])
        for person, character in enumerate(shot.characters)
      ]
      shot_scores = social.score_shot(predict, tracks, image_size, self.config.data.window)
      statistics.append(social.shot_statistics(tracks, shot_scores))
    friendness = social.friendness(statistics)
    pairs = sorted(friendness)
    predicted = np.array([friendness[pair] for pair in pairs])
    planted = np.array([episode.friendship[pair] for pair in pairs])
    observed = scenes.laeo_frame_fraction(episode)
    observed = np.array([observed[pair] for pair in pairs])
    names = {character: f"C{character}" for character in range(len(episode.friendship))}
    social.draw_social_graph(friendness, names, workdir / "social_graph.png")
    return {
      "friendness_spearman_planted": float(scipy.stats.spearmanr(predicted, planted).statistic),
      "friendness_spearman_ground_truth": float(scipy.stats.spearmanr(predicted, observed).statistic),
      "episode_pairs": len(pairs),
    }

  def save_assets(self, workdir: pathlib.Path) -> None:
    del workdir  # nothing besides the checkpoint

  def load_assets(self, workdir: pathlib.Path) -> None:
    del workdir
