"""Time and memory of semantic cross-attention (eq 3.1), printed as one JSON object.

  python benchmarks/sca.py                      # SCAM's sizes (on a GPU)
  python benchmarks/sca.py --small              # CPU-feasible sizes (the Pallas kernel runs interpreted)
  python benchmarks/sca.py --implementations=pallas,xla

Implementations: "pallas" (storyjax.kernels' blocked kernel), "xla" (its jnp reference, which materialises the
(B, H, Nq, Nk) logits) and "dot_product_attention" (jax.nn.dot_product_attention with the boolean (B, 1, Nq, Nk)
mask built from the labels inside the timed function). Cases follow SCAM (one head of width 256, 19 labels with 8
latents each): pixels of a 64×64 feature map attend 152 latents, the latents attend the pixels, and 4096 queries
attend 1024 keys with random labels. For each, the forward and the forward+backward (gradients w.r.t. q, k, v)
are AOT-compiled: milliseconds are medians over `--repeats` calls, memory is XLA's analysis of the compiled
program (temporaries, and the peak = arguments + outputs + temporaries). On CPU the Pallas kernel runs in
interpret mode, so its CPU time says nothing about its GPU time.
"""

import functools
import json
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from storyjax.kernels import semantic_attention

MIB = 2**20
IMPLEMENTATIONS = ("pallas", "xla", "dot_product_attention")
NUM_LABELS, LATENTS_PER_LABEL = 19, 8
# name → (queries, keys, which side carries the latents' labels)
CASES = {
  "pixels_to_latents": (4096, NUM_LABELS * LATENTS_PER_LABEL, "keys"),
  "latents_to_pixels": (NUM_LABELS * LATENTS_PER_LABEL, 4096, "queries"),
  "tokens_4096x1024": (4096, 1024, None),
}
SMALL_CASES = {
  "pixels_to_latents": (256, 64, "keys"),
  "latents_to_pixels": (64, 256, "queries"),
  "tokens": (256, 128, None),
}

_SMALL = flags.DEFINE_bool("small", False, "CPU-feasible sizes.")
_IMPLEMENTATIONS = flags.DEFINE_list("implementations", list(IMPLEMENTATIONS), f"Any of {IMPLEMENTATIONS}.")
_CASES = flags.DEFINE_list("cases", None, "Cases to run (default all): names from CASES / SMALL_CASES.")
_BATCH = flags.DEFINE_integer("batch", None, "Batch size (default 8, 2 with --small).")
_HEADS = flags.DEFINE_integer("heads", 1, "Attention heads.")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 256, "Width of one head.")
_DTYPE = flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "q/k/v dtype (default bf16 on GPU/TPU, fp32 CPU).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls; the median is reported.")


def dot_product_attention(query, key, value, query_labels, key_labels):
  """jax.nn.dot_product_attention with the materialised (B, 1, Nq, Nk) label mask."""
  mask = (query_labels[:, :, None] == key_labels[:, None, :]) & (key_labels[:, None, :] >= 0)
  return jax.nn.dot_product_attention(query, key, value, mask=mask[:, None])


def attention_fn(implementation: str):
  if implementation == "dot_product_attention":
    return dot_product_attention
  return functools.partial(semantic_attention, implementation=implementation)


def inputs(num_queries, num_keys, latent_side, batch, dtype, seed=0):
  """q (B, Nq, H, D), k, v (B, Nk, H, D), labels: latents in runs of 8 per label, other tokens random labels."""
  rng = np.random.default_rng(seed)
  heads, head_dim = _HEADS.value, _HEAD_DIM.value

  def labels(tokens, is_latents):
    if is_latents:
      return np.broadcast_to(np.arange(tokens) * NUM_LABELS // tokens, (batch, tokens))
    return rng.integers(0, NUM_LABELS, (batch, tokens))

  q = rng.normal(size=(batch, num_queries, heads, head_dim))
  k, v = (rng.normal(size=(batch, num_keys, heads, head_dim)) for _ in range(2))
  query_labels, key_labels = labels(num_queries, latent_side == "queries"), labels(num_keys, latent_side == "keys")
  return [jnp.asarray(x, dtype) for x in (q, k, v)] + [jnp.asarray(x, jnp.int32) for x in (query_labels, key_labels)]


def measure(function, arguments) -> dict:
  compiled = jax.jit(function).lower(*arguments).compile()
  memory = compiled.memory_analysis()
  jax.block_until_ready(compiled(*arguments))  # warm-up
  seconds = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*arguments))
    seconds.append(time.perf_counter() - start)
  row = {"ms": 1e3 * statistics.median(seconds)}
  if memory is not None:
    peak = memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
    row.update(temp_mib=memory.temp_size_in_bytes / MIB, peak_mib=(peak + memory.temp_size_in_bytes) / MIB)
  return row


def benchmark(implementation, arguments) -> dict:
  attend = attention_fn(implementation)
  forward = lambda q, k, v, query_labels, key_labels: attend(q, k, v, query_labels, key_labels)

  def forward_backward(q, k, v, query_labels, key_labels):
    loss = lambda q, k, v: jnp.sum(attend(q, k, v, query_labels, key_labels).astype(jnp.float32))
    return jax.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)

  return {"forward": measure(forward, arguments), "forward_backward": measure(forward_backward, arguments)}


def main(argv):
  del argv
  unknown = set(_IMPLEMENTATIONS.value) - set(IMPLEMENTATIONS)
  if unknown:
    raise app.UsageError(f"--implementations: unknown {sorted(unknown)}; choose from {IMPLEMENTATIONS}")
  cases = SMALL_CASES if _SMALL.value else CASES
  if _CASES.value is not None:
    if set(_CASES.value) - set(cases):
      raise app.UsageError(f"--cases: unknown {sorted(set(_CASES.value) - set(cases))}; choose from {list(cases)}")
    cases = {name: cases[name] for name in _CASES.value}
  on_cpu = jax.default_backend() == "cpu"
  dtype = _DTYPE.value or ("float32" if on_cpu else "bfloat16")
  batch = _BATCH.value or (2 if _SMALL.value else 8)
  rows = []
  for case, (num_queries, num_keys, latent_side) in cases.items():
    arguments = inputs(num_queries, num_keys, latent_side, batch, jnp.dtype(dtype))
    for implementation in _IMPLEMENTATIONS.value:
      row = {"case": case, "implementation": implementation, "queries": num_queries, "keys": num_keys}
      rows.append({**row, **benchmark(implementation, arguments)})
  report = {
    "backend": jax.default_backend(),
    "device": jax.devices()[0].device_kind,
    "pallas_interpreted": on_cpu,
    "dtype": dtype,
    "batch": batch,
    "heads": _HEADS.value,
    "head_dim": _HEAD_DIM.value,
    "rows": rows,
  }
  print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)
