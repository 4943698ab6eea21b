"""Interactive 3D page of camera trajectories: one self-contained HTML file, plain JavaScript on a <canvas>.

  python -m storyjax.visualize --samples=runs/director/samples/samples.npz [--index=0 --index=2]
  python -m storyjax.visualize --et_root=DIR --sample_id=ID [--sample_id=ID2] [--output=page.html]

The page needs no network (no CDN, no fetch): the data sits in the page as JSON and the 3D view is a hand-written
perspective projection. It shows camera frusta (OpenCV axes: x right, y down, z forward; world up = −y) every k
frames coloured by time (viridis), the camera-centre path, the character path with a marker at the current
frame, a time slider with a play button, the caption and the camera tag runs, a sample selector, and a grid on
the ground plane (just below the lowest point of the scene). Mouse: drag orbits, shift- or right-drag pans, the
wheel zooms, a double-click resets the view; space plays, the arrow keys step. The URL fragment
`#sample=1&frame=40` opens a given sample and frame (for headless screenshots).
"""

import json
import math
import pathlib

from absl import flags
import matplotlib
from matplotlib.colors import to_hex
import numpy as np

from storyjax import program
from storyjax.data.et import layout as et
from storyjax.data.et import tagging
from storyjax.data.et.camera import FPS
from storyjax.errors import ConfigError, DataError
from storyjax.plotting import CHARACTER_COLOR

SAMPLE_KEYS = ("camera_pose", "char_pos", "caption", "tags", "num_frames")
NPZ_KEYS = ("camera_pose", "char_traj", "caption", "tags", "mask")  # written by `python -m storyjax.sample`
FRUSTUM_EVERY = 10
TIME_COLORMAP = "viridis"
# Frustum opening without intrinsics: a 16:9 image with focal length = image width (tan of the half angles).
DEFAULT_HALF_TANGENTS = (0.5, 0.28125)
_SIGNIFICANT_DIGITS = 7  # as many as the "%.6e" KITTI files keep
_MIN_SCENE_RADIUS = 0.5


def time_colors(num_frames: int) -> list[str]:
  """Colour of each frame: the time colour map at frame / (num_frames − 1), as '#rrggbb'."""
  colormap = matplotlib.colormaps[TIME_COLORMAP]
  return [to_hex(colormap(value)) for value in np.linspace(0.0, 1.0, num_frames)]


def _nice_step(length: float) -> float:
  """The largest number of the form {1, 2, 5}·10^k that is ≤ `length`."""
  power = 10.0 ** math.floor(math.log10(length))
  return max(mantissa * power for mantissa in (1.0, 2.0, 5.0) if mantissa * power <= length)


def _rounded(array: np.ndarray) -> list:
  """Nested lists of `array` with _SIGNIFICANT_DIGITS digits, to keep the page small."""
  values = [float(f"{value:.{_SIGNIFICANT_DIGITS}g}") for value in array.ravel()]
  return np.array(values).reshape(array.shape).tolist()


def _half_tangents(intrinsics, label: str) -> tuple[float, float]:
  """[fx, fy, cx, cy] (image size 2·cx × 2·cy, as in E.T.) → (cx / fx, cy / fy); None → DEFAULT_HALF_TANGENTS."""
  if intrinsics is None:
    return DEFAULT_HALF_TANGENTS
  intrinsics = np.asarray(intrinsics, np.float64)
  if intrinsics.shape != (4,) or not np.all(np.isfinite(intrinsics)) or np.any(intrinsics <= 0):
    raise DataError(f"{label}: intrinsics must be 4 positive numbers [fx, fy, cx, cy], got {intrinsics}")
  focal_x, focal_y, center_x, center_y = intrinsics
  return center_x / focal_x, center_y / focal_y


