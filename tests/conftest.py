"""Test-wide setup: 8 fake CPU devices (for sharding tests) and one shared compilation cache."""
import pathlib

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> pathlib.Path:
  """Parent of every test workdir, so all runs share `<runs_dir>/.jax_cache`."""
  return tmp_path_factory.mktemp("runs")
