"""Distillation methods: each one a class with `train_step`, sharing the model adapter and the loop."""
