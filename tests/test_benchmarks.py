"""The benchmark scripts run for every model config and print sensible JSON (no timing is asserted)."""

import json
import os
import subprocess
import sys

import pytest
from test_configs import PROGRAM_CONFIGS

from conftest import REPO_ROOT, fast_compile_env

MODEL_CONFIGS = sorted(
  path.name for path in (REPO_ROOT / "configs").glob("[!_]*.py") if path.stem not in PROGRAM_CONFIGS
)
SWEPT_CONFIG = "director.py"  # measured through --sweep below, the others one setting each
# One config per kind of task (the benchmark code path is generic): cad.py and rin.py are one task, diffusion like
# director.py; scene_attributes.py and region_attributes.py are BatchNorm classifiers like shapes.py; scam.py is
# timed separately; the medical tasks' configs are BatchNorm models like shapes.py (several read earlier stages'
# runs; tests/test_medical_tasks.py trains each); funnynet.py is a plain classifier on feature vectors like shapes.py.
SAME_TASK_AS_ANOTHER = (
  "cad.py",
  "rin.py",
  "scene_attributes.py",
  "region_attributes.py",
  "scam.py",
  "cosemb_pretrain.py",
  "cosemb.py",
  "medimp.py",
  "medimp_pretrain.py",
  "adapt_anchor.py",
  "adapt_contrastive.py",
  "adapt.py",
  "funnynet.py",
)


def _run_json(*args, fast_compile: bool = False) -> dict:
  """The last line of a benchmark script's output as JSON. `fast_compile`: compiling is most of each run; FLOPs are
  counted on the HLO before optimisation, memory changes by bytes, and no timing is asserted."""
  env = fast_compile_env() if fast_compile else {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def _check_throughput_report(report):
  for key in ("steps_per_sec", "step_only_steps_per_sec", "pipeline_only_batches_per_sec", "flops_per_step"):
    assert report[key] > 0, key
  assert report["examples_per_sec"] == pytest.approx(report["steps_per_sec"] * report["batch_size"])
  assert report["memory_per_device"]["peak_bytes"] > report["memory_per_device"]["argument_bytes"] > 0
  assert report["mfu"] is None  # no known peak for a CPU unless --peak_tflops is given


def _throughput(config_file, tmp_path, *args):
  return _run_json(
    "benchmarks/throughput.py",
    f"--config=configs/{config_file}:smoke",
    "--warmup_steps=1",
    "--steps=2",
    "--repeats=1",
    f"--cache_dir={tmp_path}",
    *args,
    fast_compile=True,
  )


@pytest.mark.slow
@pytest.mark.parametrize(
  "config_file", [name for name in MODEL_CONFIGS if name != SWEPT_CONFIG and name not in SAME_TASK_AS_ANOTHER]
)
def test_throughput_prints_rates_flops_and_memory(config_file, tmp_path):
  _check_throughput_report(_throughput(config_file, tmp_path))


@pytest.mark.slow
def test_throughput_sweep_measures_every_setting(tmp_path):
  report = _throughput(SWEPT_CONFIG, tmp_path, "--sweep=model.attention=xla,fused;model.remat=dots;batch_size=4")
  rows = report["sweep"]
  assert [row["setting"] for row in rows] == [
    {"model.attention": attention, "model.remat": "dots", "batch_size": 4} for attention in ("xla", "fused")
  ]
  for row in rows:
    _check_throughput_report(row)
    assert (row["attention"], row["remat"], row["batch_size"]) == (row["setting"]["model.attention"], "dots", 4)
  assert report["best"] in [row["setting"] for row in rows]


@pytest.mark.slow
def test_memory_falls_with_fsdp():
  report = _run_json(
    "benchmarks/memory.py",
    "--config=configs/director.py:smoke",
    "--device_counts=1,8",
    "--layouts=single,data,fsdp",  # fsdp+model: tests/test_train.py trains on such a mesh
    fast_compile=True,
  )
  layouts = {(row["num_devices"], row["layout"]): row for row in report["rows"]}
  assert set(layouts) == {(1, "single"), (8, "data"), (8, "fsdp")}
  single, data, fsdp = layouts[1, "single"], layouts[8, "data"], layouts[8, "fsdp"]
  assert fsdp["argument_gib"] < data["argument_gib"] / 4  # the state is sharded 8 ways, the batch too
  assert fsdp["peak_gib"] < single["peak_gib"] / 4
  assert report["summary"]["peak_reduction_1_device_to_fsdp8"] == pytest.approx(single["peak_gib"] / fsdp["peak_gib"])


def test_sca_benchmark_reports_time_and_memory():
  report = _run_json(
    "benchmarks/sca.py",
    "--small",
    "--cases=latents_to_pixels",
    "--implementations=pallas,xla",
    "--repeats=1",
    "--batch=1",
    "--head_dim=32",
  )
  assert (report["backend"], report["pallas_interpreted"], report["dtype"]) == ("cpu", True, "float32")
  rows = {row["implementation"]: row for row in report["rows"]}
  assert set(rows) == {"pallas", "xla"}
  for row in rows.values():
    assert (row["queries"], row["keys"]) == (64, 256)
    for which in ("forward", "forward_backward"):
      assert row[which]["ms"] > 0 and row[which]["peak_mib"] >= row[which]["temp_mib"] > 0
  assert rows["xla"]["forward"]["temp_mib"] >= 64 * 256 * 4 / 2**20  # the reference materialises its fp32 logits


def test_conv3d_benchmark_times_both_implementations():
  report = _run_json("benchmarks/conv3d.py", "--batch=1", "--repeats=1", "--cases=cosemb_block_16", fast_compile=True)
  case = report["cases"]["cosemb_block_16"]
  for implementation in ("xla", "frames"):
    assert case[implementation]["forward_ms"] > 0 and case[implementation]["forward_backward_ms"] > 0
  assert case["speedup"]["forward_ms"] == pytest.approx(case["xla"]["forward_ms"] / case["frames"]["forward_ms"])


def test_clustering_benchmark_reports_time_memory_recall_and_growth():
  report = _run_json(
    "benchmarks/clustering.py",
    "--sizes=600,1200",
    "--dim=8",
    "--points_per_identity=50",
    "--recall_queries=50",
    "--search=approximate",
    fast_compile=True,
  )
  small, large = report["runs"]
  assert (small["size"], large["size"]) == (600, 1200)
  for run in report["runs"]:
    assert run["search_seconds"] > 0 and run["peak_rss_mb"] > 0 and 0.5 <= run["recall_at_1"] <= 1
    for method in ("finch", "c1c"):
      assert run[method]["seconds"] > 0 and run[method]["levels"][0] >= run[method]["levels"][-1]
      assert run[method]["nmi_closest_level"] > 0.8
  assert set(report["growth"]["600->1200"]) == {"finch", "c1c", "peak_rss"}
