"""Generates from prompts with any task that can: `python -m storyjax.sample --config=... --workdir=DIR
--prompt="..." [--prompt="..."] [--num_samples=N] [--seed=S]`.

Writes DIR/samples/samples.npz (one row per sample) and the task's own per-sample files beside it; task options
are config keys (e.g. Director's `--config.sample.char_index`).
"""

import pathlib
import sys

from absl import flags
import jax
import ml_collections
import numpy as np

from storyjax import trainer
from storyjax.cli import run_cli
from storyjax.errors import ConfigError
from storyjax.tasks import TASKS, get_task, task_class
from storyjax.tasks.base import GenerativeTask

_PROMPTS = flags.DEFINE_multi_string("prompt", None, "Prompt(s) to generate from; repeat the flag for several.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")


def prompt_warnings(task: GenerativeTask, prompts: list[str]) -> list[str]:
  """The task's warnings about the --prompt values (base.GenerativeTask), each line once; none if it has none.

  The prompts are the flags as given, not repeated --num_samples times, so a warning names a prompt by its flag's
  index (a prompt given twice is reported at its first).
  """
  method = getattr(task, "prompt_warnings", None)
  return list(dict.fromkeys(method(prompts))) if method is not None else []


def sample(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  workdir = pathlib.Path(workdir).absolute()
  task = get_task(config)
  if not isinstance(task, GenerativeTask):
    raise ConfigError(
      f"task {config.task!r} cannot generate (it has no `sample`); tasks that can: "
      f"{[name for name in TASKS if hasattr(task_class(name), 'sample')]}"
    )
  given = list(_PROMPTS.value or [])
  prompts = [prompt for prompt in given for _ in range(_NUM_SAMPLES.value)]
  if not prompts:
    raise ConfigError("give at least one --prompt")
  _, variables, _ = trainer.restore_for_inference(task, config, workdir)  # loads the run's tokenizer
  if jax.process_index() == 0:
    for warning in prompt_warnings(task, given):
      print(f"warning: {warning}", file=sys.stderr)
  samples = task.sample(variables, prompts, jax.random.PRNGKey(_SEED.value))
  out_dir = workdir / "samples"
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "samples.npz", **samples)
    task.save_samples(samples, out_dir)
    print(f"samples: {out_dir / 'samples.npz'} ({len(prompts)} samples; {', '.join(sorted(samples))})")
  return samples


if __name__ == "__main__":
  run_cli(sample)
