"""Images: procedural image datasets whose ground truth is known."""
