"""The reward-model plug-in interface of human feedback learning (Hyper-SD section 3.2).

A reward model is frozen and differentiable: `score(images, prompts)` takes images in [-1, 1]
(n, 3, H, W), any float dtype and device, and returns one score per image (n,) through which the
student's gradient flows. Models resize and normalise images themselves.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class RewardModel(nn.Module):
    """Base class: frozen on construction by `freeze()`; subclasses implement `score`."""

    name = "reward"

    def freeze(self) -> "RewardModel":
        self.eval()
        self.requires_grad_(False)
        return self

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        return self.score(images, prompts)
