"""The embedded default's models: `hypersd pretrain` and `hypersd evaluator ...`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hypersd.cli.common import OVERWRITE, evaluator_dir, output_folder
from hypersd.errors import require, require_model_folder

evaluator_app = typer.Typer(no_args_is_help=True, help="The ShapesEval evaluator network.")


def pretrain(out: Path = typer.Option(Path("assets/tiny-sd"), help="Pipeline folder to write."),
             seed: int = typer.Option(0, help="Random seed."),
             vae_steps: int = typer.Option(2500, help="VAE training steps."),
             unet_steps: int = typer.Option(5000, help="UNet + text encoder training steps."),
             unet_lr: float = typer.Option(5e-4, help="Peak learning rate of the UNet stage (cosine)."),
             unet_warmup: int = typer.Option(200, help="Warm-up steps of the UNet stage."),
             unet_stop_at: Optional[int] = typer.Option(
                 None, help="Stop after this many UNet steps of the --unet-steps schedule (budgeted runs)."),
             threads: int = typer.Option(2, help="CPU threads."),
             device: str = typer.Option("auto", help="auto (cuda if available), cpu or cuda."),
             init: Optional[Path] = typer.Option(None, help="Continue from this pipeline folder (keeps its VAE)."),
             overwrite: bool = OVERWRITE):
    """Train the tiny Stable Diffusion of the Shapes world (VAE, CLIP text encoder, UNet)."""
    from hypersd.embedded.pretrain import PretrainConfig
    from hypersd.embedded.pretrain import pretrain as run

    require(vae_steps > 0 and unet_steps > 0, "step counts must be positive")
    require(unet_stop_at is None or unet_stop_at > 0, "--unet-stop-at must be positive")
    require(unet_lr > 0 and 0 <= unet_warmup < unet_steps, "--unet-lr must be > 0, --unet-warmup in [0, unet-steps)")
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    if init is not None:
        require_model_folder(init)
        require(init.resolve() != out.resolve(), "--init and --out must be different folders")
    output_folder(out, overwrite)
    cfg = PretrainConfig(seed=seed, vae_steps=vae_steps, unet_steps=unet_steps, threads=threads,
                         unet_lr=unet_lr, unet_warmup=unet_warmup, unet_stop_at=unet_stop_at,
                         device=device, init=str(init) if init else None)
    record = run(cfg, out, overwrite=overwrite)
    typer.echo(f"wrote {out} (VAE PSNR {record['vae_psnr_db']:.2f} dB, {record['train_seconds'] / 60:.1f} min)")


@evaluator_app.command("train")
def evaluator_train(out: Path = typer.Option(Path("assets/shapes-evaluator"), help="Folder to write."),
                    steps: int = typer.Option(3000, help="Training steps."),
                    seed: int = typer.Option(0, help="Random seed."),
                    overwrite: bool = OVERWRITE):
    """Train the ShapesEval detector on rendered images with their ground-truth objects."""
    from hypersd.embedded.evaluator.train import DetectorTrainConfig, train_detector

    require(steps > 0, f"--steps must be positive, got {steps}")
    output_folder(out, overwrite)
    train_detector(DetectorTrainConfig(seed=seed, steps=steps), out, log=lambda r: None)
    typer.echo(f"wrote {out}")


@evaluator_app.command("check")
def evaluator_check(n: int = typer.Option(1000, "--n", help="Number of real images."),
                    evaluator: Optional[Path] = typer.Option(None, help="Evaluator folder."),
                    seed: int = typer.Option(999, help="Random seed of the real images.")):
    """Score freshly rendered real images: the evaluator must read the world (target >= 0.97)."""
    from hypersd.embedded.evaluator.detector import ShapesDetector
    from hypersd.embedded.evaluator.shapes_eval import accuracy_table, judge_images
    from hypersd.shapes.batches import ShapesStream
    from hypersd.shapes.world import render_array

    require(n > 0, f"--n must be positive, got {n}")
    folder = evaluator_dir(evaluator)
    scenes = ShapesStream(seed).scenes(n)
    table = accuracy_table(judge_images(ShapesDetector.load(folder), render_array(scenes),
                                        [s.caption for s in scenes]))
    typer.echo(json.dumps({k: round(v, 4) for k, v in table.items()}))
