"""The perceptual model of Hyper-SD's eq. 14 for the Shapes world: a bottom-up instance segmenter.

Hyper-SD uses SOLO (an instance segmentation network) and back-propagates its loss against the
ground-truth instances of a real image through the student's x0 prediction. Here the network is a
small U-Net with the three heads of Panoptic-DeepLab (Cheng et al. 2020): per-pixel semantic class
(background or colour x shape), object-centre heatmap and per-pixel offset to the centre. It is
trained on rendered Shapes images with their exact masks, and is unrelated to the ShapesEval
evaluator (different architecture, targets, seed and weights; none shared).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hypersd.errors import require
from hypersd.io import atomic_dir, require_finite
from hypersd.rewards.base import PerceptualModel
from hypersd.shapes.annotations import NUM_CLASSES, class_name, dense_targets
from hypersd.shapes.batches import ShapesStream

WEIGHTS, CONFIG = "segmenter.safetensors", "config.json"


@dataclass
class SegmenterConfig:
    width: int = 32
    semantic_weight: float = 1.0
    center_weight: float = 50.0  # the heatmap is mostly ~0: MSE needs a large weight (PDL uses 200)
    offset_weight: float = 0.05  # L1 in pixels on foreground pixels (PDL uses 0.01)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())


class ShapesSegmenter(nn.Module):
    """Images in [-1, 1] (n, 3, H, W) -> {"semantic": logits, "center": heatmap, "offset": pixels}."""

    def __init__(self, config: SegmenterConfig | None = None):
        super().__init__()
        self.config = config or SegmenterConfig()
        w = self.config.width
        self.enc1, self.enc2, self.enc3 = _block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.dec2, self.dec1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.heads = nn.Conv2d(w, NUM_CLASSES + 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(F.avg_pool2d(e1, 2))
        e3 = self.enc3(F.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        out = self.heads(d1)
        return {"semantic": out[:, :NUM_CLASSES], "center": torch.sigmoid(out[:, NUM_CLASSES:NUM_CLASSES + 1]),
                "offset": out[:, NUM_CLASSES + 1:]}

    # ------------------------------------------------------------------ files
    def save(self, folder: Path, overwrite: bool = False) -> None:
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        require_finite(state, f"the segmenter {folder}")
        with atomic_dir(folder, overwrite) as tmp:
            save_file(state, str(tmp / WEIGHTS))
            (tmp / CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "ShapesSegmenter":
        folder = Path(folder)
        require((folder / WEIGHTS).is_file(), f"segmenter weights not found: {folder / WEIGHTS}")
        model = cls(SegmenterConfig(**json.loads((folder / CONFIG).read_text())))
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
        return model.eval().requires_grad_(False)


def instance_loss(pred: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                  config: SegmenterConfig, reduce: bool = True) -> torch.Tensor:
    """Panoptic-DeepLab's loss (semantic CE + centre MSE + foreground offset L1), per image or mean."""
    targets = {k: v.to(pred["center"].device) for k, v in targets.items()}
    semantic = F.cross_entropy(pred["semantic"].float(), targets["semantic"], reduction="none").mean((1, 2))
    center = (pred["center"].float() - targets["center"]).pow(2).mean((1, 2, 3))
    fg = targets["foreground"]
    offset = ((pred["offset"].float() - targets["offset"]).abs() * fg).sum((1, 2, 3)) / (2 * fg.sum((1, 2, 3)) + 1)
    per_image = (config.semantic_weight * semantic + config.center_weight * center
                 + config.offset_weight * offset)
    return per_image.mean() if reduce else per_image


@torch.no_grad()
def decode_instances(pred: dict[str, torch.Tensor], threshold: float = 0.3) -> list[list[tuple[str, str]]]:
    """Per image, the sorted (colour, shape) of each instance: heatmap peaks (3x3 NMS), pixels
    grouped to the nearest peak through their offsets, class by majority vote of the group."""
    heat = pred["center"][:, 0]
    peaks = (heat == F.max_pool2d(heat[:, None], 3, 1, 1)[:, 0]) & (heat > threshold)
    labels = pred["semantic"].argmax(1)
    size = heat.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    found = []
    for i in range(heat.shape[0]):
        centres = peaks[i].nonzero().float() + 0.5  # (m, 2) as (y, x)
        fg = labels[i] > 0
        if len(centres) == 0 or not fg.any():
            found.append([])
            continue
        voted = torch.stack([ys + pred["offset"][i, 1], xs + pred["offset"][i, 0]], -1)[fg]  # (p, 2)
        owner = torch.cdist(voted, centres).argmin(1)
        objects = []
        for j in range(len(centres)):
            votes = labels[i][fg][owner == j]
            if len(votes):
                objects.append(class_name(int(votes.mode().values)))
        found.append(sorted(objects))
    return found


class ShapesPerceptual(PerceptualModel):
    """The perceptual plug-in of the Shapes world: rendered scenes with exact instance targets, judged
    by the instance segmenter's loss."""

    name = "shapes-segmenter"

    def __init__(self, segmenter: ShapesSegmenter):
        super().__init__()
        self.segmenter = segmenter
        self.freeze()

    def annotated_batch(self, n: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        images, captions, scenes = ShapesStream(seed).batch(n)
        return images, dense_targets(scenes), captions

    def loss(self, images: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        return instance_loss(self.segmenter(images), targets, self.segmenter.config)
