"""The DDIM jump Psi of Hyper-SD (Ren et al. 2024, eq. 3; Song et al. 2021, eq. 12 with eta = 0).

The model stays an epsilon-predictor: from x_t and its epsilon estimate, predict
x0 = (x_t - sigma_t eps) / alpha_t and land at t' with x_t' = alpha_t' x0 + sigma_t' eps, where
alpha_t = sqrt(alphabar_t) and sigma_t = sqrt(1 - alphabar_t). A target timestep of -1 means the
clean image (alpha = 1, sigma = 0).
"""

from __future__ import annotations

import torch


def _alpha_sigma(alphas_cumprod: torch.Tensor, t: torch.Tensor, ndim: int):
    ac = torch.where(t >= 0, alphas_cumprod[t.clamp_min(0)], torch.ones_like(t, dtype=alphas_cumprod.dtype))
    shape = (-1,) + (1,) * (ndim - 1)
    return ac.sqrt().view(shape), (1 - ac).sqrt().view(shape)


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor):
    alpha, sigma = _alpha_sigma(alphas_cumprod, t, x_t.ndim)
    return (x_t - sigma * eps) / alpha


def ddim_jump(x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Psi(x_t, eps, t -> t_next), per sample; t and t_next are integer tensors of shape (n,)."""
    x0 = predict_x0(x_t, eps, t, alphas_cumprod)
    alpha_next, sigma_next = _alpha_sigma(alphas_cumprod, t_next, x_t.ndim)
    return alpha_next * x0 + sigma_next * eps


def training_grid(num_train_timesteps: int = 1000, skip: int = 20) -> torch.Tensor:
    """t_0 < ... < t_{N-1} = T - 1 with t_n - t_{n-1} = skip (N = T / skip; LCM's DDIM grid)."""
    return torch.arange(num_train_timesteps - 1, -1, -skip).flip(0)
