"""What the training loop asks of an objective (hypersd.train.stages)."""

from __future__ import annotations

from typing import Protocol

import torch

from hypersd.models.sd import Conditioning


class Objective(Protocol):
    """One training stage's losses. The loop draws a batch, calls `losses`, back-propagates
    `parts["loss"]` into the stage's trained parameters, steps their optimizer, and then steps the
    discriminator heads with `parts["d_loss"]` when there is one; `after_step` runs once per
    optimizer step (after gradient accumulation)."""

    def losses(self, x0: torch.Tensor, cond: Conditioning, uncond: Conditioning,
               captions: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Loss parts of one micro-batch of clean latents x0 with their (and the empty prompt's)
        conditioning: "loss" (scalar, with gradient) and any named parts to log."""
        ...

    def after_step(self) -> None:
        """Per-step bookkeeping: the EMA target's update, step counters."""
        ...
