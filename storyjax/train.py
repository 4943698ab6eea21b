"""The one generic train loop: `python -m storyjax.train --config=configs/<model>.py[:variant]`.

The train state is a plain dict {'step', 'params', 'ema_params', 'opt_state'} created directly sharded
(eval_shape → logical shardings → jit(init)); the step is jitted with explicit in/out shardings and
donates the old state. Data order depends only on (seed, step), so a restart resumes exactly.
"""
import json
import pathlib
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from storyjax import optim, profiling, sharding
from storyjax.checkpoint import Checkpointer
from storyjax.data.pipeline import make_train_iterator
from storyjax.metric_logger import MetricLogger
from storyjax.errors import CheckpointError, ConfigError, DivergenceError
from storyjax.tasks import get_task

# Config sections whose change makes an existing checkpoint unusable, less the keys that do not shape the
# train state (loader threads and processes, the size of the evaluation split, where files are).
STATE_DEFINING_KEYS = ("task", "model", "data")
NON_STATE_KEYS = {"data": ("num_threads", "num_workers", "test_size", "path"), "model": ("clip_path",)}


def enable_compilation_cache(directory: pathlib.Path) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


class TrainSetup:
  """Everything the train, evaluate and sample entry points share: task, mesh, state shardings."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.task = get_task(config)
    self.mesh = sharding.make_mesh(config.mesh.to_dict())
    data_ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if config.batch_size % data_ways:
      raise ConfigError(f"batch_size={config.batch_size} is not divisible by data×fsdp={data_ways} devices.")
    self.optimizer = optim.make_optimizer(config.optimizer, config.total_steps)
    self.schedule = optim.learning_rate_schedule(config.optimizer, config.total_steps)
    self.example_batch = jax.tree.map(lambda leaf: np.zeros((1,) + np.shape(leaf), np.asarray(leaf).dtype),
                                      self.task.preprocess(self.task.source("train")[0]))
    rng = jax.random.PRNGKey(config.seed)
    self.init_rng, self.train_rng = jax.random.split(rng)
    boxed_params = jax.eval_shape(self.task.init_params, self.init_rng, self.example_batch)
    param_shardings = sharding.logical_shardings(boxed_params, self.mesh)
    self.abstract_state = jax.eval_shape(self._init_state, self.init_rng)
    replicated = sharding.replicated(self.mesh)
    opt_shardings = optax.tree_map_params(
        self.optimizer, lambda _, param_sharding: param_sharding, self.abstract_state["opt_state"],
        param_shardings, transform_non_params=lambda _: replicated)
    self.state_shardings = {"step": replicated, "params": param_shardings, "ema_params": param_shardings,
                            "opt_state": opt_shardings}
    self.abstract_state = jax.tree.map(
        lambda leaf, leaf_sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding),
        self.abstract_state, self.state_shardings)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.abstract_batch = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct((config.batch_size,) + leaf.shape[1:], leaf.dtype,
                                          sharding=self.batch_sharding), self.example_batch)

  def _init_state(self, rng):
    params = nn.unbox(self.task.init_params(rng, self.example_batch))
    return {"step": jnp.zeros((), jnp.int32), "params": params, "ema_params": params,
            "opt_state": self.optimizer.init(params)}

  def init_state(self):
    return jax.jit(self._init_state, out_shardings=self.state_shardings)(self.init_rng)

  def train_step(self, state, batch):
    """One optimizer step on a global batch; returns the new state and scalar metrics."""
    step_rng = jax.random.fold_in(self.train_rng, state["step"])
    (loss, aux), grads = jax.value_and_grad(self.task.loss, has_aux=True)(state["params"], batch, step_rng)
    updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema_params = optim.update_ema(state["ema_params"], params, state["step"], self.config.optimizer.ema_decay)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": self.schedule(state["step"]), **aux}
    return {"step": state["step"] + 1, "params": params, "ema_params": ema_params,
            "opt_state": opt_state}, metrics

  def lower_train_step(self) -> jax.stages.Lowered:
    """The step traced for the sharded state and global batch (donates the state); `.compile()` it."""
    replicated = sharding.replicated(self.mesh)
    jitted = jax.jit(self.train_step, in_shardings=(self.state_shardings, self.batch_sharding),
                     out_shardings=(self.state_shardings, replicated), donate_argnums=0)
    with sharding.activation_sharding(self.mesh):
      return jitted.lower(self.abstract_state, self.abstract_batch)

  def train_iterator(self, start_step: int = 0):
    """This process's part of the global batches from step `start_step` on; `.close()` it when done."""
    data = self.config.data
    return make_train_iterator(self.task.source("train"), self.task.preprocess, self.config.batch_size,
                               self.config.seed, data.num_threads, start_step=start_step,
                               num_workers=data.num_workers)

  def device_batch(self, local_batch: dict) -> dict:
    """Process-local numpy batch → global jax.Arrays split over the data axes."""
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(self.batch_sharding, leaf),
                        local_batch)


