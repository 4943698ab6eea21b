"""Misuse and faults: every config and every CLI answers bad input with one `error:` line (exit 1, no traceback)
and leaves existing runs byte-identical; the workdir lock; SIGTERM preemption (save, exit, bit-exact resume)."""

import hashlib
import importlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading

import ml_collections
import pytest
from test_configs import CONFIG_FILES, PROGRAM_CONFIGS

from storyjax import base_config, trainer
from storyjax import train as train_lib
from storyjax import workdir as workdir_lib
from storyjax.errors import ConfigError, Preempted, WorkdirInUse
from storyjax.tasks import get_task

from conftest import REPO_ROOT, fast_compile_env

pytestmark = pytest.mark.usefixtures("fast_compile")

PROGRAM_MODULES = {"clustering": "storyjax.cluster"}  # the program each of PROGRAM_CONFIGS runs with
MISSING = "/nonexistent/storyjax"


def smoke(name: str) -> ml_collections.ConfigDict:
  return importlib.import_module(f"configs.{name}").get_config("smoke")


def leaves(config: ml_collections.ConfigDict, prefix: str = ""):
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, f"{prefix}{name}.")
    else:
      yield prefix + name, value


def size_keys(config: ml_collections.ConfigDict) -> list[str]:
  """The integer keys that are sizes, counts or intervals (must be ≥ 1), model's first."""
  keys = [
    key
    for key, value in leaves(config)
    if type(value) is int and not key.startswith("mesh.") and base_config.least_integer(key.split(".")[-1]) == 1
  ]
  return sorted(keys, key=lambda key: (not key.startswith("model."), key))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_size_rejects_zero_and_negatives(name):
  """Each integer size, count or interval of each config: 0 and -1 are ConfigErrors naming the key."""
  config = smoke(name)
  base_config.check_values(config)
  for key in size_keys(config):
    for bad in (0, -1):
      changed = smoke(name)
      *sections, leaf = key.split(".")
      section = changed
      for part in sections:
        section = section[part]
      section[leaf] = bad
      with pytest.raises(ConfigError, match=rf"^{key}={bad}: it must be a positive integer"):
        base_config.check_values(changed)


def test_probabilities_rates_and_nan_are_checked():
  config = smoke("director")
  for key, value, message in (
    ("model.dropout_rate", 1.5, "probability, decay or coherence in"),
    ("optimizer.learning_rate", 0.0, "must be > 0"),
    ("optimizer.learning_rate", float("nan"), "is NaN"),
    ("sample.char_index", -2, "an integer ≥ -1"),
  ):
    changed = config.copy_and_resolve_references()
    section, leaf = key.split(".")
    changed[section][leaf] = value
    with pytest.raises(ConfigError, match=message):
      base_config.check_values(changed)


# ---- the table: every config and every CLI, through the command line ---------------------------------------------


def cli_modules() -> set[str]:
  """Every `python -m` program under storyjax/ (a package's __main__.py, or a module with a __main__ block)."""
  modules = set()
  for path in (REPO_ROOT / "storyjax").rglob("*.py"):
    module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if path.name == "__main__.py":
      modules.add(module.removesuffix(".__main__"))
    elif 'if __name__ == "__main__":' in path.read_text() and not (path.parent / "__main__.py").exists():
      modules.add(module)
  return modules


