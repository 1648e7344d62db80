"""`hypersd distill` and `hypersd demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.errors import UserError, require, require_model, require_writable_dir


def distill(recipe: Optional[Path] = typer.Option(None, help="YAML recipe (default: the built-in 4-stage TSCD)."),
            model: Optional[Path] = typer.Option(None, help="Diffusers pipeline folder (SD1.x or SDXL) or a single-file "
                                                            "checkpoint (with --model-config); default: shipped teacher."),
            data: Optional[str] = typer.Option(None, help="'shapes', an image folder, tar shards or a latent cache "
                                                           "(overrides data.source)."),
            out: Path = typer.Option(Path("runs/tscd"), help="Run folder."),
            set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe key: KEY=VALUE, "
                                                     "e.g. stages.0.iterations=100; repeatable."),
            resume: bool = typer.Option(False, help="Continue from the run folder's latest checkpoint."),
            init_lora: Optional[Path] = typer.Option(None, help="Start the student from this LoRA file "
                                                      "(run a later phase alone, e.g. feedback on a TSCD LoRA)."),
            device: str = typer.Option("auto", help="auto (cuda if available), cpu or cuda."),
            dry_run: bool = typer.Option(False, help="Print the resolved recipe and exit.")):
    """Distill a model: TSCD stages (Hyper-SD, Algorithm 1), feedback learning and score
    distillation, as the recipe lists them; one LoRA per stage. Data-parallel over several processes:
    accelerate launch --config_file configs/accelerate/ddp.yaml -m hypersd.cli distill ..."""
    from hypersd.train.recipe import load_recipe
    from hypersd.train.run import Run

    overrides = list(set_ or []) + ([f"data.source={data}"] if data else [])
    resolved = load_recipe(recipe, overrides)
    if dry_run:
        typer.echo(resolved.to_yaml().rstrip())
        return
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    model = require_model(model or assets.TEACHER)
    require(not out.exists() or out.is_dir(), f"--out {out} is a file, not a run folder")
    require_writable_dir(out if out.is_dir() else out.parent)  # the run creates `out` once model, LoRA and
    # rewards are checked, so a refused run leaves no empty folder
    if not resume and (out / "checkpoint").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    run = Run(resolved, model, out, device=device, init_lora=init_lora)
    metrics = run.train(resume=resume)
    if not run.accelerator.is_main_process:  # several processes: one report
        return
    for name, stage in metrics["stages"].items():
        typer.echo(f"{name}: {stage['lora']}")
    typer.echo(f"run: {out}")


def demo(out: Path = typer.Option(Path("runs/demo"), help="Report folder."),
         n_prompts: int = typer.Option(600, help="Prompts of the standard set to use."),
         n_real: int = typer.Option(2000, help="Real images for the Frechet distance."),
         recipe: Path = typer.Option(None, help="Distillation recipe (default: configs/demo-hyper.yaml)."),
         distill: bool = typer.Option(True, help="Distill the teacher with the recipe and add its rows."),
         set_: Optional[list[str]] = typer.Option(None, "--set", help="Recipe override KEY=VALUE (repeatable).")):
    """The main job on the embedded default: distill the shipped teacher with the full Hyper-SD recipe
    (TSCD, feedback, score distillation), sample teacher and LoRAs at 1 to 50 steps, write a report."""
    from hypersd.assets import DEMO_RECIPE
    from hypersd.embedded.demo import run_demo
    from hypersd.train.recipe import load_recipe

    require(n_prompts > 0, f"--n-prompts must be positive, got {n_prompts}")
    recipe, set_ = recipe or DEMO_RECIPE, list(set_ or [])
    if distill:
        require(recipe.is_file(), f"recipe not found: {recipe}")
        load_recipe(recipe, set_)  # bad recipes fail here, before any work
    require_writable_dir(out)
    report = run_demo(out, n_prompts=n_prompts, n_real=n_real, recipe=recipe if distill else None,
                      recipe_overrides=set_, log=typer.echo)
    typer.echo(f"report: {report}")
