"""Training data for distillation: a pool of encoded latents (posterior mean and std) with captions.

Latents are re-sampled from the posterior at every draw. Sources: the Shapes world (freshly
rendered, seeded) or an image folder (images + captions, see hypersd.data.imagefolder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hypersd.errors import UserError
from hypersd.progress import progress


@dataclass
class Batch:
    """One training batch. `time_ids` (n, 6): SDXL's size conditioning per image, in pixels:
    original height, width, crop top, left, target height, width (None: uncropped at the model's
    size). `cond`: cached text conditioning (None: the loop encodes the captions)."""

    latents: torch.Tensor
    captions: list[str]
    time_ids: torch.Tensor | None = None
    cond: object | None = None  # hypersd.models.adapter.Conditioning


@dataclass
class LatentPool:
    means: torch.Tensor
    stds: torch.Tensor
    captions: list[str]
    scaling_factor: float

    def __len__(self) -> int:
        return len(self.captions)

    def draw(self, batch: int) -> Batch:
        """A random batch (global torch RNG, so a resumed run draws the same batches)."""
        idx = torch.randint(0, len(self), (batch,))
        latents = self.means[idx] + self.stds[idx] * torch.randn_like(self.means[idx])
        return Batch(latents * self.scaling_factor, [self.captions[i] for i in idx.tolist()])


@torch.no_grad()
def _encode(vae, images: torch.Tensor, batch: int = 250):
    means, stds = [], []
    for start in progress(range(0, len(images), batch), desc="encode latents"):
        dist = vae.encode(images[start:start + batch].to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def shapes_pool(vae, n: int, seed: int) -> LatentPool:
    from hypersd.shapes.batches import ShapesStream

    images, captions, _ = ShapesStream(seed).batch(n)
    means, stds = _encode(vae, images)
    return LatentPool(means, stds, captions, vae.config.scaling_factor)


def folder_pool(vae, root: Path, size: int) -> LatentPool:
    from hypersd.data.imagefolder import load_images, read_image_folder
    from hypersd.shapes.batches import to_tensor

    if not Path(root).is_dir():
        raise UserError(f"data folder not found: {root}")
    folder = read_image_folder(root)
    images, captions = load_images(folder, size)
    if len(captions) == 0:
        skipped = ", ".join(f"{v} {k}" for k, v in folder.skipped.items()) or "no images"
        raise UserError(f"no usable training images in {root} ({skipped})")
    means, stds = _encode(vae, to_tensor(images))
    return LatentPool(means, stds, captions, vae.config.scaling_factor)


def build_pool(vae, data: str, n: int, seed: int, size: int) -> LatentPool:
    """`data` is "shapes" or an image-folder path."""
    return shapes_pool(vae, n, seed) if data == "shapes" else folder_pool(vae, Path(data), size)
