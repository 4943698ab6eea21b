"""Evaluation metrics shared across models: distribution distances (FD, PRDC) in `distribution.py`."""
