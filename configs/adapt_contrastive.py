"""ADAPT stage 2 (`adapt` task, stage "contrastive"): the masked transformer learns from modality dropout, on the
frozen encoders of stage 1's run (model.anchor_run).

  python -m storyjax.train --config=configs/adapt_contrastive.py   # → runs/adapt_contrastive

Keys as configs/adapt.py. Its smoke variant needs a stage-1 run: pass --config.model.anchor_run.
"""

from configs import adapt


def get_config(variant: str | None = None):
  config = adapt.get_config(variant, stage="contrastive", name="adapt_contrastive")
  if variant == "smoke":
    config.model.anchor_run = "runs/adapt_anchor_smoke"
  return config
