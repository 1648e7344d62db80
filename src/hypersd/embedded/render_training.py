"""The training loop the embedded models share (the ShapesEval detector, the Shapes segmenter):
freshly rendered batches, optional degradation, AdamW with a warm-up cosine schedule, clipping."""

from __future__ import annotations

import time

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup

from hypersd.progress import progress
from hypersd.shapes.batches import ShapesStream, augment


def fit_on_renders(model: torch.nn.Module, loss_of, stream_seed: int, steps: int, batch: int, lr: float,
                   augment_with: torch.Generator | None, desc: str, log) -> torch.nn.Module:
    """Train `model` for `steps` on ShapesStream(stream_seed) batches; `loss_of(outputs, scenes)` is
    the loss; images are degraded with `augment` when a generator is given. Returns it in eval mode."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=100, num_training_steps=steps)
    stream, start = ShapesStream(stream_seed), time.time()
    bar = progress(range(steps), desc=desc)
    for step in bar:
        x, _, scenes = stream.batch(batch)
        if augment_with is not None:
            x = augment(x, augment_with)
        loss = loss_of(model(x), scenes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log({"step": step, "loss": loss.item(), "time_s": round(time.time() - start, 1)})
    return model.eval()
