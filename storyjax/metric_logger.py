"""Training metrics: DIR/metrics.jsonl (one JSON object per logged step) and TensorBoard events.

Names without a slash are TensorBoard's `train/<name>`; evaluation during training logs `eval/<name>`.
"""

import json
import pathlib

from tensorboardX import SummaryWriter


class MetricLogger:
  """Appends metrics to `workdir/metrics.jsonl` and TensorBoard; on resume drops lines past `start_step`."""

  def __init__(self, workdir: pathlib.Path, start_step: int, enabled: bool = True):
    self.path = workdir / "metrics.jsonl"
    self.enabled = enabled
    if not enabled:
      return
    if self.path.exists():  # Steps logged after the last checkpoint are re-run, so drop their lines.
      kept = [
        line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= start_step
      ]
      self.path.write_text("".join(line + "\n" for line in kept))
    self._file = self.path.open("a")
    self._tensorboard = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    self._file.write(json.dumps({"step": step, **metrics}) + "\n")
    self._file.flush()
    for name, value in metrics.items():
      self._tensorboard.add_scalar(name if "/" in name else f"train/{name}", value, step)

  def close(self) -> None:
    if self.enabled:
      self._file.close()
      self._tensorboard.close()
