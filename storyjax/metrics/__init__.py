"""Evaluation metrics shared across models: distribution distances (FD, PRDC), CLaTr scores, the scene judge,
classification metrics (`classification`; its average_precision, LAEO-Net's metric, is re-exported here) and
clustering metrics (`clustering`; nmi and weighted_cluster_purity, the face-clustering scores, re-exported here)."""

from storyjax.metrics.classification import average_precision
from storyjax.metrics.clustering import nmi, weighted_cluster_purity

__all__ = ["average_precision", "nmi", "weighted_cluster_purity"]
