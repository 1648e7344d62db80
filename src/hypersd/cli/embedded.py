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


controlnet_app = typer.Typer(no_args_is_help=True, help="ControlNets for the shipped teacher.")


@controlnet_app.command("train")
def controlnet_train(control: str = typer.Option("scribble", help="Control type (scribble)."),
                     out: Path = typer.Option(Path("runs/controlnet-scribble"), help="Run folder (checkpoints; "
                                                                                   "the ControlNet in out/controlnet)."),
                     model: Optional[Path] = typer.Option(None, help="Teacher pipeline folder (default: shipped)."),
                     steps: int = typer.Option(3000, help="Training steps."),
                     batch: int = typer.Option(32, help="Scenes per step."),
                     lr: float = typer.Option(1e-4, help="Learning rate."),
                     caption_dropout: float = typer.Option(0.1, help="Chance of the empty prompt per scene."),
                     checkpoint_every: int = typer.Option(200, help="Steps between checkpoints."),
                     seed: int = typer.Option(0, help="Random seed."),
                     resume: bool = typer.Option(False, help="Continue from the run folder's latest checkpoint.")):
    """Train a ControlNet on Shapes scenes paired with hand-like scribbles of their objects
    (`ControlNetModel.from_unet` of the teacher; the teacher stays frozen)."""
    from hypersd import assets
    from hypersd.embedded.controlnet_train import ControlNetTrainConfig, train_controlnet
    from hypersd.io import mark_output_dir
    from hypersd.train.checkpoint import has_checkpoint

    require(control == "scribble", f"--control must be scribble, got {control!r}")
    require(steps > 0 and batch > 0 and checkpoint_every > 0, "--steps, --batch and --checkpoint-every must be positive")
    require(lr > 0 and 0 <= caption_dropout < 1, "--lr must be > 0 and --caption-dropout in [0, 1)")
    model = require_model_folder(model or assets.TEACHER)
    require(resume or not has_checkpoint(out), f"{out} already holds a run; pass --resume or choose another --out")
    if not resume:
        output_folder(out, False)
        out.mkdir(parents=True, exist_ok=True)
        mark_output_dir(out)
    cfg = ControlNetTrainConfig(steps=steps, batch=batch, learning_rate=lr, caption_dropout=caption_dropout,
                                checkpoint_every=checkpoint_every, seed=seed)
    train_controlnet(model, out, cfg, resume=resume, log=typer.echo)
