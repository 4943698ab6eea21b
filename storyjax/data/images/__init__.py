"""Images: procedural datasets whose ground truth is known (shapes, captioned scenes) and real-data sources
(webdataset shards, image folders, TFDS), plus the SD-VAE latent cache command."""
