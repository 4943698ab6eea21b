"""Multi-head attention as a C++ kernel for XLA:CPU (cpu_attention.cc through the XLA FFI), forward and backward.

XLA:CPU runs attention's batched small matmuls ((B·H) products of (L × Dh)·(Dh × L)) at a fraction of the rate
of its large ones; this kernel does one (example, head) pair per work item on XLA's intra-op thread pool, reads
q/k/v in their (B, L, H, Dh) layout (no transposes around it) and fuses the masked softmax, so the step of a
small transformer on a few cores spends far less time in attention (docs/cpu.md). float32 inside; other input
dtypes are cast. Dropout on the probabilities applies storyjax.layers.dropout's hashed mask itself, so given the
same seed it drops exactly what the "xla" attention drops.

The library is compiled with the system C++ compiler (`CXX`, default g++) on first use, for the host CPU, into
$STORYJAX_CACHE (default ~/.cache/storyjax), keyed by the source, the compiler flags and the CPU.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from storyjax.errors import ConfigError
from storyjax.layers.dropout import keep_threshold

SOURCE = pathlib.Path(__file__).with_name("cpu_attention.cc")
COMPILE_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-std=c++17", "-shared", "-fPIC")
FORWARD_TARGET, BACKWARD_TARGET = "storyjax_attention_forward", "storyjax_attention_backward"


def _cache_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("STORYJAX_CACHE", pathlib.Path.home() / ".cache" / "storyjax"))


def _cpu_signature() -> str:
  try:
    lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return platform.processor()
  wanted = ("model name", "flags")
  return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _compiler() -> str:
  return os.environ.get("CXX", "g++")


def compiler_available() -> bool:
  return shutil.which(_compiler()) is not None


def library_path() -> pathlib.Path:
  """The compiled kernel library for this source, compiler and CPU, built now if it is not cached yet."""
  compiler = _compiler()
  if not compiler_available():
    raise ConfigError(
      f"model.attention='cpu' compiles a C++ kernel, but the compiler {compiler!r} was not found "
      "(install g++ or set CXX), or use model.attention='xla'"
    )
  key = hashlib.sha256(
    "\n".join([SOURCE.read_text(), compiler, *COMPILE_FLAGS, jax.ffi.include_dir(), _cpu_signature()]).encode()
  ).hexdigest()[:16]
  target = _cache_dir() / f"cpu_attention-{key}.so"
  if target.exists():
    return target
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise ConfigError(f"cannot create the kernel cache {target.parent} ({error}); set STORYJAX_CACHE") from error
  with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
    built = pathlib.Path(scratch) / target.name
    command = [compiler, *COMPILE_FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(built)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
      raise ConfigError(
        f"compiling the cpu attention kernel failed (set model.attention='xla' to run without it): "
        f"{' '.join(command)}\n{result.stderr[-3000:]}"
      )
    os.replace(built, target)  # atomic: concurrent builders each install a whole file
  return target


@functools.cache
def _register() -> None:
  library = ctypes.cdll.LoadLibrary(str(library_path()))
  for target, symbol in ((FORWARD_TARGET, "StoryjaxAttentionForward"), (BACKWARD_TARGET, "StoryjaxAttentionBackward")):
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")


def _forward(query, key, value, key_mask, dropout, scale, keep_probability):
  _register()
  batch, num_queries, heads, _ = query.shape
  shapes = (
    jax.ShapeDtypeStruct(query.shape, jnp.float32),
    jax.ShapeDtypeStruct((batch, heads, num_queries, key.shape[1]), jnp.float32),
  )
  call = jax.ffi.ffi_call(FORWARD_TARGET, shapes, vmap_method="sequential")
  return call(
    query, key, value, key_mask, dropout, scale=np.float32(scale), keep_probability=np.float32(keep_probability)
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(query, key, value, key_mask, dropout, scale, keep_probability):
  return _forward(query, key, value, key_mask, dropout, scale, keep_probability)[0]


def _attention_forward(query, key, value, key_mask, dropout, scale, keep_probability):
  out, probabilities = _forward(query, key, value, key_mask, dropout, scale, keep_probability)
  return out, (query, key, value, key_mask, dropout, probabilities)


def _attention_backward(scale, keep_probability, residuals, out_grad):
  query, key, value, key_mask, dropout, probabilities = residuals
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (query, key, value))
  call = jax.ffi.ffi_call(BACKWARD_TARGET, shapes, vmap_method="sequential")
  grads = call(
    query,
    key,
    value,
    key_mask,
    dropout,
    probabilities,
    out_grad.astype(jnp.float32),
    scale=np.float32(scale),
    keep_probability=np.float32(keep_probability),
  )
  return (*grads, None, None)


_attention.defvjp(_attention_forward, _attention_backward)


def cpu_attention(query, key, value, key_mask=None, scale=None, dropout_seed=None, keep_probability=1.0):
  """softmax(q·kᵀ·scale)·v for q (B, Lq, H, Dh), k/v (B, Lk, H, Dh), key_mask (B, Lk) → (B, Lq, H, Dh).

  Same scale default (1/√Dh) and masking as layers.attention.xla_attention (a query with no valid key attends
  uniformly). With `dropout_seed` (uint32 (2,), a Dropout module's seed()) and keep_probability < 1, drops the
  probabilities with that seed's hashed mask. Computed in float32 and returned in value's dtype.
  """
  if jax.default_backend() != "cpu":
    raise ConfigError(f"model.attention='cpu' runs on CPUs only, not on {jax.default_backend()!r}; use 'fused'")
  same_batch_heads_dim = (query.shape[0], *query.shape[2:]) == (key.shape[0], *key.shape[2:])
  if query.ndim != 4 or key.shape != value.shape or not same_batch_heads_dim:
    raise ValueError(f"cpu attention needs q (B, Lq, H, Dh), k/v (B, Lk, H, Dh); got {query.shape}, {key.shape}")
  batch, num_keys = key.shape[:2]
  scale = query.shape[-1] ** -0.5 if scale is None else scale
  key_mask = jnp.ones((batch, num_keys), bool) if key_mask is None else jnp.broadcast_to(key_mask, (batch, num_keys))
  if dropout_seed is None:
    dropout_seed, keep_probability = jnp.zeros(2, jnp.uint32), 1.0
  dropout = jnp.concatenate([dropout_seed.astype(jnp.uint32), jnp.full((1,), keep_threshold(keep_probability))])
  as_float = lambda x: x.astype(jnp.float32)
  out = _attention(
    as_float(query),
    as_float(key),
    as_float(value),
    key_mask.astype(bool),
    dropout,
    float(scale),
    float(keep_probability),
  )
  return out.astype(value.dtype)
