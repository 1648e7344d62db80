"""Image metrics: Frechet distance (Heusel et al. 2017, eq. 6) and PSNR."""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FD between Gaussian fits of two feature sets (n, d): |mu_a - mu_b|^2 + Tr(Sa + Sb - 2 sqrt(Sa Sb))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        eps = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 images (n, H, W, 3), peak 255; identical images give inf."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(255.0 ** 2 / mse)


def psnr_tensor(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of float images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(4.0 / mse)


def mean_finite(values: np.ndarray) -> float:
    """Mean PSNR over images; identical pairs (inf) are capped at 100 dB so means stay finite."""
    return float(np.minimum(values, 100.0).mean())
