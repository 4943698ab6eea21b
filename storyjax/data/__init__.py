"""Data: E.T. conventions and tagger, procedural datasets, tokenizers, Grain pipelines."""
