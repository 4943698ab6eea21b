"""The config keys every model shares (the trainer's), documented once; `configs/<model>.py` files start here.

  config = base_config("director", variant)   # then set config.model, config.data, ... and override what differs

Keys (all read by storyjax/trainer.py unless noted):
  name              run name; the default workdir is runs/<name>
  task              the task module, storyjax/tasks/<task>.py
  seed              parameter init and training randomness; data order is a function of (data seed, step)
  total_steps, batch_size (global, over all devices and processes)
  log_every         steps between metrics.jsonl / TensorBoard records
  eval_every        steps between quick evaluations of the EMA parameters during training (0 = off)
  checkpoint_every, keep_checkpoints
  profile_steps     > 0: a jax.profiler trace of that many steps (from the 2nd) into <workdir>/profile
  mesh              device mesh sizes {data, fsdp, model}; one may be -1 (all remaining devices)
  optimizer         AdamW with warm-up + cosine decay (or the "plateau" schedule), global-norm clipping and
                    parameter EMA (storyjax/optim.py)
  data.num_threads  example-reading threads per loader process; data.num_workers: loader processes (0 = inline);
                    data.prefetch_to_device: batches transferred to the devices ahead of the step (0 = none)
  eval.at_end       run the task's full evaluation after the last step
"""

import jax.numpy as jnp
import ml_collections

from storyjax.errors import ConfigError

VARIANTS = (None, "smoke", "paper")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def base_config(
  name: str, variant: str | None, task: str | None = None, variants=VARIANTS
) -> ml_collections.ConfigDict:
  """The loop keys with defaults for a CPU run; `smoke` (a few seconds, used by the tests) sets its sizes here.

  `variants`: those the model's config file offers (None = its default).
  """
  if variant not in variants:
    raise ValueError(f"unknown configs/{name}.py variant {variant!r}; choose one of {variants[1:]} or none.")
  config = ml_collections.ConfigDict()
  config.name = name if variant is None else f"{name}_{variant}"
  config.task = task or name
  config.seed = 0
  config.total_steps = 1000
  config.batch_size = 32
  config.log_every = 50
  config.eval_every = 0
  config.checkpoint_every = 500
  config.keep_checkpoints = 2
  config.profile_steps = 0
  config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1})
  config.optimizer = ml_collections.ConfigDict(
    {
      "name": "adamw",
      "schedule": "warmup_cosine",
      "learning_rate": 3e-4,
      "warmup_steps": 200,
      "final_lr_fraction": 0.01,
      "b1": 0.9,
      "b2": 0.999,
      "eps": 1e-8,
      "weight_decay": 0.01,
      "grad_clip_norm": 1.0,
      "ema_decay": 0.999,
    }
  )
  config.data = ml_collections.ConfigDict({"num_threads": 2, "num_workers": 0, "prefetch_to_device": 2})
  config.eval = ml_collections.ConfigDict({"at_end": True})
  if variant == "smoke":
    config.update({"total_steps": 6, "batch_size": 8, "log_every": 1, "checkpoint_every": 3})
    config.optimizer.warmup_steps = 2
    config.data.num_threads = 0
    config.eval.at_end = False
  return config


def check_choices(*key_value_choices: tuple[str, object, tuple]) -> None:
  """Each (key, value, choices): a value outside its choices is a ConfigError listing them."""
  for key, value, choices in key_value_choices:
    if value not in choices:
      raise ConfigError(f"{key}={value!r}; choose one of {tuple(choices)}.")


def check_source_keys(source: str, keys: dict[str, tuple[str, bool]]) -> None:
  """The paths a data source reads: `keys` maps each key to (its value, whether data.source=`source` reads it); a
  key read must be set, and one set must be read (else it was meant for another source, a silent mistake)."""
  for key, (value, read) in keys.items():
    if read and not value:
      raise ConfigError(f"data.source={source!r} needs {key}; set --config.{key}.")
    if value and not read:
      raise ConfigError(f"{key}={value!r} is set but data.source={source!r} does not read it; set data.source too.")


def compute_dtype(name: str):
  """model.dtype → the jnp dtype of the compute (parameters stay float32)."""
  if name not in DTYPES:
    raise ConfigError(f"model.dtype={name!r}; choose one of {sorted(DTYPES)}.")
  return DTYPES[name]


# Integer keys (by leaf name) that may be 0: everything else integer is a size, count or interval and must be ≥ 1.
ZERO_ALLOWED_INTS = frozenset(
  {
    "eval_every",  # 0 = no evaluation during training
    "profile_steps",
    "num_threads",  # 0 = read in the loop's thread
    "num_workers",  # 0 = no loader processes
    "prefetch_to_device",
    "coherence_bins",  # 0 = raw coherence scores
    "guidance_start",
    "warmup_steps",
    "start_step",
    "shift",  # augmentation: 0 = none
    "swap_label",  # a label id
    "num_plots",  # 0 = no plots
    "num_registers",
  }
)
# Integer keys that may be negative, with their least value.
NEGATIVE_ALLOWED_INTS = {"char_index": -1}  # Director's sample.char_index: -1 = a character standing still
# Float keys that are probabilities, decay rates or coherences, in [0, 1].
UNIT_FLOATS = frozenset({"stochastic_depth", "ema_decay", "b1", "b2", "coherence"})
# Float keys that must be > 0.
POSITIVE_FLOATS = frozenset(
  {"learning_rate", "temperature", "eps", "grad_clip_norm", "sigma_data", "sigma_min", "sigma_max", "p_std", "rho"}
)


def least_integer(name: str) -> int:
  """The least value an integer key named `name` (its leaf name) may take: 1 for sizes, counts and intervals."""
  return 0 if name in ZERO_ALLOWED_INTS or name.endswith("seed") else NEGATIVE_ALLOWED_INTS.get(name, 1)


def _is_unit_float(name: str) -> bool:
  return (
    name in UNIT_FLOATS
    or "dropout" in name
    or "fraction" in name
    or name.startswith("missing_")
    or (name.endswith("_rate") and name != "learning_rate")
  )


def check_values(config: ml_collections.ConfigDict, prefix: str = "") -> None:
  """The checks every config gets before anything is built: sizes and counts ≥ 1, probabilities in [0, 1], rates
  and temperatures > 0, no NaN; each failure is a ConfigError naming the key and what it may be.

  The mesh is checked against the devices by storyjax.sharding.make_mesh; task-specific rules (choices, paths, how
  keys relate) by each task where it reads them.
  """
  for name, value in config.items():
    key = prefix + name
    if isinstance(value, ml_collections.ConfigDict):
      if key != "mesh":
        check_values(value, f"{key}.")
    elif isinstance(value, bool):
      continue
    elif isinstance(value, int):
      least = least_integer(name)
      if value < least:
        kind = "an integer ≥ 0" if least == 0 else f"an integer ≥ {least}" if least < 0 else "a positive integer"
        raise ConfigError(f"{key}={value}: it must be {kind}; set --config.{key} to one.")
    elif isinstance(value, float):
      if value != value:
        raise ConfigError(f"{key} is NaN; set --config.{key} to a number.")
      if _is_unit_float(name) and not 0.0 <= value <= 1.0:
        raise ConfigError(
          f"{key}={value}: it is a probability, decay or coherence in [0, 1]; set --config.{key} to one."
        )
      if name in POSITIVE_FLOATS and not value > 0.0:
        raise ConfigError(f"{key}={value}: it must be > 0; set --config.{key} to a positive number.")
      if prefix == "loss." and value < 0.0:
        raise ConfigError(f"{key}={value}: loss weights are ≥ 0; set --config.{key} to 0 to switch that term off.")
