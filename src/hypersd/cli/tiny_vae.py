"""`hypersd tiny-vae train`: a tiny VAE (TAESD's architecture) distilled from a model's VAE, for fast decoding."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.cli.common import OVERWRITE, output_folder
from hypersd.errors import UserError, require, require_model_folder

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
                   one_step_model: Optional[Path] = typer.Option(None, help="A one-step model file (a full UNet or a "
                                                                            "LoRA): latents it makes on fresh captions, "
                                                                            "at its recommended settings, join the "
                                                                            "decoder's training (what it will decode)."),
                   model_latents: int = typer.Option(16000, help="How many latents --one-step-model makes."),
                   blocks: str = typer.Option("2,2,1", help="Decoder residual blocks per resolution, lowest first "
                                                           "(one entry per VAE level; 0 allowed)."),
                   decoder_loss: str = typer.Option("l1", help="Decoder error: l1 or mse."),
                   upsample: str = typer.Option("nearest", help="Decoder upsampling: nearest or bilinear."),
                   overwrite: bool = OVERWRITE):
    """Distil the model's VAE into a tiny one on Shapes renders: the decoder learns the VAE's decoding of
    their latents (half of them with noise added) and of the latents --latents / --one-step-model add, the
    encoder the posterior mean. Use it with
    `hypersd generate --tiny-vae DIR` (any diffusers AutoencoderTiny folder works there, e.g. TAESD)."""
    import torch

    from hypersd.models.pipelines import load_pipeline
    from hypersd.models.tiny_vae import TinyVaeConfig, decoder_psnr, save_tiny_vae, train_tiny_vae
    from hypersd.shapes.batches import ShapesStream

    cfg = TinyVaeConfig(channels=channels, blocks=parse_blocks(blocks), steps=steps, pool=pool, seed=seed,
                        decoder_loss=decoder_loss, upsample=upsample)
    cfg.validate()
    require(model_latents > 0, f"--model-latents must be positive, got {model_latents}")
    if one_step_model is not None:
        require(one_step_model.is_file(), f"one-step model not found: {one_step_model}")
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
    if one_step_model is not None:
        sampler = one_step_sampler(pipe, one_step_model)
        made = one_step_latents(*sampler, model_latents, seed) / pipe.vae.config.scaling_factor
        generated = made if generated is None else torch.cat([generated, made])
    log = []
    start = time.time()
    tiny = train_tiny_vae(pipe.vae, images, cfg, log=log.append, generated=generated)
    held_out, _, _ = stream.batch(256)
    with torch.no_grad():
        held_out_latents = pipe.vae.encode(held_out).latent_dist.mean
    record = {"model": str(model), "generated_latents": str(latents) if latents else None,
              "one_step_model": str(one_step_model) if one_step_model else None,
              "model_latents": model_latents if one_step_model else 0, "seconds": round(time.time() - start, 1), "log": log,
              "held_out_decoder_psnr_db": round(decoder_psnr(tiny, pipe.vae, held_out_latents), 2),
              "parameters": sum(p.numel() for p in tiny.parameters())}
    if one_step_model is not None:  # on latents the model makes for other captions and noise than it trained on
        other = one_step_latents(*sampler, 256, seed + 1000) / pipe.vae.config.scaling_factor
        record["held_out_model_psnr_db"] = round(decoder_psnr(tiny, pipe.vae, other), 2)
    save_tiny_vae(tiny, out, cfg, record, overwrite)
    typer.echo(json.dumps({k: record[k] for k in ("seconds", "held_out_decoder_psnr_db", "held_out_model_psnr_db",
                                                  "parameters") if k in record}))
    typer.echo(f"wrote {out}")


def parse_blocks(text: str) -> tuple[int, ...]:
    """'3,3,0' -> (3, 3, 0); one line if it is not a comma-separated list of whole numbers."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--blocks must be whole numbers separated by commas, got {text!r}") from None


def one_step_sampler(pipe, model: Path):
    """(pipeline, settings) sampling the one-step model `model` (full UNet file or LoRA) at its recommended
    settings; a LoRA goes into `pipe`'s own UNet (only its VAE is used afterwards), so this is done once."""
    from hypersd.embedded.rows import one_step_row
    from hypersd.inference.sample import apply_loras
    from hypersd.models.pipelines import with_unet_file

    row = one_step_row("one-step model", model)
    sampler = with_unet_file(pipe, row.unet) if row.unet is not None else pipe
    apply_loras(sampler, row.settings.loras)
    return sampler, row.settings


def one_step_latents(sampler, settings, n: int, seed: int):
    """Latents the one-step sampler makes for n fresh Shapes captions (stream seed + 1, so not the renders'
    captions), noise seeds from 10,000,000 + seed * 100,000."""
    from hypersd.inference.sample import generate_latents
    from hypersd.shapes.batches import ShapesStream

    captions = [scene.caption for scene in ShapesStream(seed + 1).scenes(n)]
    first = 10_000_000 + seed * 100_000
    return generate_latents(sampler, captions, settings, list(range(first, first + n)), "one-step model latents")
