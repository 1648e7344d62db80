"""Train the ShapesEval detector on freshly rendered Shapes images with ground-truth objects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hypersd.embedded.evaluator.detector import DetectorConfig, ShapesDetector, detector_loss, targets_for
from hypersd.embedded.render_training import fit_on_renders


@dataclass
class DetectorTrainConfig:
    seed: int = 0
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    threads: int = 2
    augment: bool = True


def train_detector(cfg: DetectorTrainConfig, out: Path, log=print) -> ShapesDetector:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = ShapesDetector(DetectorConfig())
    fit_on_renders(model, lambda out, scenes: detector_loss(out, targets_for(scenes)), cfg.seed + 77, cfg.steps,
                   cfg.batch, cfg.lr, gen if cfg.augment else None, "evaluator", log)
    model.save(Path(out), overwrite=True)  # the command checked --out before training
    return model
