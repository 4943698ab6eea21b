"""ADAPT stage 1 (`adapt` task, stage "anchor"): every modality's encoder aligned to the video anchor by InfoNCE.

  python -m storyjax.train --config=configs/adapt_anchor.py        # → runs/adapt_anchor
  python -m storyjax.train --config=configs/adapt_anchor.py:smoke  # seconds

Keys as configs/adapt.py.
"""

from configs import adapt


def get_config(variant: str | None = None):
  return adapt.get_config(variant, stage="anchor", name="adapt_anchor")
