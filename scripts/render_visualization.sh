#!/usr/bin/env bash
# Renders a screenshot of the storyjax.visualize page, with no trained model and no network:
#   1. samples.npz with the keys of `python -m storyjax.sample`, built from the embedded procedural E.T. samples
#      (storyjax.data.et.procedural.generate_sample(0, "mixed", "test", i, max_frames=100), i = 0..2);
#   2. python -m storyjax.visualize --samples=... --output=.../visualization.html;
#   3. headless Chromium: chromium --headless --screenshot=PNG --window-size=1200,800 file://...#frame=FRAME
#
# Usage: scripts/render_visualization.sh [OUTPUT_PNG (default docs/visualize.png)] [FRAME (default 60)]
# Needs a Chromium binary (Debian: apt-get install chromium); CHROMIUM=/path/to/binary overrides the search.
# Run from the repository root; PYTHON overrides the interpreter (default .venv/bin/python).
set -euo pipefail

output_png=$(realpath -m "${1:-docs/visualize.png}")
frame=${2:-60}
python=${PYTHON:-.venv/bin/python}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [[ -z "$chromium" ]]; then
  echo "error: no Chromium found; install one (apt-get install chromium) or set CHROMIUM=/path/to/binary" >&2
  exit 1
fi
work_dir=$(mktemp -d)
trap 'rm -rf "$work_dir"' EXIT

"$python" - "$work_dir/samples.npz" <<'EOF'
import sys

import numpy as np

from storyjax.data.et import camera, procedural
from storyjax.data.et.tagging import tag_camera
from storyjax.tasks.director import tag_names

max_frames = 100
generated = [procedural.generate_sample(0, "mixed", "test", index, max_frames=max_frames) for index in range(3)]
arrays = {key: np.zeros((len(generated), max_frames) + shape) for key, shape in
          (("camera_pose", (3, 4)), ("camera_traj", (9,)), ("char_traj", (3,)))}
mask = np.zeros((len(generated), max_frames), bool)
for index, sample in enumerate(generated):
  num_frames = len(sample["camera_pose"])
  arrays["camera_pose"][index, :num_frames] = sample["camera_pose"]
  arrays["camera_traj"][index, :num_frames] = camera.encode_camera(sample["camera_pose"])
  arrays["char_traj"][index, :num_frames] = sample["char_pos"]
  mask[index, :num_frames] = True
np.savez(sys.argv[1], **arrays, mask=mask, caption=np.array([sample["caption"] for sample in generated]),
         tags=np.array([tag_names(tag_camera(sample["camera_pose"])) for sample in generated]))
EOF

"$python" -m storyjax.visualize --samples="$work_dir/samples.npz" --output="$work_dir/visualization.html"
# --no-sandbox: Chromium refuses to start as root otherwise (containers).
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size=1200,800 --screenshot="$output_png" "file://$work_dir/visualization.html#frame=$frame" \
  2> "$work_dir/chromium.log" || { cat "$work_dir/chromium.log" >&2; exit 1; }
echo "screenshot: $output_png"
