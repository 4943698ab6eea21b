"""The kidney-transplant data keys CosEmb's and MEDIMP's configs share (storyjax/data/medical/kidney.py).

root            "" = the embedded procedural cohort; else a directory in the published NIfTI layout
train_patients, test_patients, volume_size (S of the (S, S, S) volumes), missing_rate (per exam), num_sequences
seed            the embedded cohort's; also the train/test split of a real root and the folds
"""

import ml_collections


def kidney_data(config: ml_collections.ConfigDict, variant: str | None) -> None:
  """Adds the kidney data keys to `config.data` (smaller for the smoke variant)."""
  config.data.update(
    {
      "root": "",
      "train_patients": 400,
      "test_patients": 200,
      "volume_size": 16,
      "missing_rate": 0.25,
      "num_sequences": 2,
      "seed": 0,
    }
  )
  if variant == "smoke":
    config.data.update({"train_patients": 24, "test_patients": 12})
