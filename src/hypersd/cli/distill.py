"""`hypersd distill` and `hypersd demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.cli.common import OVERWRITE, output_folder
from hypersd.errors import UserError, require, require_model, require_writable_dir
from hypersd.io import mark_output_dir


def distill(recipe: Optional[Path] = typer.Option(None, help="YAML recipe (default: the built-in 4-stage TSCD)."),
            model: Optional[Path] = typer.Option(None, help="Diffusers pipeline folder (SD1.x or SDXL) or a single-file "
                                                            "checkpoint (with --model-config); default: shipped teacher."),
            data: Optional[str] = typer.Option(None, help="'shapes', an image folder, tar shards or a latent cache "
                                                           "(overrides data.source)."),
            out: Path = typer.Option(Path("runs/tscd"), help="Run folder."),
            set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe key: KEY=VALUE, "
                                                     "e.g. stages.0.iterations=100; repeatable."),
            resume: bool = typer.Option(False, help="Continue from the run folder's latest checkpoint."),
            extend_to: Optional[int] = typer.Option(None, help="With --resume: train the run's last stage on to this "
                                                     "many iterations (a finished run too); recorded in recipe.yaml."),
            init_lora: Optional[Path] = typer.Option(None, help="Start the student from this LoRA file "
                                                      "(run a later phase alone, e.g. feedback on a TSCD LoRA); a file of lower "
                                                      "rank grows into lora.rank unchanged (same alpha/r)."),
            init_unet: Optional[Path] = typer.Option(None, help="Start a full-UNet generator (dmd.generator: unet) "
                                                      "from these UNet weights: a pipeline folder, a UNet folder "
                                                      "or a .safetensors file (e.g. continue a one-step model)."),
            device: str = typer.Option("auto", help="auto (cuda if available), cpu or cuda."),
            dry_run: bool = typer.Option(False, help="Print the resolved recipe and exit.")):
    """Distill a model: TSCD stages (Hyper-SD, Algorithm 1), feedback learning and score
    distillation, as the recipe lists them; one LoRA per stage. Data-parallel over several processes:
    accelerate launch --config_file configs/accelerate/ddp.yaml -m hypersd.cli distill ..."""
    from hypersd.train.checkpoint import has_checkpoint
    from hypersd.train.recipe import load_recipe
    from hypersd.train.run import Run

    overrides = list(set_ or []) + ([f"data.source={data}"] if data else [])
    stored = out / "recipe.yaml"
    if resume and stored.is_file():  # a resumed run keeps its own recipe; another one is refused
        resolved = load_recipe(stored)
        asked = load_recipe(recipe, overrides) if recipe is not None or overrides else resolved
        difference = first_difference(resolved, asked)
        require(difference is None, f"--resume continues {out} with its own recipe ({stored}); the recipe given "
                                    f"differs at {difference}: drop --recipe/--set or choose another --out")
    else:
        resolved = load_recipe(recipe, overrides)
    if extend_to is not None:
        resolved = extended(resolved, extend_to, resume and stored.is_file())
    if dry_run:
        typer.echo(resolved.to_yaml().rstrip())
        return
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    model = require_model(model or assets.TEACHER)
    require(not out.exists() or out.is_dir(), f"--out {out} is a file, not a run folder")
    require_writable_dir(out if out.is_dir() else out.parent)  # the run creates `out` once model, LoRA and
    # rewards are checked, so a refused run leaves no empty folder
    if not resume and has_checkpoint(out):
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    from hypersd.embedded.monitor import run_monitor

    run = Run(resolved, model, out, device=device, init_lora=init_lora, init_unet=init_unet,
              monitor=run_monitor(resolved))
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
         set_: Optional[list[str]] = typer.Option(None, "--set", help="Recipe override KEY=VALUE (repeatable)."),
         overwrite: bool = OVERWRITE):
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
    output_folder(out, overwrite)
    mark_output_dir(out)
    report = run_demo(out, n_prompts=n_prompts, n_real=n_real, recipe=recipe if distill else None,
                      recipe_overrides=set_, log=typer.echo)
    typer.echo(f"report: {report}")


def extended(recipe, iterations: int, resuming: bool):
    """The run's own recipe with its last stage lengthened to `iterations` (--extend-to). The stages keep a
    constant learning rate, so the extended run equals one trained to that length from the start."""
    from dataclasses import replace

    require(resuming, "--extend-to lengthens an existing run: pass --resume and the run's --out")
    last = recipe.stages[-1]
    require(iterations >= last.iterations, f"--extend-to {iterations} is shorter than the run's last stage "
                                           f"({last.iterations} iterations)")
    return replace(recipe, stages=[*recipe.stages[:-1], replace(last, iterations=iterations)])


def first_difference(a, b, where: str = "") -> str | None:
    """The first key (dotted path) where two resolved recipes differ, with both values; None if equal."""
    from dataclasses import asdict, is_dataclass

    a, b = (asdict(x) if is_dataclass(x) else x for x in (a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}.{i}")
            if found:
                return found
        return None
    return None if a == b else f"{where} ({a!r} in the run, {b!r} given)"
