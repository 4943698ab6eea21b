"""Multi-process training over localhost (launch/local.sh): same losses as one process, resumable across."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, fast_compile_env

SMOKE = ["-m", "storyjax.train", "--config=configs/director.py:smoke", "--config.mesh.data=-1"]


def _losses(workdir) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _train(workdir, num_processes: int, total_steps: int, log_dir) -> None:
  """Director smoke on 4 CPU devices in all: 1 process × 4 or 2 processes × 2."""
  args = [sys.executable, *SMOKE, f"--workdir={workdir}", f"--config.total_steps={total_steps}"]
  # Compiling is most of each run. Every run here compiles alike, and what is compared, layouts and resumes, does
  # not depend on the machine code.
  env = {**fast_compile_env(), "LOG_DIR": str(log_dir)}
  if num_processes == 1:
    command = args
    env["JAX_NUM_CPU_DEVICES"] = "4"
  else:
    command = ["bash", str(REPO_ROOT / "launch" / "local.sh"), str(num_processes), *args]
    env["DEVICES_PER_PROCESS"] = str(4 // num_processes)
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  if num_processes > 1:
    assert f"{num_processes} process(es)" in result.stdout


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across(runs_dir, tmp_path):
  """2 processes × 2 devices == 1 process × 4 devices, and checkpoints resume with the other layout."""
  two_then_one, one_then_two = runs_dir / "two_then_one", runs_dir / "one_then_two"
  _train(two_then_one, num_processes=2, total_steps=3, log_dir=tmp_path)
  _train(two_then_one, num_processes=1, total_steps=6, log_dir=tmp_path)
  _train(one_then_two, num_processes=1, total_steps=3, log_dir=tmp_path)
  _train(one_then_two, num_processes=2, total_steps=6, log_dir=tmp_path)
  first, second = _losses(two_then_one), _losses(one_then_two)
  assert len(first) == len(second) == 6
  # Steps 1-3: two processes vs one; steps 4-6: resumed from a checkpoint written by the other layout.
  np.testing.assert_allclose(first, second, rtol=1e-5)
  assert len(set(np.round(first, 4))) > 1, "losses should change from step to step"
