"""`hypersd tiny-vae train`: a tiny VAE (TAESD's architecture) distilled from a model's VAE, for fast decoding."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.cli.common import OVERWRITE, output_folder
from hypersd.errors import require, require_model_folder

app = typer.Typer(no_args_is_help=True, help="Tiny VAEs for fast decoding: train (from Shapes renders).")


@app.command("train")
def tiny_vae_train(model: Optional[Path] = typer.Option(None, help="Pipeline folder whose VAE is distilled "
                                                                   "(default: the shipped teacher)."),
                   out: Path = typer.Option(Path("runs/tiny-vae"), help="AutoencoderTiny folder to write."),
                   steps: int = typer.Option(3000, help="Optimizer steps."),
                   channels: int = typer.Option(16, help="Width of every block."),
                   pool: int = typer.Option(4096, help="Rendered Shapes images, encoded once and reused."),
                   seed: int = typer.Option(0, help="Seed of the renders, the noise and the initialisation."),
                   latents: Optional[Path] = typer.Option(None, help="A teacher pair file (`hypersd data pairs`): its "
                                                                     "generated latents join the decoder's training."),
                   overwrite: bool = OVERWRITE):
    """Distil the model's VAE into a tiny one on Shapes renders: the decoder learns the VAE's decoding of
    their latents (half of them with noise added), the encoder the posterior mean. Use it with
    `hypersd generate --tiny-vae DIR` (any diffusers AutoencoderTiny folder works there, e.g. TAESD)."""
    import torch

    from hypersd.models.pipelines import load_pipeline
    from hypersd.models.tiny_vae import TinyVaeConfig, decoder_psnr, save_tiny_vae, train_tiny_vae
    from hypersd.shapes.batches import ShapesStream

    cfg = TinyVaeConfig(channels=channels, steps=steps, pool=pool, seed=seed)
    cfg.validate()
    model = require_model_folder(model or assets.TEACHER)
    output_folder(out, overwrite)
    pipe = load_pipeline(model)
    size = pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    require(size <= 128, f"Shapes renders are small images; the model makes {size} px (use TAESD for SD)")
    stream = ShapesStream(seed, canvas=size)
    images, _, _ = stream.batch(pool)
    generated = None
    if latents is not None:
        from hypersd.data.pairs import load_pairs

        generated = load_pairs(latents).latents / pipe.vae.config.scaling_factor  # the VAE's unscaled space
    log = []
    start = time.time()
    tiny = train_tiny_vae(pipe.vae, images, cfg, log=log.append, generated=generated)
    held_out, _, _ = stream.batch(256)
    with torch.no_grad():
        held_out_latents = pipe.vae.encode(held_out).latent_dist.mean
    record = {"model": str(model), "generated_latents": str(latents) if latents else None, "seconds": round(time.time() - start, 1), "log": log,
              "held_out_decoder_psnr_db": round(decoder_psnr(tiny, pipe.vae, held_out_latents), 2),
              "parameters": sum(p.numel() for p in tiny.parameters())}
    save_tiny_vae(tiny, out, cfg, record, overwrite)
    typer.echo(json.dumps({k: record[k] for k in ("seconds", "held_out_decoder_psnr_db", "parameters")}))
    typer.echo(f"wrote {out}")
