"""Distillation training: recipes, the objectives, the run and its stages, checkpoints, parallelism."""
