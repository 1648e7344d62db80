"""`hypersd controlnet train --control scribble`: a ControlNet for the shipped teacher, trained on
Shapes scenes paired with hand-like scribble maps of their objects (hypersd.shapes.scribbles).

The ControlNet starts as a copy of the teacher's UNet encoder (diffusers `ControlNetModel.from_unet`,
zero-initialised output convolutions); the teacher stays frozen. Each step renders a fresh batch;
its scribbles are drawn at `draw_size` pixels and go through exactly the preprocessing `generate
--control scribble` applies to a user's drawing (resize to the generation size, then strokes as
white on black), so a canvas drawing at any size meets the ControlNet as its training maps did.
Captions are dropped with probability `caption_dropout` (the empty prompt), so the ControlNet also
works under classifier-free guidance. Loss: the teacher's denoising loss with the ControlNet's
residuals added (Zhang et al. 2023, eq. 2). Checkpoints are crash-safe (hypersd.train.checkpoint);
`resume` continues exactly (each step's scenes are seeded by seed and step)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hypersd.inference.controlnet import prepare_control
from hypersd.io import atomic_dir
from hypersd.models.pipelines import load_pipeline
from hypersd.models.sd import wrap_pipeline
from hypersd.progress import progress
from hypersd.shapes.batches import to_tensor
from hypersd.shapes.scribbles import scribble_map
from hypersd.shapes.world import render_array, sample_scene
from hypersd.train.checkpoint import latest_checkpoint, read_position, restore_checkpoint, save_checkpoint

FOLDER = "controlnet"  # the trained ControlNet inside the run folder


@dataclass
class ControlNetTrainConfig:
    steps: int = 3000
    batch: int = 32
    learning_rate: float = 1e-4
    caption_dropout: float = 0.1
    draw_size: int = 256       # scribbles drawn at this size, then preprocessed like a user's drawing
    checkpoint_every: int = 200
    seed: int = 0


def control_images(scenes, rng: random.Random, size: int, draw_size: int) -> torch.Tensor:
    """(n, 3, size, size) control maps in [0, 1], as `generate --control scribble` prepares a drawing."""
    maps = [np.asarray(prepare_control(Image.fromarray(scribble_map(s, rng, size=draw_size)), "scribble",
                                       (size, size))) for s in scenes]
    return torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).float() / 255


def train_controlnet(teacher: Path, out: Path, cfg: ControlNetTrainConfig, resume: bool = False, log=print) -> Path:
    """Train into `out` (checkpoints) and write the diffusers ControlNet folder out/controlnet."""
    from diffusers import ControlNetModel

    out = Path(out)
    pipe = load_pipeline(Path(teacher))
    model = wrap_pipeline(pipe)
    model.freeze_base()
    torch.manual_seed(cfg.seed)
    # the conditioning embedding halves the control image once per channel step after the first: as
    # many times as the VAE does (SD: 8x, channels 16-32-96-256; the Shapes teacher: 4x, 16-32-96)
    halvings = int(round(np.log2(pipe.vae_scale_factor)))
    controlnet = ControlNetModel.from_unet(
        model.unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[: halvings + 1]).train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    start = 0
    if resume:
        folder = latest_checkpoint(out)
        if folder is not None:
            restore_checkpoint(folder, model.unet, {"controlnet": optimizer}, {"controlnet": controlnet})
            start = read_position(folder)["step"]
    size = model.unet.config.sample_size * pipe.vae_scale_factor
    bar = progress(range(start, cfg.steps), desc="controlnet", initial=start, total=cfg.steps)
    for step in bar:
        rng = random.Random(f"{cfg.seed}/{step}")
        scenes = [sample_scene(rng) for _ in range(cfg.batch)]
        control = control_images(scenes, rng, size, cfg.draw_size)
        captions = ["" if rng.random() < cfg.caption_dropout else s.caption for s in scenes]
        with torch.no_grad():
            latents = pipe.vae.encode(to_tensor(render_array(scenes))).latent_dist.sample()
            latents = latents * pipe.vae.config.scaling_factor
            cond = model.encode_prompts(captions)
        noise = torch.randn_like(latents)
        t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(scenes),))
        noisy = model.add_noise(latents, noise, t)
        down, mid = controlnet(noisy, t, cond.hidden_states, controlnet_cond=control, return_dict=False)
        pred = model.unet(noisy, t, cond.hidden_states, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if (step + 1) % cfg.checkpoint_every == 0 or step == cfg.steps - 1:
            save_checkpoint(out, model.unet, {"stage": 0, "step": step + 1}, {"controlnet": optimizer},
                            {"controlnet": controlnet})
    with atomic_dir(out / FOLDER, overwrite=True) as tmp:
        controlnet.save_pretrained(tmp, safe_serialization=True)
    log(f"wrote {out / FOLDER}")
    return out / FOLDER
