"""Train and check the Shapes instance segmenter on freshly rendered images with exact masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from hypersd.embedded.render_training import fit_on_renders
from hypersd.rewards.segmenter import SegmenterConfig, ShapesSegmenter, decode_instances, instance_loss
from hypersd.shapes.annotations import NUM_CLASSES, dense_targets
from hypersd.shapes.batches import ShapesStream


@dataclass
class SegmenterTrainConfig:
    seed: int = 11  # the ShapesEval evaluator trains from seed 0: different images, different init
    steps: int = 2000
    batch: int = 64
    lr: float = 2e-3
    threads: int = 2


def train_segmenter(cfg: SegmenterTrainConfig, out: Path, log=print) -> ShapesSegmenter:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = ShapesSegmenter(SegmenterConfig())
    fit_on_renders(model, lambda out, scenes: instance_loss(out, dense_targets(scenes), model.config),
                   cfg.seed + 1000, cfg.steps, cfg.batch, cfg.lr, gen, "segmenter", log)
    model.save(Path(out), overwrite=True)  # the command checked --out before training
    return model


@torch.no_grad()
def check_segmenter(model: ShapesSegmenter, n: int = 1000, seed: int = 4242, batch: int = 100) -> dict:
    """On fresh renders: semantic mean IoU over present classes, and the fraction of images whose
    decoded instance set (colour, shape per object) equals the truth."""
    stream = ShapesStream(seed)
    inter, union = torch.zeros(NUM_CLASSES), torch.zeros(NUM_CLASSES)
    exact, losses = 0, []
    for start in range(0, n, batch):
        x, _, scenes = stream.batch(min(batch, n - start))
        targets = dense_targets(scenes)
        pred = model(x)
        losses.append(instance_loss(pred, targets, model.config).item())
        labels, truth = pred["semantic"].argmax(1), targets["semantic"]
        for c in range(NUM_CLASSES):
            inter[c] += ((labels == c) & (truth == c)).sum()
            union[c] += ((labels == c) | (truth == c)).sum()
        for found, scene in zip(decode_instances(pred), scenes):
            exact += found == sorted((o.color, o.shape) for o in scene.objects)
    present = union > 0
    return {"images": n, "instance_set_accuracy": exact / n,
            "semantic_miou": float((inter[present] / union[present]).mean()),
            "loss": sum(losses) / len(losses)}
