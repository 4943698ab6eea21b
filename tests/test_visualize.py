"""storyjax.visualize: a self-contained page whose embedded data round-trips; frusta and colours by frame; the
E.T. layout input and its errors; the CLI; the page's geometry under node and its pixels under headless Chromium
(each skipped when the program is missing)."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest

from storyjax import visualize
from storyjax.data.et import procedural, tagging
from storyjax.data.et.camera import write_kitti_poses
from storyjax.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("fast_compile")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Known values of matplotlib's viridis at 0, 0.5 and 1.
VIRIDIS_START, VIRIDIS_MIDDLE, VIRIDIS_END = "#440154", "#21918c", "#fde725"
TAB_ORANGE, CURRENT_RED = (255, 127, 14), (214, 39, 40)


def _generated(index: int, max_frames: int = 60) -> dict:
  sample = procedural.generate_sample(0, "pure", "test", index, max_frames=max_frames)
  return {
    "camera_pose": sample["camera_pose"],
    "char_pos": sample["char_pos"],
    "caption": sample["caption"],
    "tags": "push_in",
    "num_frames": len(sample["camera_pose"]),
    "intrinsics": sample["intrinsics"],
  }


def _page_parts(path: pathlib.Path) -> tuple[str, dict, str]:
  """A written page → (its text, the embedded JSON, the code of its inline script)."""
  page = path.read_text(encoding="utf-8")
  data = re.search(r'<script type="application/json" id="storyjax-data">(.*?)</script>', page, re.S)
  code = re.search(r"<script>\n(.*?)\n</script>", page, re.S)
  assert data and code, "the page lacks its data or script element"
  return page, json.loads(data.group(1)), code.group(1)


def _hex_rgb(color: str) -> np.ndarray:
  return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])


def test_page_is_self_contained_and_data_round_trips(tmp_path):
  first, second = _generated(0), _generated(1)
  # Padding after num_frames (as in samples.npz) must not reach the page.
  second["camera_pose"] = np.concatenate([second["camera_pose"], np.zeros((7, 3, 4))])
  second["char_pos"] = np.concatenate([second["char_pos"], np.full((7, 3), 99.0)])
  second["caption"] = "a caption that tries </script><script>alert(1)</script> to close the data element"
  path = tmp_path / "page.html"
  visualize.write_html(path, [first, second])
  page, data, _ = _page_parts(path)
  for external in ("http://", "https://", "<script src", "<link ", "@import"):
    assert external not in page, f"the page refers to an external resource: {external!r}"
  assert page.count("</script>") == 2
  assert len(data["samples"]) == 2
  for original, embedded in zip((first, second), data["samples"]):
    num_frames = original["num_frames"]
    assert embedded["num_frames"] == num_frames and embedded["caption"] == original["caption"]
    np.testing.assert_allclose(embedded["camera_pose"], original["camera_pose"][:num_frames], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(embedded["char_pos"], original["char_pos"][:num_frames], rtol=1e-6, atol=1e-9)


def test_frusta_and_colours_follow_the_time_index(tmp_path):
  sample = _generated(2)
  sample["num_frames"] = 31
  path = tmp_path / "page.html"
  visualize.write_html(path, [sample], frustum_every=7)
  embedded = _page_parts(path)[1]["samples"][0]
  assert embedded["frustum_frames"] == [0, 7, 14, 21, 28]
  colors = embedded["frame_colors"]
  assert len(colors) == 31
  assert (colors[0], colors[15], colors[30]) == (VIRIDIS_START, VIRIDIS_MIDDLE, VIRIDIS_END)
  # viridis brightens monotonically, so later frames (and frusta) are lighter.
  luminance = np.array([_hex_rgb(color) @ np.array([0.2126, 0.7152, 0.0722]) for color in colors])
  assert np.all(np.diff(luminance) >= 0) and luminance[-1] > 3 * luminance[0]
  fx, fy, cx, cy = sample["intrinsics"]
  assert embedded["frustum"]["half_width"] == pytest.approx(cx / fx)
  assert embedded["frustum"]["half_height"] == pytest.approx(cy / fy)


def test_bad_inputs_raise_errors_naming_the_problem(tmp_path):
  sample = _generated(0)
  with pytest.raises(DataError, match=r"lacks \['char_pos'\]"):
    visualize.write_html(tmp_path / "a.html", [{key: value for key, value in sample.items() if key != "char_pos"}])
  with pytest.raises(DataError, match="camera_pose must be"):
    visualize.write_html(tmp_path / "a.html", [dict(sample, camera_pose=np.zeros((5, 12)))])
  with pytest.raises(DataError, match="intrinsics"):
    visualize.write_html(tmp_path / "a.html", [dict(sample, intrinsics=np.array([0.0, 1.0, 1.0, 1.0]))])
  with pytest.raises(ConfigError, match="frustum_every"):
    visualize.write_html(tmp_path / "a.html", [sample], frustum_every=0)
  assert not (tmp_path / "a.html").exists()


def _write_et_layout(root: pathlib.Path, sample_id: str, num_frames: int = 40) -> dict:
  """A one-sample E.T. layout: the camera pushes in for 20 steps, then trucks right; the character walks +x."""
  step = np.where(np.arange(num_frames - 1)[:, None] < 20, [0.0, 0.0, 0.04], [0.04, 0.0, 0.0])
  poses = np.zeros((num_frames, 3, 4))
  poses[:, :, :3] = np.eye(3)
  poses[:, :, 3] = np.concatenate([[[0.0, 0.0, -2.0]], [0.0, 0.0, -2.0] + np.cumsum(step, 0)])
  char_pos = np.stack([np.linspace(0, 1, num_frames), np.zeros(num_frames), np.zeros(num_frames)], -1)
  push_in, trucking_right = (tagging.CAMERA_CLASS_NAMES.index(name) for name in ("push_in", "trucking_right"))
  for folder in ("traj", "char", "caption", "cam_segments", "intrinsics"):
    (root / folder).mkdir(parents=True, exist_ok=True)
  write_kitti_poses(root / "traj" / f"{sample_id}.txt", poses)
  np.save(root / "char" / f"{sample_id}.npy", char_pos)
  (root / "caption" / f"{sample_id}.txt").write_text("The camera pushes in, then trucks right.", encoding="utf-8")
  np.save(root / "cam_segments" / f"{sample_id}.npy", np.repeat([push_in, trucking_right], [20, num_frames - 21]))
  np.save(root / "intrinsics" / f"{sample_id}.npy", np.array([1400.0, 1400.0, 640.0, 360.0], np.float16))
  return {"camera_pose": poses, "char_pos": char_pos}


def test_et_layout_input_and_missing_files(tmp_path):
  sample_id = "2015_aBcDeFgHiJk_00003_00001"
  written = _write_et_layout(tmp_path / "et", sample_id)
  (sample,) = visualize.samples_from_et(tmp_path / "et", [sample_id])
  assert sample["tags"] == "push_in → trucking_right"
  assert sample["tag_runs"] == [("push_in", 0, 20), ("trucking_right", 20, 39)]
  visualize.write_html(tmp_path / "page.html", [sample])
  embedded = _page_parts(tmp_path / "page.html")[1]["samples"][0]
  np.testing.assert_allclose(embedded["camera_pose"], written["camera_pose"], atol=1e-6)
  np.testing.assert_allclose(embedded["char_pos"], written["char_pos"], atol=1e-6)
  assert embedded["tag_runs"] == [["push_in", 0, 20], ["trucking_right", 20, 39]]
  assert embedded["frustum"]["half_width"] == pytest.approx(640 / 1400) and embedded["name"] == sample_id

  for folder, suffix in (("char", "npy"), ("caption", "txt"), ("cam_segments", "npy"), ("traj", "txt")):
    missing = tmp_path / "et" / folder / f"{sample_id}.{suffix}"
    missing.unlink()
    with pytest.raises(DataError, match=re.escape(str(missing))):
      visualize.samples_from_et(tmp_path / "et", [sample_id])
    _write_et_layout(tmp_path / "et", sample_id)
  with pytest.raises(DataError, match="not found"):
    visualize.samples_from_et(tmp_path / "nowhere", [sample_id])


def _write_samples_npz(path: pathlib.Path, samples: list[dict], max_frames: int = 60) -> None:
  """The keys `python -m storyjax.sample` writes, zero-padded to max_frames."""
  arrays = {
    "camera_pose": np.zeros((len(samples), max_frames, 3, 4)),
    "camera_traj": np.zeros((len(samples), max_frames, 9)),
    "char_traj": np.zeros((len(samples), max_frames, 3)),
    "mask": np.zeros((len(samples), max_frames), bool),
  }
  for index, sample in enumerate(samples):
    arrays["camera_pose"][index, : sample["num_frames"]] = sample["camera_pose"]
    arrays["char_traj"][index, : sample["num_frames"]] = sample["char_pos"]
    arrays["mask"][index, : sample["num_frames"]] = True
  np.savez(
    path,
    **arrays,
    caption=np.array([sample["caption"] for sample in samples]),
    tags=np.array([sample["tags"] for sample in samples]),
  )


def test_cli_writes_the_selected_samples(tmp_path):
  samples = [_generated(0), _generated(1), _generated(2)]
  _write_samples_npz(tmp_path / "samples.npz", samples)
  command = [
    sys.executable,
    "-m",
    "storyjax.visualize",
    f"--samples={tmp_path / 'samples.npz'}",
    "--index=2",
    "--index=0",
  ]
  result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  embedded = _page_parts(tmp_path / "visualization.html")[1]["samples"]
  assert [sample["name"] for sample in embedded] == ["sample 2", "sample 0"]
  for index, sample in zip((2, 0), embedded):
    assert sample["caption"] == samples[index]["caption"] and sample["num_frames"] == samples[index]["num_frames"]
    np.testing.assert_allclose(sample["camera_pose"], samples[index]["camera_pose"], rtol=1e-6, atol=1e-9)


def test_script_parses_and_its_geometry_matches_numpy(tmp_path):
  node = shutil.which("node")
  if node is None:
    pytest.skip("node is not installed")
  sample = _generated(3)
  visualize.write_html(tmp_path / "page.html", [sample])
  _, data, code = _page_parts(tmp_path / "page.html")
  (tmp_path / "page.js").write_text(code, encoding="utf-8")
  check = subprocess.run([node, "--check", str(tmp_path / "page.js")], capture_output=True, text=True, timeout=60)
  assert check.returncode == 0, check.stderr

  embedded = data["samples"][0]
  pose, shape = embedded["camera_pose"][17], embedded["frustum"]
  points = np.array([[0.3, -0.2, 1.5], [-1.0, 0.4, 2.5], [0.5, 0.1, 4.0]])
  view = {"target": [0.1, -0.2, 0.3], "yaw": np.pi, "pitch": 0.0, "distance": 2.0}
  probe = (
    f"const pose = {json.dumps(pose)}, shape = {json.dumps(shape)}, view = {json.dumps(view)};\n"
    f"const basis = viewBasis(view);\n"
    f"console.log(JSON.stringify({{frustum: frustumPoints(pose, shape), "
    f"screen: {json.dumps(points.tolist())}.map((p) => toScreen(toView(basis, p), 800, 1200, 700)), "
    f"clipped: clipSegment([0, 0, -1], [2, 4, 3], 1)}}));\n"
  )
  (tmp_path / "probe.js").write_text(code + "\n" + probe, encoding="utf-8")
  result = subprocess.run([node, str(tmp_path / "probe.js")], capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  output = json.loads(result.stdout)

  # Pinhole back-projection of the image corners (W = 2·cx, H = 2·cy) at the frustum depth, OpenCV axes.
  fx, fy, cx, cy = sample["intrinsics"].astype(np.float64)
  depth, pose = shape["depth"], np.array(pose)
  corners = [
    ((u - cx) / fx * depth, (v - cy) / fy * depth, depth)
    for u, v in ((0, 0), (2 * cx, 0), (2 * cx, 2 * cy), (0, 2 * cy))
  ]
  expected = [pose[:, 3]] + [pose[:, :3] @ corner + pose[:, 3] for corner in corners]
  np.testing.assert_allclose(output["frustum"][:5], expected, rtol=1e-5, atol=1e-6)
  top_tip = pose[:, :3].T @ (np.array(output["frustum"][7]) - pose[:, 3])
  assert top_tip[1] < -cy / fy * depth  # the "up" triangle sits above the image (camera −y)

  # yaw = π, pitch = 0 looks along +z with up −y: an OpenCV camera with R = I at target − distance·z.
  eye = np.array(view["target"]) - [0.0, 0.0, view["distance"]]
  relative = points - eye
  expected_screen = np.stack(
    [600 + 800 * relative[:, 0] / relative[:, 2], 350 + 800 * relative[:, 1] / relative[:, 2]], -1
  )
  np.testing.assert_allclose(output["screen"], expected_screen, rtol=1e-9, atol=1e-9)
  np.testing.assert_allclose(output["clipped"], [[1, 2, 1], [2, 4, 3]], atol=1e-12)


def _find_chromium():
  return next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
  )


def test_headless_chromium_draws_the_scene(tmp_path):
  chromium = _find_chromium()
  if chromium is None:
    pytest.skip("no Chromium installed")
  visualize.write_html(tmp_path / "page.html", [_generated(4)])
  # Only the canvas is painted: the caption, tag and legend colours must not count as drawn scene.
  page = (tmp_path / "page.html").read_text(encoding="utf-8")
  (tmp_path / "page.html").write_text(
    page.replace("</style>", "#header, #controls { visibility: hidden; }\n</style>"), encoding="utf-8"
  )
  screenshot = tmp_path / "page.png"
  result = subprocess.run(
    [
      chromium,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--hide-scrollbars",
      "--force-device-scale-factor=1",
      f"--user-data-dir={tmp_path / 'profile'}",
      "--window-size=800,600",
      f"--screenshot={screenshot}",
      f"file://{tmp_path / 'page.html'}#frame=30",
    ],
    capture_output=True,
    text=True,
    timeout=90,
  )
  if not screenshot.is_file():
    pytest.fail(f"Chromium wrote no screenshot: {result.stderr[-2000:]}")
  pixels = np.round(matplotlib.image.imread(screenshot)[..., :3] * 255)
  assert pixels.shape == (600, 800, 3)

  def count_near(color, tolerance=40):
    return int((np.abs(pixels - color).max(-1) <= tolerance).sum())

  drawn = int((pixels.min(-1) < 200).sum())  # beyond the white background and the light grey grid
  assert drawn > 0.005 * pixels.shape[0] * pixels.shape[1]
  assert count_near(CURRENT_RED) > 50, "no current frustum"
  assert count_near(TAB_ORANGE) > 30, "no character path"
  assert count_near(_hex_rgb(VIRIDIS_START)) > 20, "no early (dark purple) frusta"
