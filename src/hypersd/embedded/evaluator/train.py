"""Train the ShapesEval detector on freshly rendered Shapes images with ground-truth objects."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup

from hypersd.embedded.evaluator.detector import DetectorConfig, ShapesDetector, detector_loss, targets_for
from hypersd.progress import progress
from hypersd.shapes.batches import ShapesStream, augment


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
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=cfg.steps)
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
    model.save(Path(out), overwrite=True)  # the command checked --out before training
    return model
