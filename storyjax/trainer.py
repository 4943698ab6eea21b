"""The trainer library: builds the sharded train state for any task, runs the loop, restores runs for inference.

It imports no task: callers hand one in (storyjax/tasks/base.py is the contract). The train state is a plain dict
{'step', 'params', 'ema_params', 'opt_state'} plus 'model_state' (the model's mutable collections, e.g. BatchNorm's
'batch_stats') when it has any; a TurnTask (a GAN) has one optimizer state per turn, {turn: opt_state}. It is
created directly sharded (eval_shape → logical shardings → jit(init)); the step is jitted with explicit in/out
shardings and donates the old state. Data order depends only on (seed, step),
so a restart resumes exactly.
"""

import collections
import contextlib
import json
import pathlib
import time
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from storyjax import optim, profiling, sharding
from storyjax import workdir as workdir_lib
from storyjax.checkpoint import Checkpointer
from storyjax.data.pipeline import Prefetcher, make_train_iterator
from storyjax.errors import CheckpointError, ConfigError, DivergenceError, Preempted, WorkdirInUse
from storyjax.metric_logger import MetricLogger
from storyjax.preemption import PreemptionWatch

if TYPE_CHECKING:  # the registry imports this module to load runs
  from storyjax.tasks.base import Task

# Config sections whose change makes an existing checkpoint unusable, less the keys that do not shape the train
# state: the loop's own below, and each task's `non_state_keys`.
STATE_DEFINING_KEYS = ("task", "model", "data")
LOOP_NON_STATE_KEYS = {"data": ("num_threads", "num_workers", "prefetch_to_device")}
# Steps the host may run ahead of the devices: the loss of step s is read (checked finite) once step s + LAG is
# queued, so reading it never waits, while a diverged run stops within LAG steps.
LOSS_CHECK_LAG = 2


def enable_compilation_cache(directory: pathlib.Path) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _split_variables(variables: dict) -> tuple[dict, dict]:
  """Flax variables → (params, the other collections)."""
  return variables["params"], {name: value for name, value in variables.items() if name != "params"}


class ModelSetup:
  """A task's model on the device mesh: example batch, abstract variables and their shardings.

  What inference needs; TrainSetup adds the optimizer.
  """

  def __init__(self, task: "Task", config: ml_collections.ConfigDict):
    self.config, self.task = config, task
    self.mesh = sharding.make_mesh(config.mesh)
    self.example_batch = jax.tree.map(
      lambda leaf: np.zeros((1,) + np.shape(leaf), np.asarray(leaf).dtype), task.preprocess(task.source("train")[0])
    )
    self.init_rng, self.train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    boxed_variables = jax.eval_shape(task.init, self.init_rng, self.example_batch)
    if "params" not in boxed_variables:
      raise TypeError(
        f"{type(task).__name__}.init must return Flax variables with a 'params' collection, got "
        f"{sorted(boxed_variables)}"
      )
    self.abstract_variables = nn.unbox(boxed_variables)
    param_shardings, model_state_shardings = _split_variables(sharding.logical_shardings(boxed_variables, self.mesh))
    self.param_shardings, self.model_state_shardings = param_shardings, model_state_shardings
    self.replicated = sharding.replicated(self.mesh)
    self.batch_sharding = sharding.batch_sharding(self.mesh)

  @property
  def has_model_state(self) -> bool:
    return bool(self.model_state_shardings)

  def variables(self, state: dict, ema: bool = True) -> dict:
    """The Flax variables of a (train or inference) state: EMA or raw parameters with the mutable collections."""
    return {"params": state["ema_params" if ema else "params"], **state.get("model_state", {})}

  def abstract_inference_state(self) -> dict:
    """Shapes, dtypes and shardings of {step, ema_params, model_state}: what inference restores."""
    params, model_state = _split_variables(self.abstract_variables)
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32), "ema_params": params}
    shardings = {"step": self.replicated, "ema_params": self.param_shardings}
    if model_state:
      abstract["model_state"], shardings["model_state"] = model_state, self.model_state_shardings
    return jax.tree.map(
      lambda leaf, leaf_sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding),
      abstract,
      shardings,
    )


