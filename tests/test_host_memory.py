"""host_memory.keep_freed_memory: a large block freed by one thread is reused by the next, not faulted in again;
every storyjax program (program.run_program) sets it, unless STORYJAX_MALLOC=default."""

import json
import os
import subprocess
import sys

import pytest

from storyjax import host_memory

# Three threads in turn malloc, fill and free 128 MiB, as XLA:CPU's workers do with a step's temporaries; prints
# the minor page faults of each turn. Mode "keep" calls keep_freed_memory first, "program" runs inside run_program.
PROGRAM = """
import ctypes, json, resource, sys, threading
from storyjax import host_memory, program
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
mode = sys.argv.pop(1)
def turn(size=2**27):
  block = libc.malloc(size)
  ctypes.memset(block, 1, size)
  libc.free(block)
def main():
  kept = host_memory.keep_freed_memory() if mode == "keep" else None
  faults = []
  for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    thread = threading.Thread(target=turn)
    thread.start()
    thread.join()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  print(json.dumps({"kept": kept, "faults": faults}))
program.run_program(main) if mode == "program" else main()
"""
PAGES = 2**27 // 4096


def _faults(mode: str, opt_out: bool = False) -> dict:
  environment = {key: value for key, value in os.environ.items() if key != host_memory.OPT_OUT_VARIABLE}
  if opt_out:
    environment[host_memory.OPT_OUT_VARIABLE] = host_memory.OPT_OUT_VALUE
  result = subprocess.run(
    [sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True, env=environment
  )
  return json.loads(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_block_is_reused_by_the_next_thread():
  default = _faults("default")
  assert all(faults > PAGES // 2 for faults in default["faults"]), default  # every turn faults its block in
  kept = _faults("keep")
  assert kept["kept"] is True
  for faults in (kept["faults"], _faults("program")["faults"]):
    assert faults[0] > PAGES // 2, faults  # the first turn grows the heap
    assert all(count < PAGES // 100 for count in faults[1:]), faults
  opted_out = _faults("program", opt_out=True)["faults"]
  assert all(faults > PAGES // 2 for faults in opted_out), opted_out