def _page_sample(sample: dict, index: int, frustum_every: int) -> dict:
  """One write_html sample → the JSON the page draws; DataError naming the sample and the bad key."""
  label = f"sample {index}" + (f" ({sample['name']})" if "name" in sample else "")
  missing = [key for key in SAMPLE_KEYS if key not in sample]
  if missing:
    raise DataError(f"{label} lacks {missing}; each sample needs the keys {list(SAMPLE_KEYS)}")
  num_frames = int(sample["num_frames"])
  poses = np.asarray(sample["camera_pose"], np.float64)
  char_pos = np.asarray(sample["char_pos"], np.float64)
  if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)) or not 1 <= num_frames <= len(poses):
    raise DataError(
      f"{label}: camera_pose must be (T, 3, 4) camera-to-world with T ≥ num_frames = "
      f"{num_frames} ≥ 1, got {poses.shape}"
    )
  if char_pos.ndim != 2 or char_pos.shape[1] != 3 or len(char_pos) < num_frames:
    raise DataError(f"{label}: char_pos must be (T, 3) with T ≥ num_frames = {num_frames}, got {char_pos.shape}")
  poses, char_pos = poses[:num_frames, :3], char_pos[:num_frames]
  if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(char_pos))):
    raise DataError(f"{label}: camera_pose or char_pos has non-finite values")
  half_width, half_height = _half_tangents(sample.get("intrinsics"), label)

  points = np.concatenate([poses[:, :, 3], char_pos])
  lowest, highest = points.min(0), points.max(0)
  center = (lowest + highest) / 2
  radius = max(0.5 * float(np.linalg.norm(highest - lowest)), _MIN_SCENE_RADIUS)
  depth = 0.15 * radius
  # y points down, so the ground is below the largest y (with room for the frusta).
  grid_step = _nice_step(radius / 4)
  grid = {"y": float(highest[1] + depth), "step": grid_step}
  for axis, name in ((0, "x"), (2, "z")):
    grid[f"{name}0"] = math.floor((center[axis] - 1.25 * radius) / grid_step) * grid_step
    grid[f"{name}1"] = math.ceil((center[axis] + 1.25 * radius) / grid_step) * grid_step
  tag_runs = [[str(name), int(start), int(end)] for name, start, end in sample.get("tag_runs", ())]
  return {
    "name": str(sample.get("name", f"sample {index}")),
    "caption": str(sample["caption"]),
    "tags": str(sample["tags"]),
    "tag_runs": tag_runs,
    "num_frames": num_frames,
    "camera_pose": _rounded(poses),
    "char_pos": _rounded(char_pos),
    "frame_colors": time_colors(num_frames),
    "frustum_frames": list(range(0, num_frames, frustum_every)),
    "frustum": {"half_width": half_width, "half_height": half_height, "depth": depth},
    "center": center.tolist(),
    "radius": radius,
    "grid": grid,
  }


def write_html(path, samples: list[dict], frustum_every: int = FRUSTUM_EVERY) -> None:
  """Writes the page for `samples`, each a dict with camera_pose (T, 3, 4) camera-to-world, char_pos (T, 3)
  world positions, caption str, tags str, num_frames int (≤ T; later frames are padding), and optionally
  name str, intrinsics (4,) [fx, fy, cx, cy] (frustum shape) and tag_runs [(name, first_step, end_step), ...]
  (shown with the current run highlighted)."""
  if frustum_every < 1:
    raise ConfigError(f"frustum_every must be a positive number of frames, got {frustum_every}")
  if not samples:
    raise DataError("no samples to visualize")
  data = {
    "fps": FPS,
    "character_color": to_hex(CHARACTER_COLOR),
    "samples": [_page_sample(sample, index, frustum_every) for index, sample in enumerate(samples)],
  }
  # "<" never appears raw inside the <script> element, so no caption can close it.
  data_json = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(
    _PAGE.replace("__STORYJAX_DATA__", data_json).replace("__STORYJAX_SCRIPT__", _SCRIPT), encoding="utf-8"
  )


