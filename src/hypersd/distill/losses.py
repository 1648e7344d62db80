"""Distances between the student's and the target's points on the trajectory (per sample)."""

from __future__ import annotations

import torch


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (LCM, Hyper-SD eq. 4 with d = L2)."""
    return (pred - target).pow(2).flatten(1).mean(1)


def pseudo_huber(pred: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||pred - target||^2 / D + c^2) - c per sample (Song & Dhariwal 2023, "Improved
    techniques for training consistency models", sec. 3.3); D = elements per sample, so c is per element."""
    sq = (pred - target).pow(2).flatten(1).mean(1)
    return (sq + c * c).sqrt() - c
