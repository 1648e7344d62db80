"""In-memory Shapes datasets for training: seeded streams of (image tensor, caption, scene)."""

from __future__ import annotations

import random

import numpy as np
import torch

from hypersd.shapes.world import Scene, render_array, sample_scene


def to_tensor(images_uint8: np.ndarray) -> torch.Tensor:
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float in [-1, 1], the VAE's input range."""
    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) float in [-1, 1] -> (n, H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur, noise and colour jitter: generated images are never as clean as renders."""
    n = x.shape[0]
    mix = torch.rand(n, 1, 1, 1, generator=gen) * 0.6
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = x * (1 - mix) + blurred * mix
    x = x + torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.06
    x = x * (1 + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.1)
    return x.clamp(-1, 1)


class ShapesStream:
    """An endless, seeded stream of freshly rendered Shapes batches."""

    def __init__(self, seed: int, canvas: int = 32):
        self.rng = random.Random(seed)
        self.canvas = canvas

    def scenes(self, n: int) -> list[Scene]:
        return [sample_scene(self.rng, canvas=self.canvas) for _ in range(n)]

    def batch(self, n: int) -> tuple[torch.Tensor, list[str], list[Scene]]:
        scenes = self.scenes(n)
        return to_tensor(render_array(scenes)), [s.caption for s in scenes], scenes