def samples_from_npz(path, indices=None) -> list[dict]:
  """The samples (all, or those at `indices`) of a samples.npz written by `python -m storyjax.sample`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"samples file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as archive:
      missing = [key for key in NPZ_KEYS if key not in archive.files]
      if missing:
        raise DataError(f"{path} lacks {missing}; expected the keys {list(NPZ_KEYS)} of storyjax.sample")
      arrays = {key: archive[key] for key in NPZ_KEYS}
  except (ValueError, OSError) as error:
    raise DataError(f"unreadable samples file {path}: {error}") from error
  count = len(arrays["camera_pose"])
  indices = list(range(count)) if not indices else [int(index) for index in indices]
  for index in indices:
    if not 0 <= index < count:
      raise DataError(f"sample index {index} is out of range: {path} has {count} samples (0..{count - 1})")
  return [
    {
      "name": f"sample {index}",
      "camera_pose": arrays["camera_pose"][index],
      "char_pos": arrays["char_traj"][index],
      "caption": str(arrays["caption"][index]),
      "tags": str(arrays["tags"][index]),
      "num_frames": int(arrays["mask"][index].sum()),
    }
    for index in indices
  ]


def samples_from_et(root, sample_ids) -> list[dict]:
  """Samples of a released E.T. layout: traj/, char/, caption/, cam_segments/ (tags), optional intrinsics/."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise DataError(f"E.T. dataset directory not found: {root}")
  if not sample_ids:
    raise DataError("give at least one E.T. sample id")
  samples = []
  for sample_id in sample_ids:
    sample = et.read_sample(root, sample_id)
    steps = sample["cam_segments"]
    if np.any((steps < 0) | (steps > tagging.PAD_CLASS)):
      raise DataError(f"{root / 'cam_segments' / f'{sample_id}.npy'} has classes outside 0..{tagging.PAD_CLASS}")
    tag_runs = [
      (tagging.CAMERA_CLASS_NAMES[run_class], start, end)
      for run_class, start, end in tagging.runs(steps)
      if run_class != tagging.PAD_CLASS
    ]
    samples.append(
      {
        "name": sample_id,
        "camera_pose": sample["camera_pose"],
        "char_pos": sample["char_pos"],
        "caption": sample["caption"],
        "tags": " → ".join(name for name, _, _ in tag_runs),
        "tag_runs": tag_runs,
        "num_frames": len(sample["camera_pose"]),
        "intrinsics": _et_intrinsics(root, sample_id),
      }
    )
  return samples


def _et_intrinsics(root: pathlib.Path, sample_id: str):
  """intrinsics/<id>.npy as float64 [fx, fy, cx, cy] (E.T. stores float16), or None when the file is absent."""
  path = root / "intrinsics" / f"{sample_id}.npy"
  return et.load_npy(path).astype(np.float64) if path.is_file() else None


_PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>storyjax camera trajectories</title>
<style>
  html, body { margin: 0; height: 100%; font: 14px/1.35 system-ui, sans-serif; color: #222; background: #fff; }
  body { display: flex; flex-direction: column; }
  #header { padding: 8px 12px 4px; }
  #caption { font-size: 15px; margin: 4px 0; }
  #tags span { display: inline-block; padding: 1px 6px; margin: 1px 2px; border-radius: 3px; background: #eee; }
  #tags span.current { background: #d62728; color: #fff; }
  #view { flex: 1; min-height: 0; width: 100%; cursor: grab; touch-action: none; }
  #controls { display: flex; align-items: center; gap: 10px; padding: 6px 12px 8px; flex-wrap: wrap; }
  #time { flex: 1; min-width: 200px; }
  #frame { min-width: 160px; font-variant-numeric: tabular-nums; }
  #colorbar { width: 120px; height: 12px; border: 1px solid #999; }
  .key { display: inline-block; width: 18px; height: 4px; vertical-align: middle; margin: 0 4px 0 8px; }
  #help { color: #777; font-size: 12px; }
</style>
</head>
<body>
<div id="header">
  <select id="sample" aria-label="sample"></select>
  <div id="caption"></div>
  <div id="tags"></div>
</div>
<canvas id="view"></canvas>
<div id="controls">
  <button id="play" title="play / pause (space)">▶</button>
  <input id="time" type="range" min="0" value="0" aria-label="frame">
  <span id="frame"></span>
  <span>0 s</span><span id="colorbar"></span><span id="duration"></span>
  <span><span class="key" id="key-character"></span>character
    <span class="key" style="background:#d62728"></span>current camera <span id="grid-step"></span></span>
  <span id="help">drag: orbit · shift/right-drag: pan · wheel: zoom · double-click: reset</span>
</div>
<script type="application/json" id="storyjax-data">__STORYJAX_DATA__</script>
<script>
__STORYJAX_SCRIPT__
</script>
</body>
</html>
"""

_SCRIPT = r""""use strict";
// Geometry (pure functions; the tests run them under node). World axes are OpenCV's: y points down.
const WORLD_UP = [0, -1, 0];
const FIELD_OF_VIEW = 50 * Math.PI / 180;
const CURRENT_COLOR = "#d62728";
const BACKGROUND = "#ffffff";

function sub(a, b) { return [a[0] - b[0], a[1] - b[1], a[2] - b[2]]; }
function addScaled(a, b, s) { return [a[0] + s * b[0], a[1] + s * b[1], a[2] + s * b[2]]; }
function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }
function cross(a, b) { return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]; }
function normalize(a) { const n = Math.hypot(a[0], a[1], a[2]); return [a[0] / n, a[1] / n, a[2] / n]; }

// pose: 3x4 rows of camera-to-world [R|t]; p in camera axes (x right, y down, z forward) -> world.
function cameraToWorld(pose, p) {
  return [0, 1, 2].map((i) => pose[i][0] * p[0] + pose[i][1] * p[1] + pose[i][2] * p[2] + pose[i][3]);
}

// World points of a frustum: apex, image corners (top-left, top-right, bottom-right, bottom-left) at
// shape.depth, then the base ends and tip of a triangle over the top edge (image up = camera -y).
function frustumPoints(pose, shape) {
  const d = shape.depth, w = shape.half_width * d, h = shape.half_height * d;
  const local = [[0, 0, 0], [-w, -h, d], [w, -h, d], [w, h, d], [-w, h, d],
                 [-0.4 * w, -h, d], [0.4 * w, -h, d], [0, -h - 0.4 * w, d]];
  return local.map((p) => cameraToWorld(pose, p));
}
const FRUSTUM_EDGES = [[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1], [5, 7], [7, 6]];

// Orbit view: the eye sits `distance` from `target`, turned by yaw about the up axis and raised by pitch.
function viewBasis(view) {
  const toEye = [Math.cos(view.pitch) * Math.sin(view.yaw), -Math.sin(view.pitch),
                 Math.cos(view.pitch) * Math.cos(view.yaw)];
  const forward = [-toEye[0], -toEye[1], -toEye[2]];
  const right = normalize(cross(forward, WORLD_UP));
  return {eye: addScaled(view.target, toEye, view.distance), forward, right, up: cross(right, forward)};
}

// World point -> view coordinates [right, up, depth].
function toView(basis, p) {
  const d = sub(p, basis.eye);
  return [dot(d, basis.right), dot(d, basis.up), dot(d, basis.forward)];
}

// Perspective projection of view coordinates to canvas pixels (y down).
function toScreen(q, focal, width, height) {
  return [width / 2 + focal * q[0] / q[2], height / 2 - focal * q[1] / q[2]];
}

