"""E.T.-style camera and character trajectories: conventions, taggers, captioner, the embedded procedural set,
the released layout and the configured source."""
