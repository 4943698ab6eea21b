"""Test-wide setup: 8 fake CPU devices (for sharding tests), XLA:CPU's older fusion emitters and one shared
compilation cache."""

import os
import pathlib

# Set before any backend starts: XLA:CPU's older fusion emitters compile the suite's many small programs faster
# (subprocesses get the same through fast_compile_env). XLA aborts on unknown flags: drop it if XLA drops it.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false".strip()

import jax
import pytest

from storyjax import host_memory, trainer
from storyjax import train as train_lib

jax.config.update("jax_num_cpu_devices", 8)
# The suite's many short CLI runs are compile-bound: glibc's default malloc compiles faster than the one arena
# storyjax's programs set for long runs (read when a program starts; tests/test_host_memory.py tests that setting).
os.environ[host_memory.OPT_OUT_VARIABLE] = host_memory.OPT_OUT_VALUE

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The longest test files (about 60–150 s each on 2 cores), run first: `make test` hands whole files to its two
# workers in collection order, and one of these collected last would leave the other worker idle at the end.
LONGEST_FILES = (
  "test_train.py",
  "test_medical_tasks.py",
  "test_scam_task.py",
  "test_benchmarks.py",
  "test_director.py",
  "test_config_keys_images.py",
)


def pytest_collection_modifyitems(items):
  """LONGEST_FILES first, in that order; the other files, and the tests within each file, keep their order."""
  rank = {name: index for index, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> pathlib.Path:
  """Parent of every test workdir, so all runs share `<runs_dir>/.jax_cache`."""
  return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def fast_compile():
  """XLA without LLVM's optimisations for a whole test file: its CPU compiles take about half the time.

  Numbers do not change beyond float rounding. All of the file's programs compile this way, so runs it compares
  bitwise are compiled alike; compiled programs are dropped before and after, so none crosses files.
  Use with `pytestmark = pytest.mark.usefixtures("fast_compile")`.
  """
  before = jax.config.read("jax_disable_most_optimizations")
  jax.clear_caches()
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
  jax.clear_caches()


def fast_compile_env() -> dict[str, str]:
  """The environment for a CPU subprocess that compiles in about a quarter of the time: `fast_compile`'s setting, and
  XLA:CPU's older fusion emitters (half the time again), which os.environ carries since this module set it."""
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


def train_crashing_at_step(config, workdir, crash_step: int) -> None:
  """Trains `config` in `workdir` and crashes (KeyboardInterrupt) while fetching step `crash_step`'s batch."""
  original = trainer.TrainSetup.device_batch
  calls = {"count": 0}

  def crashing_device_batch(self, local_batch):
    calls["count"] += 1
    if calls["count"] == crash_step:
      raise KeyboardInterrupt("simulated crash")
    return original(self, local_batch)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(trainer.TrainSetup, "device_batch", crashing_device_batch)
    with pytest.raises(KeyboardInterrupt):
      train_lib.train(config, workdir)
