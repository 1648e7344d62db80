"""A grid detector for Shapes images (one cell per 4x4 pixels, YOLO-style; Redmon et al. 2016).

Object centres in the Shapes world are whole pixels and boxes keep a 2 px gap, so two centres
never share a 4x4 cell. Each cell predicts: an object centre here (1 logit), colour (6), shape (4),
size (2) and the centre's offset inside the cell in whole pixels (4 + 4 classes). Global pooled
features of the last layer serve as the feature space of the Frechet distance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from hypersd.io import atomic_dir, require_finite
from hypersd.shapes.world import COLORS, SHAPES, SIZES, Scene

COLOR_NAMES, SHAPE_NAMES, SIZE_NAMES = list(COLORS), list(SHAPES), list(SIZES)
CELL = 4
HEAD_LAYOUT = {"obj": 1, "color": 6, "shape": 4, "size": 2, "dx": CELL, "dy": CELL}


@dataclass
class DetectorConfig:
    canvas: int = 32
    width: int = 32


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    size: str
    cx: int
    cy: int
    score: float


def _block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation),
        nn.GroupNorm(8, cout),
        nn.SiLU(),
    )


class ShapesDetector(nn.Module):
    def __init__(self, config: DetectorConfig | None = None):
        super().__init__()
        self.config = config or DetectorConfig()
        w = self.config.width
        self.body = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2),
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), _block(4 * w, 4 * w, dilation=2), _block(4 * w, 4 * w, dilation=2),
        )
        self.head = nn.Conv2d(4 * w, sum(HEAD_LAYOUT.values()), 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (n, 3, H, W) in [-1, 1]. Returns per-cell logits by name, and pooled features."""
        fmap = self.body(images)
        out = dict(zip(HEAD_LAYOUT, self.head(fmap).split(list(HEAD_LAYOUT.values()), dim=1)))
        out["obj"] = out["obj"].squeeze(1)
        out["features"] = torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1)
        return out

    @torch.no_grad()
    def detect(self, images: torch.Tensor, threshold: float = 0.5) -> list[list[Detection]]:
        out = self.forward(images)
        prob = out["obj"].sigmoid()
        results = []
        for i in range(images.shape[0]):
            found = []
            for gy, gx in (prob[i] > threshold).nonzero().tolist():
                pick = lambda name: out[name][i, :, gy, gx].argmax().item()  # noqa: E731
                found.append(Detection(
                    shape=SHAPE_NAMES[pick("shape")],
                    color=COLOR_NAMES[pick("color")],
                    size=SIZE_NAMES[pick("size")],
                    cx=gx * CELL + pick("dx"),
                    cy=gy * CELL + pick("dy"),
                    score=prob[i, gy, gx].item(),
                ))
            results.append(found)
        return results

    def save(self, folder: Path, overwrite: bool = False) -> None:
        from safetensors.torch import save_file

        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        require_finite(state, f"the detector {folder}")
        with atomic_dir(folder, overwrite) as tmp:
            save_file(state, tmp / "detector.safetensors")
            (tmp / "config.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "ShapesDetector":
        from safetensors.torch import load_file

        folder = Path(folder)
        config = DetectorConfig(**json.loads((folder / "config.json").read_text()))
        model = cls(config)
        model.load_state_dict(load_file(folder / "detector.safetensors"))
        return model.eval()


def targets_for(scenes: list[Scene], canvas: int = 32) -> dict[str, torch.Tensor]:
    """Per-cell training targets: objectness map and class indices (-100 where no object)."""
    g = canvas // CELL
    n = len(scenes)
    obj = torch.zeros(n, g, g)
    cls = {name: torch.full((n, g, g), -100, dtype=torch.long) for name in ("color", "shape", "size", "dx", "dy")}
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            cx, cy = (int(c) for c in o.center)
            gx, gy = cx // CELL, cy // CELL
            obj[i, gy, gx] = 1.0
            cls["color"][i, gy, gx] = COLOR_NAMES.index(o.color)
            cls["shape"][i, gy, gx] = SHAPE_NAMES.index(o.shape)
            cls["size"][i, gy, gx] = SIZE_NAMES.index(o.size)
            cls["dx"][i, gy, gx] = cx - gx * CELL
            cls["dy"][i, gy, gx] = cy - gy * CELL
    return {"obj": obj, **cls}


def detector_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Objectness BCE over all cells + cross-entropy of each attribute at object cells."""
    loss = nn.functional.binary_cross_entropy_with_logits(out["obj"], targets["obj"])
    for name in ("color", "shape", "size", "dx", "dy"):
        loss = loss + nn.functional.cross_entropy(out[name], targets[name], ignore_index=-100)
    return loss
