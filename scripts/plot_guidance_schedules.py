"""Draws every classifier-free guidance schedule of `storyjax.diffusion.guidance` into one PNG.

Usage (from the repository root): .venv/bin/python scripts/plot_guidance_schedules.py [--output=PATH]
One panel per family, each curve labelled with its `diffusion.guidance_schedule` string; ω = 5, N = 50 steps.
"""

import argparse
import pathlib

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from storyjax.diffusion.guidance import schedule_weights

OMEGA, NUM_STEPS = 5.0, 50
# (panel title, config strings drawn in it)
PANELS = (
  ("static", ("static",)),
  ("linear (increasing)", ("linear",)),
  ("invlinear (decreasing)", ("invlinear",)),
  ("cosine (increasing)", ("cosine",)),
  ("sine (decreasing)", ("sine",)),
  ("V (lowest mid-process)", ("v",)),
  ("Λ (highest mid-process)", ("lambda",)),
  ("pcs, eq 3.7 (not normalised)", ("pcs:s=0.1", "pcs:s=1", "pcs:s=2")),
  (
    "clamp, eq 3.8",
    ("clamp:c=2,base=linear", "clamp:c=4,base=linear", "clamp:c=2,base=cosine", "clamp:c=4,base=cosine"),
  ),
)


def plot_guidance_schedules(path: pathlib.Path) -> None:
  """Saves a 3×3 grid of ω(step) curves at `path`, with a dotted line at the static ω for reference."""
  figure = Figure(figsize=(13, 10.5), layout="constrained")
  FigureCanvasAgg(figure)
  figure.suptitle(
    f"CFG weight schedules, CAD convention ε̂ = (1+ω)·ε_cond − ω·ε_uncond; ω = {OMEGA:g}, N = {NUM_STEPS} steps\n"
    "normalised families have mean ω over the steps",
    fontsize=13,
  )
  steps = np.arange(NUM_STEPS)
  axes_grid = figure.subplots(3, 3, sharex=True, sharey=True)
  for axes, (title, specs) in zip(axes_grid.flat, PANELS):
    for spec in specs:
      linestyle = "--" if spec.endswith("base=cosine") else "-"  # the two clamp bases overlap on their floor
      weights = schedule_weights(spec, NUM_STEPS, OMEGA)
      axes.plot(steps, weights, linestyle=linestyle, marker=".", markersize=3, label=spec)
    axes.axhline(OMEGA, color="grey", linestyle=":", linewidth=1, label=f"ω = {OMEGA:g}")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper center")
  for axes in axes_grid[-1]:
    axes.set_xlabel("denoising step (0 = noisiest)")
  for axes in axes_grid[:, 0]:
    axes.set_ylabel("ω(step)")
  axes_grid[0, 0].set_ylim(-0.3, 2 * OMEGA * 1.45)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=110)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("docs/guidance_schedules.png"))
  plot_guidance_schedules(parser.parse_args().output)


if __name__ == "__main__":
  main()