// Keeps the part of segment a-b (view coordinates) in front of depth `near`; null when none is.
function clipSegment(a, b, near) {
  if (a[2] < near && b[2] < near) return null;
  if (a[2] >= near && b[2] >= near) return [a, b];
  const s = (near - a[2]) / (b[2] - a[2]);
  const c = [a[0] + s * (b[0] - a[0]), a[1] + s * (b[1] - a[1]), near];
  return a[2] < near ? [c, b] : [a, c];
}

function defaultView(sample) {
  return {target: sample.center.slice(), yaw: Math.PI - 0.6, pitch: 0.45,
          distance: sample.radius / Math.sin(FIELD_OF_VIEW / 2)};
}

function centreOf(pose) { return [pose[0][3], pose[1][3], pose[2][3]]; }

function main() {
  const data = JSON.parse(document.getElementById("storyjax-data").textContent);
  const canvas = document.getElementById("view");
  const context = canvas.getContext("2d");
  const slider = document.getElementById("time");
  const playButton = document.getElementById("play");
  const selector = document.getElementById("sample");
  const state = {sampleIndex: 0, frame: 0, playing: false, view: null, position: 0, lastTime: null};
  const sample = () => data.samples[state.sampleIndex];
  document.getElementById("key-character").style.background = data.character_color;

  function draw() {
    const s = sample(), ratio = window.devicePixelRatio || 1;
    const width = canvas.width, height = canvas.height;
    const basis = viewBasis(state.view);
    const focal = 0.5 * Math.min(width, height) / Math.tan(FIELD_OF_VIEW / 2);
    const near = 1e-3 * state.view.distance;
    const project = (p) => {
      const q = toView(basis, p);
      return q[2] < near ? null : toScreen(q, focal, width, height);
    };
    function line(p, q, color, lineWidth, dash) {
      const clipped = clipSegment(toView(basis, p), toView(basis, q), near);
      if (!clipped) return;
      const a = toScreen(clipped[0], focal, width, height), b = toScreen(clipped[1], focal, width, height);
      context.strokeStyle = color;
      context.lineWidth = lineWidth * ratio;
      context.setLineDash(dash ? dash.map((x) => x * ratio) : []);
      context.beginPath();
      context.moveTo(a[0], a[1]);
      context.lineTo(b[0], b[1]);
      context.stroke();
    }
    function label(p, text, color) {
      const a = project(p);
      if (!a) return;
      context.fillStyle = color;
      context.font = `${12 * ratio}px system-ui, sans-serif`;
      context.fillText(text, a[0] + 4 * ratio, a[1] - 4 * ratio);
    }
    function disc(p, radius, fill) {
      const a = project(p);
      if (!a) return;
      context.beginPath();
      context.arc(a[0], a[1], radius * ratio, 0, 2 * Math.PI);
      context.fillStyle = fill;
      context.fill();
      context.lineWidth = 1.5 * ratio;
      context.strokeStyle = "#333";
      context.stroke();
    }

    context.fillStyle = BACKGROUND;
    context.fillRect(0, 0, width, height);
    const grid = s.grid;
    for (let x = grid.x0; x <= grid.x1 + 1e-9; x += grid.step) {
      line([x, grid.y, grid.z0], [x, grid.y, grid.z1], "#e2e2e2", 1);
    }
    for (let z = grid.z0; z <= grid.z1 + 1e-9; z += grid.step) {
      line([grid.x0, grid.y, z], [grid.x1, grid.y, z], "#e2e2e2", 1);
    }
    const axisLength = 2 * grid.step;
    for (const [end, color, text] of [[[axisLength, 0, 0], "#c0392b", "x"], [[0, -axisLength, 0], "#27ae60", "up (-y)"],
                                      [[0, 0, axisLength], "#2e6fd8", "z"]]) {
      line([0, 0, 0], end, color, 1.5);
      label(end, text, color);
    }

    const poses = s.camera_pose, chars = s.char_pos, colors = s.frame_colors;
    for (let i = 0; i + 1 < s.num_frames; i++) line(chars[i], chars[i + 1], data.character_color, 2);
    for (let i = 0; i + 1 < s.num_frames; i++) line(centreOf(poses[i]), centreOf(poses[i + 1]), colors[i], 2.5);
    for (const f of s.frustum_frames) {
      const points = frustumPoints(poses[f], s.frustum);
      for (const [a, b] of FRUSTUM_EDGES) line(points[a], points[b], colors[f], 1.2);
    }

    const current = frustumPoints(poses[state.frame], s.frustum);
    const corners = current.slice(1, 5).map(project);
    if (corners.every((c) => c)) {
      context.beginPath();
      corners.forEach((c, i) => (i ? context.lineTo(c[0], c[1]) : context.moveTo(c[0], c[1])));
      context.closePath();
      context.fillStyle = "rgba(214, 39, 40, 0.18)";
      context.fill();
    }
    for (const [a, b] of FRUSTUM_EDGES) line(current[a], current[b], CURRENT_COLOR, 2.5);
    const cameraNow = centreOf(poses[state.frame]), characterNow = chars[state.frame];
    line(cameraNow, [cameraNow[0], grid.y, cameraNow[2]], "#999", 1, [4, 4]);
    line(characterNow, [characterNow[0], grid.y, characterNow[2]], "#999", 1, [4, 4]);
    disc(chars[0], 3, "#fff");
    disc(characterNow, 6, data.character_color);
    disc(cameraNow, 4, CURRENT_COLOR);
  }

  function setFrame(frame) {
    const s = sample();
    state.frame = Math.max(0, Math.min(s.num_frames - 1, Math.round(frame)));
    slider.value = state.frame;
    document.getElementById("frame").textContent =
      `frame ${state.frame} / ${s.num_frames - 1} · ${(state.frame / data.fps).toFixed(2)} s`;
    const step = Math.min(state.frame, Math.max(s.num_frames - 2, 0));
    document.querySelectorAll("#tags span[data-start]").forEach((span) => {
      span.classList.toggle("current", +span.dataset.start <= step && step < +span.dataset.end);
    });
    draw();
  }

  function showSample(index) {
    state.sampleIndex = index;
    const s = sample();
    selector.value = index;
    document.getElementById("caption").textContent = s.caption;
    const tags = document.getElementById("tags");
    tags.textContent = s.tag_runs.length ? "camera tags: " : (s.tags ? `camera tags: ${s.tags}` : "");
    for (const [name, start, end] of s.tag_runs) {
      const span = document.createElement("span");
      span.textContent = `${name} ${start}–${end}`;
      span.dataset.start = start;
      span.dataset.end = end;
      tags.appendChild(span);
    }
    const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => s.frame_colors[Math.round(t * (s.num_frames - 1))]);
    document.getElementById("colorbar").style.background = `linear-gradient(to right, ${stops.join(", ")})`;
    document.getElementById("duration").textContent = `${((s.num_frames - 1) / data.fps).toFixed(2)} s`;
    document.getElementById("grid-step").textContent = `· grid ${s.grid.step} units`;
    slider.max = s.num_frames - 1;
    state.view = defaultView(s);
    setFrame(0);
  }

  function resize() {
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    draw();
  }

  function tick(time) {
    if (!state.playing) return;
    if (state.lastTime !== null) state.position += (time - state.lastTime) / 1000 * data.fps;
    state.lastTime = time;
    if (state.position > sample().num_frames - 1) state.position = 0;
    setFrame(Math.floor(state.position));
    requestAnimationFrame(tick);
  }

  function togglePlay() {
    state.playing = !state.playing;
    playButton.textContent = state.playing ? "❚❚" : "▶";
    if (state.playing) {
      state.position = state.frame >= sample().num_frames - 1 ? 0 : state.frame;
      state.lastTime = null;
      requestAnimationFrame(tick);
    }
  }

  data.samples.forEach((s, i) => {
    const option = document.createElement("option");
    option.value = i;
    option.textContent = `${s.name}: ${s.caption.slice(0, 80)}`;
    selector.appendChild(option);
  });
  selector.style.display = data.samples.length > 1 ? "" : "none";
  selector.addEventListener("change", () => showSample(+selector.value));
  slider.addEventListener("input", () => setFrame(+slider.value));
  playButton.addEventListener("click", togglePlay);

  let drag = null;
  canvas.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.addEventListener("pointerdown", (event) => {
    drag = {x: event.clientX, y: event.clientY, pan: event.shiftKey || event.button === 2};
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    drag.x = event.clientX;
    drag.y = event.clientY;
    const view = state.view;
    if (drag.pan) {
      const basis = viewBasis(view);
      const viewSize = Math.min(canvas.clientWidth, canvas.clientHeight);
      const perPixel = view.distance * 2 * Math.tan(FIELD_OF_VIEW / 2) / viewSize;
      view.target = addScaled(addScaled(view.target, basis.right, -dx * perPixel), basis.up, dy * perPixel);
    } else {
      view.yaw -= 0.008 * dx;
      view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + 0.008 * dy));
    }
    draw();
  });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    state.view.distance *= Math.exp(0.001 * event.deltaY);
    draw();
  }, {passive: false});
  canvas.addEventListener("dblclick", () => { state.view = defaultView(sample()); draw(); });
  window.addEventListener("keydown", (event) => {
    if (event.target.tagName === "SELECT") return;
    if (event.key === " ") { event.preventDefault(); togglePlay(); }
    if (event.key === "ArrowRight") setFrame(state.frame + 1);
    if (event.key === "ArrowLeft") setFrame(state.frame - 1);
  });
  window.addEventListener("resize", resize);

  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const requested = Math.round(+fragment.get("sample") || 0);
  showSample(Math.max(0, Math.min(data.samples.length - 1, requested)));
  resize();
  setFrame(+fragment.get("frame") || 0);
}

