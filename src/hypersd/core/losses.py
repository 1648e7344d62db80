"""The losses of Hyper-SD's objectives, as functions of tensors (each cites its source).

TSCD's distance d between the student's and the target's points (Hyper-SD eq. 12: MSE, pseudo-Huber,
and the adversarial terms of its hybrid); score distillation's gradient (DMD eq. 7-8); the ReFL
hinge of human feedback learning (Hyper-SD eq. 13).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (LCM, Hyper-SD eq. 4 with d = L2)."""
    return (pred - target).pow(2).flatten(1).mean(1)


def pseudo_huber(pred: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||pred - target||^2 / D + c^2) - c per sample (Song & Dhariwal 2023, "Improved
    techniques for training consistency models", sec. 3.3); D = elements per sample, so c is per element."""
    sq = (pred - target).pow(2).flatten(1).mean(1)
    return (sq + c * c).sqrt() - c


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating GAN loss of the generator (Goodfellow et al. 2014): softplus(-D(fake))."""
    return F.softplus(-fake_logits)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """softplus(-D(real)) + softplus(D(fake)), per sample."""
    return F.softplus(-real_logits) + F.softplus(fake_logits)


def dmd_gradient(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD's per-sample normalised score difference (Yin et al. 2024, eq. 7, with eq. 8's weight
    1 / mean|x - x0_real|)."""
    dims = tuple(range(1, x.ndim))
    weight = 1.0 / (x - x0_real).abs().mean(dims, keepdim=True).clamp_min(1e-6)
    return (x0_fake - x0_real) * weight


def dmd_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5 ||x - sg(x - grad)||^2 per element mean: its gradient w.r.t. x is grad / numel."""
    return 0.5 * F.mse_loss(x, (x - grad).detach())


def refl_hinge(rewards: torch.Tensor, alpha: float) -> torch.Tensor:
    """Hyper-SD eq. 13 for one reward model d: mean over the batch of ReLU(alpha_d - r_d(x0, c)), no
    push once an image scores above alpha_d."""
    return F.relu(alpha - rewards).mean()
