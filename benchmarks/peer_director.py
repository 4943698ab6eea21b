"""Director A's train step in storyjax against the PyTorch peer (../shared/bench/peer_torch_director.py), side by side.

  bash ../shared/bench/setup_torch_peer.sh                 # CPU torch in /tmp/torchpeer, once
  python benchmarks/peer_director.py --size=default        # 4 × 96, 100 frames, batch 32, no dropout
  python benchmarks/peer_director.py --size=paper          # 8 × 512, 300 frames, batch 8, dropout 0.1

Both sides run the same network at equal sizes: Director A with the caption as one pooled 512-d frozen CLIP
feature (the peer's text input; storyjax is fed a fixed random feature through its `text_encoder="clip"` path),
the character trajectory as one token, EDM loss, AdamW. Dropout is matched: `--size=paper` drops the MLP hidden
layer on both sides (the peer also its residual branches and input, at the same rate), no probability dropout on
either side (so torch uses its fused attention), no stochastic depth. Both run with the malloc settings of
storyjax/host_memory.py (the peer through GLIBC_TUNABLES; they speed it up too). Rounds alternate the two
frameworks in one process tree; each reports the median step time of its round. storyjax runs once per
`--attention` value (default: "auto", the C++ CPU kernel here, and "xla"). Prints one JSON object with the
medians over rounds, `ratios` = each storyjax step / the peer's best mode (eager or torch.compile), and `ratio`,
the first one's; < 1 means storyjax is faster.
"""

import importlib.util
import json
import os
import pathlib
import statistics
import subprocess
import time

from absl import app, flags
import jax
import numpy as np

from storyjax import host_memory, trainer
from storyjax.tasks import director

SIZES = {
  "default": {"variant": None, "batch": 32, "dropout": 0.0},
  "paper": {"variant": "paper", "batch": 8, "dropout": 0.1},
}
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PEER = REPO_ROOT.parent / "shared" / "bench" / "peer_torch_director.py"
CLIP_WIDTH = 512

_SIZE = flags.DEFINE_enum("size", "default", list(SIZES), "Network and batch size.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds; medians over rounds are reported.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per round and framework.")
_MODES = flags.DEFINE_list("torch_modes", ["eager", "compile"], "Peer modes to run.")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", "/tmp/torchpeer/bin/python", "Python with torch installed.")
_PEER = flags.DEFINE_string("peer", str(PEER), "The PyTorch peer script.")
_ATTENTIONS = flags.DEFINE_list(
  "attention", ["auto", "xla"], "storyjax model.attention values, each timed in every round; `ratio` is the first's."
)
_CACHE_DIR = flags.DEFINE_string("cache_dir", "runs/.jax_cache", "Persistent compilation cache.")


def _unit_feature(width: int) -> np.ndarray:
  feature = np.random.default_rng(0).normal(size=width).astype(np.float32)
  return feature / np.linalg.norm(feature)


class PooledClipDirector(director.Task):
  """Director fed one fixed random unit CLIP-like feature per caption: the peer's pooled text input."""

  CAPTION_FEATURES = {
    "caption_clip_seq": np.tile(_unit_feature(CLIP_WIDTH), (77, 1)),
    "caption_clip_mask": np.ones(77, bool),
  }

  def preprocess(self, example: dict) -> dict:
    return super().preprocess({**example, **self.CAPTION_FEATURES})


def jax_config(size: dict, attention: str):
  spec = importlib.util.spec_from_file_location("director_config", REPO_ROOT / "configs" / "director.py")
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)
  config = config_module.get_config(size["variant"])
  config.batch_size = size["batch"]
  config.mesh.data = 1
  config.data.update({"train_size": 4 * size["batch"], "num_threads": 0, "num_workers": 0})
  config.model.update(
    {
      "variant": "A",
      "caption_tokens": "pooled",
      "text_encoder": "clip",
      "dropout_rate": size["dropout"],
      "stochastic_depth": 0.0,
      "attention_dropout_rate": 0.0,
      "attention": attention,
      "dtype": "float32",  # as the peer; `paper` computes in bfloat16, which this CPU has no instructions for
    }
  )
  return config