def check_config_compatible(config: ml_collections.ConfigDict, config_path: pathlib.Path) -> None:
  """Refuses to resume from a workdir whose checkpoints were made with a different model or data config."""
  try:
    saved = json.loads(config_path.read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise CheckpointError(f"{config_path} is unreadable ({error}); cannot verify the checkpoints.") from error
  current = json.loads(config.to_json())
  for section in (saved, current):
    for key, ignored in NON_STATE_KEYS.items():
      for name in ignored:
        section.get(key, {}).pop(name, None)
  for key in STATE_DEFINING_KEYS:
    if saved.get(key) != current.get(key):
      raise CheckpointError(
          f"the checkpoints in {config_path.parent} were trained with a different '{key}' config "
          f"({saved.get(key)} vs now {current.get(key)}); use another --workdir.")


def load_trained(config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """(setup, EMA params, step) of the latest checkpoint in `workdir`, with the task's saved assets."""
  enable_compilation_cache(workdir.parent / ".jax_cache")
  setup = TrainSetup(config)
  with Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints) as checkpointer:
    step = checkpointer.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {workdir / 'checkpoints'}; train first with --workdir={workdir}")
    check_config_compatible(config, workdir / "config.json")
    state = checkpointer.restore(step, setup.abstract_state)
  setup.task.load_assets(workdir)
  return setup, state["ema_params"], step


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (or resumes) in `workdir`; returns the final evaluation metrics (empty if eval is off)."""
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  enable_compilation_cache(workdir.parent / ".jax_cache")
  setup = TrainSetup(config)
  with Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints) as checkpointer:
    state = _train_loop(config, workdir, setup, checkpointer)
  results = {}
  if config.eval.at_end:
    results = setup.task.evaluate(state["ema_params"], workdir)
    if jax.process_index() == 0:
      (workdir / "eval.json").write_text(json.dumps(results, indent=2))
  if jax.process_index() == 0:
    print(f"metrics:     {workdir / 'metrics.jsonl'} (TensorBoard: {workdir / 'tensorboard'})")
    print(f"checkpoints: {workdir / 'checkpoints'}")
    if results:
      print(f"plots:       {workdir / 'plots'}")
      print(f"evaluation:  {workdir / 'eval.json'} {json.dumps(results)}")
  return results


def _train_loop(config, workdir, setup: TrainSetup, checkpointer: Checkpointer):
  """Initialises or restores the state, then steps to `config.total_steps`; returns the final state."""
  latest = checkpointer.latest_step()
  is_main = jax.process_index() == 0
  if latest is None:
    state = setup.init_state()
    if is_main:
      (workdir / "config.json").write_text(config.to_json(indent=2))
      setup.task.save_assets(workdir)
  else:
    check_config_compatible(config, workdir / "config.json")
    state = checkpointer.restore(latest, setup.abstract_state)
    setup.task.load_assets(workdir)
    if is_main:
      print(f"resumed from step {latest} in {workdir}")
  start_step = int(state["step"])
  num_params = sum(leaf.size for leaf in jax.tree.leaves(state["params"]))
  train_step, cost = profiling.compile_with_cost(setup.lower_train_step())
  if is_main:
    print(f"{config.name}: {num_params:,} parameters, mesh {dict(setup.mesh.shape)}, "
          f"{jax.process_count()} process(es), workdir {workdir}")
    print(f"train step {cost.describe()}")
  profiling.check_fits(cost, jax.local_devices()[0], "the train step")
  data_iter = setup.train_iterator(start_step)
  profiler = profiling.StepProfiler(workdir / "profile", first_step=start_step + 2,
                                    num_steps=config.profile_steps)
  logger = MetricLogger(workdir, start_step, enabled=is_main)
  tqdm_bar = tqdm(total=config.total_steps, initial=start_step, disable=not is_main, desc="train",
                  dynamic_ncols=True)
  interval_start, interval_steps = time.perf_counter(), 0
  try:
    # Reading a loss waits for its step to finish, so step s's loss is read once step s+1 is queued
    # (and at once on log and checkpoint steps, so a NaN state is never saved).
    unchecked = None  # (step, loss) not read yet
    for step in range(start_step + 1, config.total_steps + 1):
      profiler.before_step(step)
      state, metrics = train_step(state, setup.device_batch(next(data_iter)))
      if unchecked is not None:
        _check_finite(*unchecked, checkpointer)
      unchecked = (step, metrics["loss"])
      profiler.after_step(step, metrics)
      interval_steps += 1
      tqdm_bar.update(1)
      log_now = step % config.log_every == 0 or step == config.total_steps
      save_now = step % config.checkpoint_every == 0 or step == config.total_steps
      if log_now or save_now:
        _check_finite(*unchecked, checkpointer)
        unchecked = None
      if log_now:
        elapsed = time.perf_counter() - interval_start
        logged = {name: float(value) for name, value in metrics.items()}
        logged["steps_per_sec"] = interval_steps / elapsed
        logged["examples_per_sec"] = interval_steps * config.batch_size / elapsed
        logger.write(step, logged)
        tqdm_bar.set_postfix(loss=f"{logged['loss']:.4f}")
        interval_start, interval_steps = time.perf_counter(), 0
      if save_now:
        checkpointer.save(step, state)
  finally:
    data_iter.close()
    profiler.close()
    tqdm_bar.close()
    logger.close()
  return state


def _check_finite(step: int, loss: jax.Array, checkpointer: Checkpointer) -> None:
  loss = float(loss)
  if not np.isfinite(loss):
    raise DivergenceError(f"loss is {loss} at step {step}; stopping (checkpoints up to step "
                          f"{checkpointer.latest_step()} are kept).")


if __name__ == "__main__":
  from storyjax.cli import run_cli

  run_cli(train)
