"""Evaluation metrics shared across models: distribution distances (FD, PRDC), CLaTr scores, the scene judge,
classification metrics (`classification`; its average_precision, LAEO-Net's metric, is re-exported here)."""

from storyjax.metrics.classification import average_precision

__all__ = ["average_precision"]
