"""Time of the two 3-D convolution implementations of storyjax/layers/conv.py (Conv3D), printed as one JSON object.

  python benchmarks/conv3d.py                    # batch 32, LAEO-Net++ and CosEmb layer shapes
  python benchmarks/conv3d.py --batch=2 --repeats=1 --cases=laeo_map_conv1

"xla": lax's native 3-D convolution; "frames": the kT input frames of each output frame stacked along channels and
one 2-D convolution (what Conv3D runs on CPU). For each case the forward and the forward+backward (gradients w.r.t.
inputs and kernel) are compiled first; milliseconds are medians over `--repeats` calls, and `speedup` is xla / frames
measured side by side in this run.
"""

import json
import statistics
import time

from absl import app, flags
import jax
import jax.numpy as jnp

from storyjax.layers.conv import Conv3D

# name → (input (T, H, W, C), features, kernel, strides, padding)
CASES = {
  "laeo_head_conv1": ((10, 64, 64, 3), 32, (3, 4, 4), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
  "laeo_head_conv2": ((8, 32, 32, 32), 64, (3, 4, 4), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),
  "laeo_map_conv1": ((10, 64, 64, 3), 16, (3, 5, 5), (1, 2, 2), "VALID"),
  "cosemb_stem_16": ((16, 16, 16, 1), 8, (7, 7, 7), (1, 2, 2), ((3, 3), (3, 3), (3, 3))),
  "cosemb_block_16": ((8, 4, 4, 16), 16, (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1))),
}

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 32, "examples per call")
flags.DEFINE_integer("repeats", 5, "timed calls per measurement (median reported)")
flags.DEFINE_list("cases", list(CASES), f"which of {list(CASES)}")


def milliseconds(function, *args) -> float:
  compiled = jax.jit(function).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(1000 * (time.perf_counter() - start))
  return statistics.median(times)


def main(argv):
  del argv
  results = {"backend": jax.default_backend(), "batch": FLAGS.batch, "cases": {}}
  for name in FLAGS.cases:
    if name not in CASES:
      raise app.UsageError(f"unknown case {name!r}; choose from {list(CASES)}")
    shape, features, kernel, strides, padding = CASES[name]
    inputs = jax.random.normal(jax.random.key(0), (FLAGS.batch, *shape))
    case = {}
    for implementation in ("xla", "frames"):
      module = Conv3D(features, kernel, strides, padding, implementation=implementation)
      variables = module.init(jax.random.key(1), inputs)
      loss = lambda variables, inputs, module=module: jnp.sum(module.apply(variables, inputs) ** 2)
      case[implementation] = {
        "forward_ms": milliseconds(module.apply, variables, inputs),
        "forward_backward_ms": milliseconds(jax.grad(loss, (0, 1)), variables, inputs),
      }
    case["speedup"] = {
      measure: case["xla"][measure] / case["frames"][measure] for measure in ("forward_ms", "forward_backward_ms")
    }
    results["cases"][name] = case
  print(json.dumps(results))


if __name__ == "__main__":
  app.run(main)
