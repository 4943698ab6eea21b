"""Evaluation metrics shared across models: distribution distances (FD, PRDC), CLaTr scores, the scene judge."""
