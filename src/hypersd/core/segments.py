"""Trajectory segments of TSCD (Hyper-SD, Ren et al. 2024, sec. 3.1 and Algorithm 1).

A stage with k segments splits the timesteps [0, T) into k equal parts. The lower edges are the
timesteps of k-step DDIM with "trailing" spacing, -1 standing for the clean image:
k = 4 gives edges -1, 249, 499, 749 and segments (-1, 249], (249, 499], (499, 749], (749, 999].
A k-segment LoRA sampled with k trailing DDIM steps therefore jumps exactly from one segment's top
to the next one's, which is what it was trained to do.

Segments are half-open (lower, upper]: a timestep exactly on an edge belongs to the segment below.
The boundary t_b of a training pair (t_n, t_{n-1}) is the lower edge of t_n's segment, but never
above t_{n-1}: when the teacher step crosses an edge (possible when the grid skip does not divide
T / k) or lands on it, t_b = t_{n-1} and the pair is a boundary step whose target is the teacher's
own jump, as at t = 0 in consistency models.
"""

from __future__ import annotations

import numpy as np
import torch


def trailing_timesteps(k: int, num_train_timesteps: int = 1000) -> list[int]:
    """The timesteps of k-step DDIM with "trailing" spacing, highest first (999, 749, 499, 249 for
    k = 4), as diffusers computes them."""
    if k < 1 or k > num_train_timesteps:
        raise ValueError(f"segments must be in [1, {num_train_timesteps}], got {k}")
    return (np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / k)).astype(np.int64) - 1).tolist()


def segment_edges(k: int, num_train_timesteps: int = 1000) -> torch.Tensor:
    """Lower edges of the k segments, ascending, starting at -1: the trailing timesteps below the top."""
    trailing = sorted(trailing_timesteps(k, num_train_timesteps))
    return torch.tensor([-1, *trailing[:-1]], dtype=torch.int64)


def segment_boundary(t_n: torch.Tensor, t_prev: torch.Tensor, k: int,
                     num_train_timesteps: int = 1000) -> torch.Tensor:
    """t_b per sample: the lower edge of the segment holding t_n, capped at t_{n-1}."""
    edges = segment_edges(k, num_train_timesteps).to(t_n.device)
    lower = edges[torch.searchsorted(edges, t_n, right=False) - 1]  # last edge strictly below t_n
    return torch.minimum(lower, t_prev)


def sample_t_end(t_b: torch.Tensor, t_prev: torch.Tensor, mode: str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """t_end per sample: uniform integer in [t_b, t_{n-1}] (paper) or the edge t_b ("edge", PCM-style)."""
    if mode == "edge":
        return t_b.clone()
    if mode != "uniform":
        raise ValueError(f"t_end mode must be 'uniform' or 'edge', got {mode!r}")
    u = torch.rand(t_b.shape, generator=generator, device=t_b.device)
    return t_b + (u * (t_prev - t_b + 1).to(u.dtype)).long().clamp_max(t_prev - t_b)


def sample_grid_pair(grid: torch.Tensor, batch: int, generator: torch.Generator | None = None):
    """(t_n, t_{n-1}) with n uniform in {1, ..., N-1} (Algorithm 1, line 4)."""
    n = torch.randint(1, len(grid), (batch,), generator=generator)
    return grid[n], grid[n - 1]
