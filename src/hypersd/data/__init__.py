"""Training data: image folders, tar shards and latent caches on disk, and the batches a run draws."""
