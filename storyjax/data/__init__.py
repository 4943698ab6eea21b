"""Data: the source protocol and Grain pipeline (pipeline.py), then one subpackage per domain (et/: E.T.-style
camera trajectories; images/: procedural images)."""
