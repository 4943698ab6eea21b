"""Runs many command lines of the storyjax CLIs cheaply: one Python imports the libraries once, then each command
runs as `python -m <module> <args>` would, in a forked child (so flags, exits and outputs are its own).

stdin: a JSON list of {"module": "storyjax.train", "args": [...]}; stdout: a JSON list of {"code", "stdout",
"stderr"}, in order. The parent never starts a JAX backend, so forking it is safe.
"""

import json
import os
import runpy
import sys
import tempfile
import traceback

# What the CLIs import (not the CLI modules themselves: runpy runs each afresh as __main__ in its child).
import jax  # noqa: F401
import orbax.checkpoint  # noqa: F401

from storyjax import tasks

for name in tasks.TASKS:
  tasks.task_class(name)


def run(module: str, args: list[str]) -> dict:
  with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
    pid = os.fork()
    if pid == 0:
      os.dup2(stdout.fileno(), 1)
      os.dup2(stderr.fileno(), 2)
      sys.argv = [module, *args]
      sys.path[0] = os.getcwd()  # as `python -m` has it
      code = 0
      try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
      except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
        if isinstance(done.code, str):
          print(done.code, file=sys.stderr)
      except BaseException:
        traceback.print_exc()
        code = 70
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)
    _, status = os.waitpid(pid, 0)
    outputs = []
    for file in (stdout, stderr):
      file.seek(0)
      outputs.append(file.read().decode(errors="replace"))
  return {"code": os.waitstatus_to_exitcode(status), "stdout": outputs[0], "stderr": outputs[1]}


if __name__ == "__main__":
  rows = json.load(sys.stdin)
  json.dump([run(row["module"], row["args"]) for row in rows], sys.stdout)
