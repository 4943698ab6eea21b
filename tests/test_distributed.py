"""Multi-process training over localhost (launch/local.sh): same losses as one process, resumable across."""

import json
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, fast_compile_env

SMOKE = ["-m", "storyjax.train", "--config=configs/shapes.py:smoke", "--config.mesh.data=-1"]


def _losses(workdir) -> list[float]:
  return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _train(workdir, num_processes: int, total_steps: int, log_dir) -> None:
  """Shapes smoke on 4 CPU devices in all: 1 process × 4 or 2 processes × 2. Its BatchNorm statistics are means
  over the global batch, so they too must not depend on the split over processes."""
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


@pytest.mark.slow
def test_processes_stop_at_one_step_when_one_is_preempted(tmp_path):
  """SIGTERM to process 1 only (a scheduler preempting one host): both processes save at the same step and exit 143."""
  workdir = tmp_path / "preempted"
  coordinator = f"localhost:{_free_port()}"
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        "-m",
        "storyjax.train",
        "--config=configs/shapes.py:smoke",
        "--config.mesh.data=-1",
        "--config.total_steps=100000",
        "--config.checkpoint_every=100000",
        f"--workdir={workdir}",
      ],
      cwd=REPO_ROOT,
      env={
        **fast_compile_env(),
        "JAX_NUM_CPU_DEVICES": "2",
        "JAX_COORDINATOR_ADDRESS": coordinator,
        "STORYJAX_NUM_PROCESSES": "2",
        "STORYJAX_PROCESS_ID": str(process_id),
      },
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
    )
    for process_id in range(2)
  ]
  try:
    deadline = time.monotonic() + 240
    while not (workdir / "metrics.jsonl").is_file() or len(_losses(workdir)) < 3:
      assert time.monotonic() < deadline and all(process.poll() is None for process in processes)
      time.sleep(0.2)
    processes[1].send_signal(signal.SIGTERM)
    errors = [process.communicate(timeout=120)[1] for process in processes]
  finally:
    for process in processes:
      process.kill()
  assert [process.returncode for process in processes] == [143, 143], errors
  stopped = [re.search(r"preempted: stopped at step (\d+)", error) for error in errors]
  assert all(stopped), errors
  step = int(stopped[0].group(1))
  assert int(stopped[1].group(1)) == step
  assert [path.name for path in (workdir / "checkpoints").iterdir()] == [str(step)]
  assert len(_losses(workdir)) == step  # every step logged, the last one the saved one


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]