if (typeof document !== "undefined") main();"""


def _define_flags() -> None:
  """Flags of the CLI only: importing this module defines none."""
  flags.DEFINE_string("samples", None, "samples.npz written by `python -m storyjax.sample`.")
  flags.DEFINE_multi_integer("index", None, "With --samples: the sample(s) to show (repeat the flag); default all.")
  flags.DEFINE_string("et_root", None, "A released E.T. dataset directory (traj/, char/, caption/, cam_segments/).")
  flags.DEFINE_multi_string("sample_id", None, "With --et_root: the sample id(s) to show (repeat the flag).")
  flags.DEFINE_string(
    "output",
    None,
    "The HTML file to write (default: visualization.html beside --samples, or in the current directory for --et_root).",
  )
  flags.DEFINE_integer("frustum_every", FRUSTUM_EVERY, "Draw a camera frustum every this many frames.", lower_bound=1)


def main() -> None:
  args = flags.FLAGS
  if (args.samples is None) == (args.et_root is None):
    raise ConfigError("give exactly one of --samples=PATH/samples.npz or --et_root=DIR --sample_id=ID")
  if args.samples:
    if args.sample_id:
      raise ConfigError("--sample_id selects E.T. samples (with --et_root); use --index with --samples")
    samples = samples_from_npz(args.samples, args.index)
    output = args.output or pathlib.Path(args.samples).parent / "visualization.html"
  else:
    if args.index:
      raise ConfigError("--index selects from --samples; give --sample_id=ID with --et_root")
    samples = samples_from_et(args.et_root, args.sample_id)
    output = args.output or "visualization.html"
  write_html(output, samples, args.frustum_every)
  print(f"visualization: {output} ({len(samples)} sample{'s' * (len(samples) > 1)}); open it in a browser")


if __name__ == "__main__":
  _define_flags()
  program.run_program(main)