class JaxStep:
  """The storyjax train step of `config`, compiled once, timed on one batch already on the device."""

  def __init__(self, config):
    setup = trainer.TrainSetup(PooledClipDirector(config), config)
    self.state, self.step = setup.init_state(), setup.lower_train_step().compile()
    batches = setup.device_batches()
    self.batch = next(batches)
    batches.close()
    self.num_params = sum(leaf.size for leaf in jax.tree.leaves(self.state["params"]))
    self.seq_len = 3 + config.data.max_frames
    self.time_steps(2)

  def time_steps(self, num_steps: int) -> float:
    """Median milliseconds of `num_steps` steps, each waited for."""
    times = []
    for _ in range(num_steps):
      start = time.perf_counter()
      self.state, _ = self.step(self.state, self.batch)
      jax.block_until_ready(self.state)
      times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def peer_step_ms(config, size: dict, mode: str) -> dict:
  model = config.model
  command = [
    _TORCH_PYTHON.value,
    _PEER.value,
    f"--frames={config.data.max_frames}",
    f"--layers={model.num_layers}",
    f"--width={model.width}",
    f"--heads={model.num_heads}",
    f"--ffn-mult={model.mlp_ratio}",
    f"--batch={size['batch']}",
    f"--dropout={size['dropout']}",
    "--attn-dropout=0",
    "--char-tokens=one",
    f"--mode={mode}",
    f"--steps={_STEPS.value}",
  ]
  environment = {**os.environ, "GLIBC_TUNABLES": host_memory.GLIBC_TUNABLES}  # the malloc storyjax's side has
  result = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
  if result.returncode:
    raise RuntimeError(f"the peer failed ({' '.join(command)}):\n{result.stderr[-2000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  host_memory.keep_freed_memory()
  if not pathlib.Path(_TORCH_PYTHON.value).exists():
    raise app.UsageError(f"{_TORCH_PYTHON.value} not found: run `bash ../shared/bench/setup_torch_peer.sh` first")
  size = SIZES[_SIZE.value]
  config = jax_config(size, _ATTENTIONS.value[0])
  trainer.enable_compilation_cache(pathlib.Path(_CACHE_DIR.value))
  jax_steps = {f"storyjax_{attention}": JaxStep(jax_config(size, attention)) for attention in _ATTENTIONS.value}
  jax_step = next(iter(jax_steps.values()))
  rounds = {**{name: [] for name in jax_steps}, **{f"torch_{mode}": [] for mode in _MODES.value}}
  peer_report = {}
  for _ in range(_ROUNDS.value):
    for mode in _MODES.value:
      peer_report = peer_step_ms(config, size, mode)
      rounds[f"torch_{mode}"].append(peer_report["step_ms_median"])
    for name, step in jax_steps.items():
      rounds[name].append(step.time_steps(_STEPS.value))
  medians = {name: statistics.median(times) for name, times in rounds.items()}
  peer_best = min(value for name, value in medians.items() if name.startswith("torch_"))
  print(
    json.dumps(
      {
        "size": _SIZE.value,
        "batch": size["batch"],
        "frames": config.data.max_frames,
        "layers": config.model.num_layers,
        "width": config.model.width,
        "heads": config.model.num_heads,
        "dropout": size["dropout"],
        "seq_len": {"storyjax": jax_step.seq_len, "torch": peer_report.get("seq_len")},
        "params": {"storyjax": int(jax_step.num_params), "torch": peer_report.get("params")},
        "attention": _ATTENTIONS.value,
        "step_ms_median": medians,
        "step_ms_rounds": rounds,
        "ratio": medians[next(iter(jax_steps))] / peer_best,
        "ratios": {name: medians[name] / peer_best for name in jax_steps},
        "threads": {"torch": peer_report.get("threads"), "cpus": len(os.sched_getaffinity(0))},
        "torch": peer_report.get("torch"),
        "jax": jax.__version__,
      }
    )
  )


if __name__ == "__main__":
  app.run(main)
