"""The trainer's turns (storyjax/tasks/base.py TurnTask): each turn updates only its parameters with its own
optimizer, sees the earlier turns' updates and their carry, and the whole step equals a hand-written one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from storyjax import optim, trainer
from storyjax.base_config import base_config


class ToyGan:
  """A linear 'generator' (4×4) and a linear 'critic' (4,), trained in turns on fixed vectors."""

  turns = {"generator": ("generator",), "critic": ("critic",)}
  non_state_keys = {}

  def __init__(self, config):
    self.config = config
    self.examples = [{"x": np.arange(4, dtype=np.float32) * (index + 1) / 10} for index in range(16)]

  def source(self, split):
    return self.examples

  def preprocess(self, example):
    return example

  def init(self, rng, batch):
    generator_rng, critic_rng = jax.random.split(rng)
    return {
      "params": {
        "generator": {"w": jax.random.normal(generator_rng, (4, 4))},
        "critic": {"v": jax.random.normal(critic_rng, (4,))},
      }
    }

  def turn_loss(self, turn, variables, batch, rng, carry):
    params, x = variables["params"], batch["x"]
    if turn == "generator":
      fake = x @ params["generator"]["w"]
      loss = jnp.mean((fake - x) ** 2) - jnp.mean(fake @ params["critic"]["v"])
      return loss, {"fake_mean": fake.mean()}, {}, fake
    critic = params["critic"]["v"]
    loss = jnp.mean(jax.nn.relu(1 - x @ critic)) + jnp.mean(jax.nn.relu(1 + carry @ critic))
    return loss, {}, {}, None

  def evaluate(self, variables, workdir, quick=False):
    return {}

  def save_assets(self, workdir):
    pass

  def load_assets(self, workdir):
    pass


def toy_config():
  config = base_config("toy", "smoke", task="toy", variants=("smoke",))
  config.mesh.update({"data": 1})
  config.batch_size = 4
  config.optimizer.update({"warmup_steps": 0, "learning_rate": 1e-2})
  config.optimizer.turns = {"critic": {"learning_rate": 4e-2, "b1": 0.5}}
  return config


def test_turns_update_in_order_with_their_own_optimizers():
  config = toy_config()
  setup = trainer.TrainSetup(ToyGan(config), config)
  state = setup.init_state()
  assert set(state["opt_state"]) == {"generator", "critic"}
  batch = {"x": np.stack([example["x"] for example in setup.task.examples[:4]])}
  initial = jax.tree.map(np.asarray, state["params"])
  new_state, metrics = jax.jit(setup.train_step)(state, batch)

  # By hand: the generator's AdamW step on its loss (critic fixed), then the critic's on the fakes made before
  # the generator moved, with the critic's learning rate and b1.
  def generator_loss(w):
    fake = batch["x"] @ w
    return jnp.mean((fake - batch["x"]) ** 2) - jnp.mean(fake @ initial["critic"]["v"]), fake

  (generator_value, fake), generator_grads = jax.value_and_grad(generator_loss, has_aux=True)(initial["generator"]["w"])
  critic_loss = lambda v: jnp.mean(jax.nn.relu(1 - batch["x"] @ v)) + jnp.mean(jax.nn.relu(1 + fake @ v))
  critic_value, critic_grads = jax.value_and_grad(critic_loss)(initial["critic"]["v"])

  def adamw_step(turn, param, grad):
    turn_config = optim.turn_config(config.optimizer, turn)
    assert turn_config.learning_rate == {"generator": 1e-2, "critic": 4e-2}[turn]
    transform = optax.chain(
      optax.clip_by_global_norm(turn_config.grad_clip_norm),
      optax.adamw(turn_config.learning_rate, b1=turn_config.b1, b2=turn_config.b2, eps=turn_config.eps,
                  weight_decay=turn_config.weight_decay),
    )  # fmt: skip
    updates, _ = transform.update(grad, transform.init(param), param)
    return optax.apply_updates(param, updates)

  # The schedule's first step has lr = peak × (cosine at step 0) = peak: warm-up is 0.
  np.testing.assert_allclose(new_state["params"]["generator"]["w"], adamw_step("generator", initial["generator"]["w"],
                             generator_grads), rtol=1e-6)  # fmt: skip
  np.testing.assert_allclose(
    new_state["params"]["critic"]["v"], adamw_step("critic", initial["critic"]["v"], critic_grads), rtol=1e-6
  )
  np.testing.assert_allclose(metrics["generator/loss"], generator_value, rtol=1e-6)
  np.testing.assert_allclose(metrics["critic/loss"], critic_value, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], generator_value + critic_value, rtol=1e-6)
  np.testing.assert_allclose(metrics["generator/fake_mean"], fake.mean(), rtol=1e-6)
  assert {"generator/lr", "critic/lr", "generator/grad_norm", "critic/grad_norm"} <= set(metrics)


def test_turns_must_split_the_parameters_and_overrides_must_be_optimizer_keys():
  config = toy_config()
  task = ToyGan(config)
  task.turns = {"generator": ("generator",)}
  with pytest.raises(TypeError, match="each top-level parameter"):
    trainer.TrainSetup(task, config)
  config.optimizer.turns = {"critic": {"learning_rat": 1.0}}
  with pytest.raises(Exception, match=r"optimizer\.turns\.critic\.learning_rat"):
    trainer.TrainSetup(ToyGan(config), config)
