"""The optimizers of a run: AdamW, or bitsandbytes' 8-bit AdamW (Dettmers et al. 2022, block-wise
quantised optimizer states) where it is installed; every trainable group of a run goes through here."""

from __future__ import annotations

import torch

from hypersd.errors import UserError


def make_optimizer(params, kind: str, lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """AdamW without weight decay (LoRA deltas should not be pulled to zero) of the given kind."""
    if kind == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UserError("training.optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes); "
                            "or use adamw") from None
        return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=0.0)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=0.0)
