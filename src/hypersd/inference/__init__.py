"""Inference: sampling settings, samplers and sample folders, prompt files, grids, ControlNet, fusing."""
