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


class PerceptualModel(nn.Module):
    """The perceptual term of feedback learning (Hyper-SD eq. 14) as a plug-in: it supplies real
    images with annotations and judges a generated x0 against them with a frozen model (SOLO's
    instance loss in the paper). Feedback learning noises the images, lets the student predict x0,
    decodes it and back-propagates `loss` through it."""

    name = "perceptual"

    def freeze(self) -> "PerceptualModel":
        self.eval()
        self.requires_grad_(False)
        return self

    def annotated_batch(self, n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """n real images in [-1, 1] (n, 3, H, W), their annotations and captions; a function of `seed`."""
        raise NotImplementedError

    def loss(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frozen model's loss of `images` (in [-1, 1], with gradient) against `targets`."""
        raise NotImplementedError