# Rows of every CLI that are not per config: (module, args, what the error line must contain).
CLI_ROWS = {
  "storyjax.train": [
    ([], "--config"),
    (["--config=configs/no_such_model.py"], "cannot load --config=configs/no_such_model.py"),
    (["--config=configs/shapes.py:smoke", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    (["--config=configs/shapes.py:smoke", "stray"], "unexpected arguments ['stray']"),
  ],
  "storyjax.evaluate": [
    (["--config=configs/shapes.py:smoke", f"--workdir={MISSING}"], f"no checkpoint in {MISSING}/checkpoints"),
    (["--config=configs/shapes.py:smoke", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
  ],
  "storyjax.sample": [
    (["--config=configs/director.py:smoke", f"--workdir={MISSING}"], "give at least one --prompt"),
    (["--config=configs/director.py:smoke", f"--workdir={MISSING}", "--prompt=x"], "no checkpoint in"),
    (
      ["--config=configs/shapes.py:smoke", "--prompt=x"],
      "task 'shapes' cannot generate (it has no `sample`); tasks that can: ['director', 'rin']",
    ),
    (["--config=configs/director.py:smoke", "--prompt=x", "--num_samples=0"], "--num_samples=0"),
  ],
  "storyjax.cluster": [
    (
      ["--config=configs/clustering.py:smoke", "--config.data.source=files", f"--config.data.root={MISSING}"],
      MISSING,
    ),
  ],
  "storyjax.visualize": [
    (["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
    ([f"--samples={MISSING}/samples.npz"], f"{MISSING}/samples.npz"),
    ([f"--et_root={MISSING}", "--sample_id=some_id"], f"E.T. dataset directory not found: {MISSING}"),
    (["--frustum_every=0"], "--frustum_every=0"),
  ],
  "storyjax.qa": [
    ([f"--data={MISSING}"], MISSING),
    ([f"--data={MISSING}", "--num_questions=-5"], "--num_questions=-5"),
  ],
  "storyjax.data.et": [
    ([f"--path={MISSING}"], f"E.T. dataset directory not found: {MISSING}"),
    ([f"--path={MISSING}", f"--export={MISSING}"], "give exactly one of --path"),
    (
      [f"--path={MISSING}", f"--prepare={MISSING}/out", "--retag", "--seed=1"],
      "--retag goes with --path=DIR; --seed goes with --export=DIR, not --path=DIR --prepare=OUT",
    ),
    ([f"--export={MISSING}", f"--prepare={MISSING}/out"], "--prepare=OUT goes with --path=DIR"),
    ([f"--export={MISSING}", "--train_size=0"], "--train_size=0"),
  ],
  "storyjax.data.images.cache_latents": [
    (
      [f"--vae={MISSING}", f"--input={MISSING}", f"--output={MISSING}"],
      f"no Stable Diffusion VAE checkpoint at {MISSING}",
    ),
    (["--batch_size=0"], "--batch_size=0"),
  ],
}


def test_the_table_covers_every_cli():
  assert cli_modules() == set(CLI_ROWS), "add rows for the new CLI to CLI_ROWS"


@pytest.fixture(scope="module")
def runs(runs_dir) -> dict[str, pathlib.Path]:
  """A trained shapes smoke run (checkpoints at 3 and 6) and copies of it spoiled in each way a user meets."""
  trained = runs_dir / "misuse_shapes"
  train_lib.train(smoke("shapes"), trained)
  spoiled = {name: runs_dir / f"misuse_{name}" for name in ("other_model", "corrupt_config", "truncated", "locked")}
  for workdir in spoiled.values():
    shutil.copytree(trained, workdir)
  (spoiled["other_model"] / "config.json").write_text(smoke("director").to_json(indent=2))
  (spoiled["corrupt_config"] / "config.json").write_text('{"task": "shapes", "model": {')
  for path in (spoiled["truncated"] / "checkpoints" / "6" / "state").rglob("d/*"):  # the arrays' data files
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  return {"shapes": trained, **spoiled}


def config_rows(name: str, runs: dict[str, pathlib.Path]) -> list[tuple[str, list[str], str | tuple[str, ...]]]:
  """(module, args, expected) for the misuse of one config, each row of issue 19's list that applies to it; the
  error line must contain `expected` (or one of them)."""
  config = smoke(name)
  spec = f"--config=configs/{name}.py:smoke"
  size = size_keys(config)[0]
  module = PROGRAM_MODULES[name] if name in PROGRAM_CONFIGS else "storyjax.train"
  rows = [
    (module, [spec, "--config.no_such_key=1"], "the config has no key 'no_such_key'"),
    (module, [f"--config=configs/{name}.py:no_such_variant"], "variant 'no_such_variant'"),
    (module, [spec, f"--config.{size}=abc"], f"--config.{size}=abc"),
    (module, [spec, f"--config.{size}=0"], f"{size}=0: it must be a positive integer"),
    (module, [spec, f"--config.{size}=-5"], f"{size}=-5: it must be a positive integer"),
  ]
  if name in PROGRAM_CONFIGS:
    return rows
  other_model = runs["other_model" if config.task == "shapes" else "shapes"]
  # Paths the data and model read as they are built (a run's helper workdirs, eval.*_workdir, are read when it
  # evaluates): missing, each is an error line naming the key or the path, whatever source the config uses.
  path_keys = [
    key
    for key, value in leaves(config)
    if isinstance(value, str) and key.split(".")[0] in ("data", "model") and key.endswith(("path", "root", "data_dir"))
  ]
  rows += [(module, [spec, f"--config.{key}={MISSING}"], (key, MISSING)) for key in path_keys]
  return rows + [
    (module, [spec, "--config.batch_size=0"], "batch_size=0: it must be a positive integer"),
    (module, [spec, "--config.total_steps=-5"], "total_steps=-5: it must be a positive integer"),
    (module, [spec, "--config.mesh.fsdp=3"], "1 device(s) cannot be split into mesh"),
    (module, [spec, "--workdir=/dev/null/run"], "cannot create --workdir=/dev/null/run"),
    (module, [spec, f"--workdir={other_model}"], "trained with a different 'task' config"),
    (module, [spec, f"--workdir={runs['corrupt_config']}"], "config.json is unreadable"),
    ("storyjax.evaluate", [spec, f"--workdir={other_model}"], "trained with a different 'task' config"),
    ("storyjax.evaluate", [spec, f"--workdir={runs['corrupt_config']}"], "config.json is unreadable"),
  ]


def snapshot(directories) -> dict[str, str]:
  return {
    str(path): hashlib.sha256(path.read_bytes()).hexdigest()
    for directory in directories
    for path in sorted(directory.rglob("*"))
    if path.is_file()
  }


@pytest.mark.slow
def test_every_config_and_cli_answers_misuse_with_one_error_line(runs, tmp_path):
  spec = "--config=configs/shapes.py:smoke"
  rows = [row for name in CONFIG_FILES for row in config_rows(name, runs)]
  rows += [(module, args, expected) for module, module_rows in CLI_ROWS.items() for args, expected in module_rows]
  rows += [
    ("storyjax.train", [spec, f"--workdir={runs['truncated']}"], "it is corrupt or was written by an incompatible"),
    ("storyjax.evaluate", [spec, f"--workdir={runs['truncated']}"], "it is corrupt or was written by an incompat"),
    ("storyjax.train", [spec, f"--workdir={runs['locked']}"], "is in use by another training run (PID"),
  ]
  before = snapshot(runs.values())
  (tmp_path / "configs").symlink_to(REPO_ROOT / "configs")  # commands without --workdir would write to ./runs
  with workdir_lib.Lock(runs["locked"]):
    answers = subprocess.run(
      [sys.executable, str(REPO_ROOT / "tests" / "cli_rows.py")],
      input=json.dumps([{"module": module, "args": args} for module, args, _ in rows]),
      cwd=tmp_path,
      env=fast_compile_env(),
      capture_output=True,
      text=True,
      timeout=600,
      check=True,
    )
  assert snapshot(runs.values()) == before, "a refused command changed an existing run"
  failures = []
  for (module, args, expected), answer in zip(rows, json.loads(answers.stdout), strict=True):
    lines = answer["stderr"].strip().splitlines()
    texts = (expected,) if isinstance(expected, str) else expected
    named = bool(lines) and any(text in lines[0] for text in texts)
    if answer["code"] != 1 or len(lines) != 1 or not lines[0].startswith("error: ") or not named:
      failures.append(f"python -m {module} {' '.join(args)} → {answer['code']}: {answer['stderr'][-600:]}")
  assert not failures, "\n".join(failures)
  made = [  # compiled programs may be cached beside the workdir; nothing else
    str(path.relative_to(tmp_path)) for path in tmp_path.rglob("runs/*") if path.name != ".jax_cache"
  ]
  assert not made, f"refused commands made {made}"


# ---- the lock and preemption, in process ---------------------------------------------------------------------


def test_a_second_run_is_refused_and_a_stale_lock_taken_over(runs, runs_dir):
  workdir = runs_dir / "misuse_lock"
  shutil.copytree(runs["shapes"], workdir)
  before = snapshot([workdir])
  config = smoke("shapes")
  config.total_steps = 9
  with workdir_lib.Lock(workdir):
    holder = json.loads((workdir / "lock").read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(WorkdirInUse, match=f"is in use by another training run \\(PID {os.getpid()} on "):
      train_lib.train(config, workdir)
    assert snapshot([workdir]) == {**before, str(workdir / "lock"): snapshot([workdir])[str(workdir / "lock")]}
  assert (workdir / "lock").read_text() == ""  # released

  # A run killed while saving leaves its holder in the lock file and Orbax's temporary directory behind.
  (workdir / "lock").write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "yesterday"}))
  unfinished = workdir / "checkpoints" / "9.orbax-checkpoint-tmp-1234"
  unfinished.mkdir()
  (unfinished / "partial").write_bytes(b"half")
  train_lib.train(config, workdir)
  assert not unfinished.exists()
  assert sorted(int(path.name) for path in (workdir / "checkpoints").iterdir()) == [6, 9]
  assert (workdir / "lock").read_text() == ""


def losses(workdir: pathlib.Path) -> dict[int, float]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return {record["step"]: record["loss"] for record in records}


def test_sigterm_saves_at_the_stopped_step_and_resumes_bit_exactly(runs, runs_dir, monkeypatch):
  """SIGTERM while training: the step running finishes, a checkpoint is saved there, Preempted is raised; rerunning
  gives the same losses bitwise as the run that was never stopped."""
  assert threading.current_thread() is threading.main_thread()  # where Python delivers signals
  workdir = runs_dir / "misuse_preempted"
  original = trainer.TrainSetup.device_batch
  calls = {"count": 0}

  def signalled_device_batch(self, local_batch):
    calls["count"] += 1
    if calls["count"] == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return original(self, local_batch)

  with monkeypatch.context() as patch:
    patch.setattr(trainer.TrainSetup, "device_batch", signalled_device_batch)
    with pytest.raises(Preempted, match="rerun the same command to resume") as preempted:
      train_lib.train(smoke("shapes"), workdir)
  stopped = preempted.value.step
  assert 1 <= stopped < 3, stopped
  assert [path.name for path in (workdir / "checkpoints").iterdir()] == [str(stopped)]
  assert max(losses(workdir)) == stopped
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is the loop's only

  train_lib.train(smoke("shapes"), workdir)
  assert losses(workdir) == losses(runs["shapes"])


def test_inference_reads_the_newest_step_when_training_deletes_the_one_it_chose(runs, runs_dir, monkeypatch):
  """A training run in the same workdir saves step 6 and deletes step 3 (keep_checkpoints) between evaluation
  choosing step 3 and reading it: evaluation reads step 6."""
  workdir = runs_dir / "misuse_deleted_under_reader"
  shutil.copytree(runs["shapes"], workdir)
  original_latest = trainer.Checkpointer.latest_step_in
  answers = iter([3])
  monkeypatch.setattr(
    trainer.Checkpointer,
    "latest_step_in",
    staticmethod(lambda directory: next(answers, None) or original_latest(directory)),
  )
  original_restore = trainer.Checkpointer.restore_subset

  def restore_after_deletion(directory, step, abstract_subset):
    shutil.rmtree(pathlib.Path(directory) / "3", ignore_errors=True)
    return original_restore(directory, step, abstract_subset)

  monkeypatch.setattr(trainer.Checkpointer, "restore_subset", staticmethod(restore_after_deletion))
  config = smoke("shapes")
  _, _, step = trainer.restore_for_inference(get_task(config), config, workdir)
  assert step == 6
