"""The LAION aesthetic predictor (improved-aesthetic-predictor, "sac+logos+ava1-l14-linearMSE"):
CLIP ViT-L/14 image embedding, L2-normalised, into an MLP 768-1024-128-64-16-1. Scores are about
1 to 10; Hyper-SD uses it as one of the rewards of eq. 13.

Weights come from disk only: a transformers CLIP folder (`CLIPVisionModelWithProjection` or a full
`CLIPModel`, e.g. a local copy of openai/clip-vit-large-patch14) and the head as safetensors with
keys `layers.{0,2,4,6,7}.{weight,bias}` (the released `.pth` holds exactly these; convert it with
`hypersd rewards convert-head`, which refuses pickle files without `--allow-pickle`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hypersd.errors import UserError, require
from hypersd.rewards.base import RewardModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_KEYS = ("layers.0", "layers.2", "layers.4", "layers.6", "layers.7")


class AestheticHead(nn.Module):
    """The released MLP (dropout layers kept at their indices so the state-dict keys match)."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """[-1, 1] images -> CLIP input: resize the short side to `size` (bicubic, antialiased), centre
    crop, normalise; differentiable."""
    x = (images.float() + 1) / 2
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                      align_corners=False, antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


def load_clip_vision(folder: Path):
    from transformers import CLIPVisionModelWithProjection

    folder = Path(folder)
    require((folder / "config.json").is_file(), f"CLIP model folder not found (no config.json): {folder}")
    try:
        return CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a CLIP vision model from {folder}: {str(exc).splitlines()[0]}") from None


class LaionAestheticReward(RewardModel):
    name = "laion-aesthetic"

    def __init__(self, clip_folder: Path, head_file: Path):
        super().__init__()
        from safetensors.torch import load_file

        head_file = Path(head_file)
        require(head_file.is_file(), f"aesthetic head weights not found: {head_file}")
        require(head_file.suffix == ".safetensors",
                f"aesthetic head must be .safetensors (convert a .pth with `hypersd rewards convert-head`): {head_file}")
        self.clip = load_clip_vision(clip_folder)
        self.size = self.clip.config.image_size
        state = load_file(str(head_file))
        dim = state["layers.0.weight"].shape[1] if "layers.0.weight" in state else -1
        require(dim == self.clip.config.projection_dim,
                f"aesthetic head expects {dim}-d embeddings, the CLIP model gives {self.clip.config.projection_dim}")
        self.head = AestheticHead(dim)
        self.head.load_state_dict(state)
        self.freeze()

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pixels = clip_preprocess(images, self.size).to(self.clip.dtype)
        embeds = self.clip(pixel_values=pixels).image_embeds.float()
        embeds = embeds / embeds.norm(dim=-1, keepdim=True)
        return self.head.to(embeds.device)(embeds)[:, 0]