class TrainSetup(ModelSetup):
  """Everything the train loop needs: optimizer, state shardings, the jitted step, the data iterator."""

  def __init__(self, task: "Task", config: ml_collections.ConfigDict):
    super().__init__(task, config)
    data_ways = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if config.batch_size % data_ways:
      raise ConfigError(f"batch_size={config.batch_size} is not divisible by data×fsdp={data_ways} devices.")
    # A TurnTask gets one optimizer per turn, over its parameters; any other task one optimizer over all.
    self.turns = _checked_turns(task, self.abstract_variables["params"])
    if config.optimizer.schedule == "plateau" and (self.turns or config.eval_every <= 0):
      raise ConfigError(
        "optimizer.schedule='plateau' follows the quick evaluations: it needs eval_every > 0 and one optimizer "
        "(not a task trained in turns)."
      )
    turn_configs = {turn: optim.turn_config(config.optimizer, turn) for turn in self.turns or ("",)}
    self.optimizers = {turn: optim.make_optimizer(turn_configs[turn], config.total_steps) for turn in turn_configs}
    self.schedules = {
      turn: optim.learning_rate_schedule(turn_configs[turn], config.total_steps) for turn in turn_configs
    }
    abstract_state = jax.eval_shape(self._init_state, self.init_rng)
    opt_shardings = self._per_optimizer(
      lambda turn, optimizer, params: optax.tree_map_params(
        optimizer,
        lambda _, param_sharding: param_sharding,
        abstract_state["opt_state"][turn] if self.turns else abstract_state["opt_state"],
        params,
        transform_non_params=lambda _: self.replicated,
      ),
      self.param_shardings,
    )
    self.state_shardings = {
      "step": self.replicated,
      "params": self.param_shardings,
      "ema_params": self.param_shardings,
      "opt_state": opt_shardings,
    }
    if self.has_model_state:
      self.state_shardings["model_state"] = self.model_state_shardings
    self.abstract_state = jax.tree.map(
      lambda leaf, leaf_sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding),
      abstract_state,
      self.state_shardings,
    )
    self.abstract_batch = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(
        (config.batch_size,) + leaf.shape[1:], leaf.dtype, sharding=self.batch_sharding
      ),
      self.example_batch,
    )

  def _per_optimizer(self, fn, params):
    """fn(turn, optimizer, that optimizer's parameters) for each optimizer: {turn: …} for a TurnTask, else one."""
    if not self.turns:
      return fn("", self.optimizers[""], params)
    return {
      turn: fn(turn, self.optimizers[turn], {name: params[name] for name in names})
      for turn, names in self.turns.items()
    }

  def _init_state(self, rng):
    params, model_state = _split_variables(nn.unbox(self.task.init(rng, self.example_batch)))
    state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "ema_params": params,
      "opt_state": self._per_optimizer(lambda _, optimizer, turn_params: optimizer.init(turn_params), params),
    }
    if model_state:
      state["model_state"] = model_state
    return state

  def init_state(self):
    return jax.jit(self._init_state, out_shardings=self.state_shardings)(self.init_rng)

  def train_step(self, state, batch):
    """One optimizer step on a global batch; returns the new state and scalar metrics.

    Mutable collections are computed on the global batch (under jit, BatchNorm's batch statistics are means over
    every data-parallel shard), so they agree however the batch is split over devices.
    """
    step_rng = jax.random.fold_in(self.train_rng, state["step"])
    if self.turns:
      params, opt_state, model_state, metrics = self._turns_step(state, batch, step_rng)
    else:

      def loss_fn(params):
        variables = {"params": params, **state.get("model_state", {})}
        loss, metrics, model_state = self.task.loss(variables, batch, step_rng)
        return loss, (metrics, model_state)

      (loss, (aux, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
      updates, opt_state = self.optimizers[""].update(grads, state["opt_state"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      learning_rate = self.schedules[""](state["step"]) * optim.learning_rate_scale(opt_state)
      metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": learning_rate, **aux}
    ema_params = optim.update_ema(state["ema_params"], params, state["step"], self.config.optimizer.ema_decay)
    new_state = {"step": state["step"] + 1, "params": params, "ema_params": ema_params, "opt_state": opt_state}
    if self.has_model_state:
      new_state["model_state"] = model_state
    return new_state, metrics

  def _turns_step(self, state, batch, step_rng):
    """A TurnTask's turns in order, each differentiating its loss w.r.t. its own parameters and updating them
    before the next turn runs; metrics are per turn ("<turn>/loss", ...) and "loss" is the sum of the turns'."""
    params, model_state = state["params"], state.get("model_state", {})
    opt_state, metrics, carry = {}, {"loss": 0.0}, None
    for turn_index, (turn, names) in enumerate(self.turns.items()):
      rng = jax.random.fold_in(step_rng, turn_index)
      loss_fn = self._turn_loss_fn(turn, params, model_state, batch, rng, carry)
      turn_params = {name: params[name] for name in names}
      (loss, (aux, model_state, carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(turn_params)
      updates, opt_state[turn] = self.optimizers[turn].update(grads, state["opt_state"][turn], turn_params)
      params = {**params, **optax.apply_updates(turn_params, updates)}
      metrics["loss"] += loss
      turn_metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": self.schedules[turn](state["step"])}
      metrics.update({f"{turn}/{name}": value for name, value in {**turn_metrics, **aux}.items()})
    return params, opt_state, model_state, metrics

  def _turn_loss_fn(self, turn, params, model_state, batch, rng, carry):
    """turn_params → (loss, (metrics, model_state, carry)) with the other parameters held fixed."""

    def loss_fn(turn_params):
      variables = {"params": {**params, **turn_params}, **model_state}
      loss, metrics, new_model_state, new_carry = self.task.turn_loss(turn, variables, batch, rng, carry)
      return loss, (metrics, new_model_state, new_carry)

    return loss_fn

  def plateau_step(self, opt_state, evaluated: dict, step: int):
    """The optimizer state after the quick evaluation `evaluated` at `step` (the "plateau" schedule)."""
    metric = self.config.optimizer.plateau.metric
    if metric not in evaluated:
      raise ConfigError(
        f"optimizer.plateau.metric={metric!r} is not a quick-evaluation metric; choose one of {sorted(evaluated)}."
      )
    updated = optim.plateau_step(opt_state, float(evaluated[metric]), step, self.config.optimizer)
    return jax.device_put(updated, self.state_shardings["opt_state"])

  def lower_train_step(self) -> jax.stages.Lowered:
    """The step traced for the sharded state and global batch (donates the state); `.compile()` it."""
    jitted = jax.jit(
      self.train_step,
      in_shardings=(self.state_shardings, self.batch_sharding),
      out_shardings=(self.state_shardings, self.replicated),
      donate_argnums=0,
    )
    with sharding.activation_sharding(self.mesh):
      return jitted.lower(self.abstract_state, self.abstract_batch)

  def train_iterator(self, start_step: int = 0):
    """This process's part of the global batches from step `start_step` on; `.close()` it when done."""
    data = self.config.data
    return make_train_iterator(
      self.task.source("train"),
      self.task.preprocess,
      self.config.batch_size,
      self.config.seed,
      data.num_threads,
      start_step=start_step,
      num_workers=data.num_workers,
    )

  def device_batches(self, start_step: int = 0) -> Prefetcher:
    """train_iterator's batches as global device arrays, data.prefetch_to_device batches transferred ahead."""
    return Prefetcher(self.train_iterator(start_step), self.device_batch, self.config.data.prefetch_to_device)

  def device_batch(self, local_batch: dict) -> dict:
    """Process-local numpy batch → global jax.Arrays split over the data axes."""
    return jax.tree.map(lambda leaf: jax.make_array_from_process_local_data(self.batch_sharding, leaf), local_batch)


def _checked_turns(task: "Task", params: dict) -> dict[str, tuple[str, ...]] | None:
  """A TurnTask's `turns`, checked to split the top-level parameters exactly; None for a one-loss task."""
  turns = getattr(task, "turns", None)
  if turns is None:
    return None
  assigned = [name for names in turns.values() for name in names]
  if sorted(assigned) != sorted(params):
    raise TypeError(
      f"{type(task).__name__}.turns {turns} must assign each top-level parameter {sorted(params)} to one turn."
    )
  return dict(turns)


def check_config_compatible(task: "Task", config: ml_collections.ConfigDict, config_path: pathlib.Path) -> None:
  """Refuses to resume from a workdir whose checkpoints were made with a different model or data config."""
  try:
    saved = json.loads(config_path.read_text())
  except (OSError, json.JSONDecodeError) as error:
    raise CheckpointError(f"{config_path} is unreadable ({error}); cannot verify the checkpoints.") from error
  current = json.loads(config.to_json())
  for ignored_keys in (LOOP_NON_STATE_KEYS, task.non_state_keys):
    for section_name, names in ignored_keys.items():
      for section in (saved, current):
        for name in names:
          section.get(section_name, {}).pop(name, None)
  for key in STATE_DEFINING_KEYS:
    if saved.get(key) != current.get(key):
      raise CheckpointError(
        f"the checkpoints in {config_path.parent} were trained with a different '{key}' config "
        f"({saved.get(key)} vs now {current.get(key)}); use another --workdir."
      )


def restore_for_inference(task: "Task", config: ml_collections.ConfigDict, workdir: pathlib.Path):
  """(setup, EMA variables, step) of the latest checkpoint in `workdir`, with the task's saved assets.

  Reads only the step, the EMA parameters and the mutable collections: no optimizer is built and the
  optimizer state is never read. Safe while a training run writes to `workdir`: Orbax publishes a step only once
  it is complete, and a step deleted while it was read is replaced by the newest.
  """
  workdir = pathlib.Path(workdir).absolute()
  checkpoints = workdir / "checkpoints"
  step = Checkpointer.latest_step_in(checkpoints)
  if step is None:
    raise CheckpointError(f"no checkpoint in {checkpoints}; train first with --workdir={workdir}")
  check_config_compatible(task, config, workdir / "config.json")
  enable_compilation_cache(workdir.parent / ".jax_cache")
  setup = ModelSetup(task, config)
  while True:
    try:
      state = Checkpointer.restore_subset(checkpoints, step, setup.abstract_inference_state())
      break
    except CheckpointError:
      # A training run in this workdir may have deleted the step (keep_checkpoints) while it was read: read the
      # newer one. A step that is still there is corrupt.
      newest = Checkpointer.latest_step_in(checkpoints)
      if newest is None or newest == step or (checkpoints / str(step)).is_dir():
        raise
      step = newest
  task.load_assets(workdir)
  return setup, setup.variables(state), step


def train(task: "Task", config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Trains (or resumes) `task` in `workdir`; returns the final evaluation metrics (empty if eval is off).

  Holds the workdir's lock throughout (WorkdirInUse if another run has it). What can refuse the run (the device
  mesh, the lock, checkpoints from another config or unreadable, the step's memory) does so before any existing
  file of the workdir changes. On SIGTERM it saves at the step it stopped and raises Preempted.
  """
  sharding.make_mesh(config.mesh)  # a mesh the devices cannot form is refused before the workdir is made
  with workdir_lib.created(workdir) as workdir, _exclusive(workdir):
    enable_compilation_cache(workdir.parent / ".jax_cache")
    checkpoints = workdir / "checkpoints"
    if jax.process_index() == 0:
      workdir_lib.remove_unfinished_saves(checkpoints)
    with Checkpointer(checkpoints, keep=config.keep_checkpoints) as checkpointer:
      if checkpointer.latest_step() is not None:
        check_config_compatible(task, config, workdir / "config.json")
      setup = TrainSetup(task, config)
      with PreemptionWatch() as preemption:
        state = _train_loop(config, workdir, setup, checkpointer, preemption)
    results = {}
    if config.eval.at_end:
      results = task.evaluate(setup.variables(state), workdir)
      if jax.process_index() == 0:
        (workdir / "eval.json").write_text(json.dumps(results, indent=2))
  if jax.process_index() == 0:
    print(f"metrics:     {workdir / 'metrics.jsonl'} (TensorBoard: {workdir / 'tensorboard'})")
    print(f"checkpoints: {workdir / 'checkpoints'}")
    plots = workdir / "plots"
    if plots.is_dir() and any(plots.iterdir()):
      print(f"plots:       {plots}")
    if results:
      print(f"evaluation:  {workdir / 'eval.json'} {json.dumps(results)}")
  return results


@contextlib.contextmanager
def _exclusive(workdir: pathlib.Path):
  """Holds `workdir`'s lock (process 0 takes it; every process stops if it could not)."""
  lock, refused = workdir_lib.Lock(workdir), None
  if jax.process_index() == 0:
    try:
      lock.acquire()
    except WorkdirInUse as error:
      refused = error
  if jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(np.int32(refused is not None)):
    refused = refused or WorkdirInUse(f"{workdir} is in use by another training run (see process 0's message).")
  if refused:
    raise refused
  try:
    yield
  finally:
    lock.release()


def _train_loop(config, workdir, setup: TrainSetup, checkpointer: Checkpointer, preemption: PreemptionWatch):
  """Initialises or restores the state, then steps to `config.total_steps`; returns the final state.

  Stops early, after saving, when `preemption` asks (raises Preempted)."""
  task = setup.task
  latest = checkpointer.latest_step()
  is_main = jax.process_index() == 0
  if latest is None:
    state = setup.init_state()
    if is_main:
      (workdir / "config.json").write_text(config.to_json(indent=2))
      task.save_assets(workdir)
  else:
    state = checkpointer.restore(latest, setup.abstract_state)
    task.load_assets(workdir)
    if is_main:
      print(f"resumed from step {latest} in {workdir}")
  start_step = int(state["step"])
  num_params = sum(leaf.size for leaf in jax.tree.leaves(state["params"]))
  train_step, cost = profiling.compile_with_cost(setup.lower_train_step())
  if is_main:
    print(
      f"{config.name}: {num_params:,} parameters, mesh {dict(setup.mesh.shape)}, "
      f"{jax.process_count()} process(es), workdir {workdir}"
    )
    print(f"train step {cost.describe()}")
  profiling.check_fits(cost, jax.local_devices()[0], "the train step")
  batches = setup.device_batches(start_step)
  profiler = profiling.StepProfiler(workdir / "profile", first_step=start_step + 2, num_steps=config.profile_steps)
  logger = MetricLogger(workdir, start_step, enabled=is_main)
  tqdm_bar = tqdm(total=config.total_steps, initial=start_step, disable=not is_main, desc="train", dynamic_ncols=True)
  postfix = {}
  interval_start, interval_steps = time.perf_counter(), 0
  try:
    # Reading a loss waits for its step to finish, so it is read LOSS_CHECK_LAG steps later (and at once on log,
    # evaluation and checkpoint steps, so a NaN state is never saved or evaluated).
    unchecked = collections.deque()  # (step, loss) not read yet
    for step in range(start_step + 1, config.total_steps + 1):
      profiler.before_step(step)
      state, metrics = train_step(state, next(batches))
      unchecked.append((step, metrics["loss"]))
      if len(unchecked) > LOSS_CHECK_LAG:
        _check_finite(*unchecked.popleft(), checkpointer)
      profiler.after_step(step, metrics)
      interval_steps += 1
      tqdm_bar.update(1)
      preempted = preemption.stop_after(step)
      is_last = step == config.total_steps or preempted
      log_now = step % config.log_every == 0 or is_last
      eval_now = config.eval_every > 0 and step % config.eval_every == 0
      save_now = step % config.checkpoint_every == 0 or is_last
      if log_now or eval_now or save_now:
        while unchecked:
          _check_finite(*unchecked.popleft(), checkpointer)
      logged = {}
      if log_now:
        elapsed = time.perf_counter() - interval_start
        logged = {name: float(value) for name, value in metrics.items()}
        logged["steps_per_sec"] = interval_steps / elapsed
        logged["examples_per_sec"] = interval_steps * config.batch_size / elapsed
        postfix["loss"] = f"{logged['loss']:.4f}"
      if eval_now:
        eval_start = time.perf_counter()
        evaluated = task.evaluate(setup.variables(state), workdir, quick=True)
        interval_start += time.perf_counter() - eval_start  # steps_per_sec counts training time only
        if config.optimizer.schedule == "plateau":
          state["opt_state"] = setup.plateau_step(state["opt_state"], evaluated, step)
        logged.update(
          {f"eval/{name}": float(value) for name, value in evaluated.items() if isinstance(value, (int, float))}
        )
        postfix.update({name: f"{value:.3f}" for name, value in evaluated.items() if isinstance(value, float)})
      if logged:
        logger.write(step, logged)
        tqdm_bar.set_postfix(postfix)
      if log_now:
        interval_start, interval_steps = time.perf_counter(), 0
      if save_now:
        checkpointer.save(step, state)
      if preempted:
        raise Preempted(step, workdir)
  finally:
    batches.close()
    profiler.close()
    tqdm_bar.close()
    logger.close()
  return state


def _check_finite(step: int, loss: jax.Array, checkpointer: Checkpointer) -> None:
  loss = float(loss)
  if not np.isfinite(loss):
    raise DivergenceError(
      f"loss is {loss} at step {step}; stopping (checkpoints up to step {checkpointer.latest_step()} are kept)."
    )
