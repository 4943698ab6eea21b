"""Experiment configs: `get_config(variant)` files, selected with --config=configs/<name>.py[:variant]."""
