"""Train the ShapesEval detector on freshly rendered Shapes images with ground-truth objects."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hypersd.evaluator.detector import DetectorConfig, ShapesDetector, detector_loss, targets_for
from hypersd.progress import progress
from hypersd.shapes.batches import ShapesStream


@dataclass
class DetectorTrainConfig:
    seed: int = 0
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3
    threads: int = 2
    augment: bool = True


def warmup_cosine(step: int, total: int, warmup: int = 100) -> float:
    """Learning-rate factor: linear warm-up times a cosine decay over the whole run."""
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild blur, noise and colour jitter: generated images are never as clean as renders."""
    n = x.shape[0]
    mix = torch.rand(n, 1, 1, 1, generator=gen) * 0.6
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    x = x * (1 - mix) + blurred * mix
    x = x + torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.06
    x = x * (1 + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.1)
    return x.clamp(-1, 1)


def train_detector(cfg: DetectorTrainConfig, out: Path, log=print) -> ShapesDetector:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = ShapesDetector(DetectorConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, cfg.steps))
    stream = ShapesStream(cfg.seed + 77)
    start = time.time()
    bar = progress(range(cfg.steps), desc="evaluator")
    for step in bar:
        x, _, scenes = stream.batch(cfg.batch)
        if cfg.augment:
            x = augment(x, gen)
        loss = detector_loss(model(x), targets_for(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log({"step": step, "loss": loss.item(), "time_s": round(time.time() - start, 1)})
    model.eval()
    model.save(Path(out))
    return model
