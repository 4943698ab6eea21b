"""Evaluation metrics shared across models (trajectory-feature metrics arrive with CLaTr)."""
