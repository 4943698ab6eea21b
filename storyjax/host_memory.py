"""Host memory that a CPU train step reuses instead of faulting in afresh every step.

XLA:CPU allocates a step's temporaries with malloc on its worker threads and frees them when the step ends
(Director's default step: one 146 MB buffer). glibc serves a request that large from a worker thread's arena
with a fresh mmap and returns it with munmap, so every step page-faults its whole scratch memory in again:
38 000 faults and ~110 ms of system time per step, a quarter of the process's CPU time on 2 cores (docs/cpu.md).
`keep_freed_memory` makes glibc serve every thread from the main heap and keep what is freed there, so the
next step reuses the same pages. The process then holds its peak heap until it exits, and XLA's multithreaded
compiles share the one arena: a compile-bound run of seconds (Director's smoke config) takes ~8% longer.
STORYJAX_MALLOC=default in the environment leaves glibc's malloc as it is (the test suite does so).
"""

import ctypes
import ctypes.util
import functools
import os

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# The largest trim threshold mallopt takes (an int): freed memory at the top of the heap is kept below 2 GiB.
MAX_TRIM_THRESHOLD = 2**31 - 1
OPT_OUT_VARIABLE, OPT_OUT_VALUE = "STORYJAX_MALLOC", "default"
# The same settings for another process, given in its environment before it starts.
GLIBC_TUNABLES = f"glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={MAX_TRIM_THRESHOLD}"


@functools.cache
def keep_freed_memory() -> bool:
  """Sets glibc's malloc to one arena, no mmap'd chunks and no trimming; True where that took effect.

  Every storyjax program calls it before its first computation; call it first in your own scripts. Threads that
  already own an arena keep it: once JAX has run a computation, XLA's threads have theirs and this no longer
  helps them. Where the C library is not glibc (macOS, musl), or with STORYJAX_MALLOC=default, it does nothing
  and returns False.
  """
  if os.environ.get(OPT_OUT_VARIABLE) == OPT_OUT_VALUE:
    return False
  name = ctypes.util.find_library("c")
  try:
    mallopt = ctypes.CDLL(name).mallopt
  except (OSError, TypeError, AttributeError):  # no C library found, or one without mallopt
    return False
  settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, MAX_TRIM_THRESHOLD))
  accepted = [mallopt(parameter, value) == 1 for parameter, value in settings]  # every one set, even after a refusal
  return all(accepted)
