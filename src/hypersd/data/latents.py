"""Images to VAE posteriors: the mean and std that training re-samples latents from at every draw."""

from __future__ import annotations

import torch

from hypersd.progress import progress


@torch.no_grad()
def posterior(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE posterior's mean and std (fp32, on the CPU) of images in [-1, 1]."""
    dist = vae.encode(images.to(vae.device, vae.dtype)).latent_dist
    return dist.mean.float().cpu(), dist.std.float().cpu()


def encode_posteriors(vae, images: torch.Tensor, batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """posterior() of many images, `batch` at a time, with a progress bar."""
    means, stds = [], []
    for start in progress(range(0, len(images), batch), desc="encode latents"):
        mean, std = posterior(vae, images[start:start + batch])
        means.append(mean)
        stds.append(std)
    return torch.cat(means), torch.cat(stds)
