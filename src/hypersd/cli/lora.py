"""`hypersd lora ...`: merge, export and fuse LoRA files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hypersd.cli.common import OVERWRITE, lora_specs, output_folder
from hypersd.errors import UserError, require, require_writable_dir

app = typer.Typer(no_args_is_help=True, help="LoRA files: merge, export, fuse, schedule.")


@app.command("merge")
def lora_merge(a: Path = typer.Argument(..., help="Base LoRA (e.g. TSCD); its inference settings are kept."),
               b: Path = typer.Argument(..., help="LoRA to add (e.g. the feedback LoRA)."),
               out: Path = typer.Option(..., "--out", help="Merged LoRA file to write (.safetensors)."),
               ratio: float = typer.Option(1.0, help="Weight of B: delta W = delta W_A + RATIO * delta W_B.")):
    """Merge two LoRAs exactly into one file (ranks add up)."""
    import math

    from hypersd.lora.merge import merge_lora_files

    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    require(math.isfinite(ratio), f"--ratio must be a finite number, got {ratio}")
    require(not out.is_dir(), f"--out {out} is a folder; give a file name")
    require_writable_dir(out.parent)
    merge_lora_files(a, b, out, ratio)
    typer.echo(f"wrote {out}")


@app.command("export")
def lora_export(source: Path = typer.Argument(..., help="A LoRA file, or a run folder (its unified LoRA, else "
                                                       "its final TSCD LoRA)."),
                out: Path = typer.Option(..., "--out", help="File to write (.safetensors)."),
                format: str = typer.Option("kohya", "--format", help="kohya (ComfyUI, A1111) or diffusers."),
                dtype: str = typer.Option("keep", "--dtype", help="keep, fp32, fp16 or bf16 (the weights' "
                                                                  "storage type; fp16 halves the file)"),
                base: str = typer.Option("auto", "--base", help="Base model the web UIs list it under (kohya "
                                                              "format): sd1, sdxl, or auto (from the file)."),
                workflow: bool = typer.Option(False, "--workflow", help="Also write OUT.workflow.json: the "
                                                                        "ComfyUI workflow of its recommended sampling."),
                checkpoint: Optional[str] = typer.Option(None, help="Base checkpoint name in the workflow (default: "
                                                                   "SD1.5's or SDXL base's usual file name).")):
    """Export a LoRA for other tools: kohya layout (lora_unet_* keys with alpha) or diffusers (peft keys)."""
    from hypersd.lora.export import export_kohya
    from hypersd.lora.files import cast_lora, copy_lora
    from hypersd.lora.merge import read_lora
    from hypersd.train.outputs import final_lora, phase_lora

    require(format in ("kohya", "diffusers"), f"--format must be kohya or diffusers, got {format!r}")
    require(base in ("auto", "sd1", "sdxl"), f"--base must be auto, sd1 or sdxl, got {base!r}")
    require(dtype in ("keep", "fp32", "fp16", "bf16"), f"--dtype must be keep, fp32, fp16 or bf16, got {dtype!r}")
    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    if source.is_dir():
        require((source / "loras").is_dir(), f"{source} is neither a LoRA file nor a run folder (no loras/)")
        try:
            source = phase_lora(source, "unified") or final_lora(source)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    require_writable_dir(out.parent)
    tensors, metadata = read_lora(source)  # a clear error for anything that is not a LoRA file
    if workflow:  # refused before anything is written when the model has no core-ComfyUI workflow
        from hypersd.lora.comfy_workflow import workflow_for, workflow_path, write_workflow
        from hypersd.lora.export import base_model_of
        from hypersd.lora.files import inference_settings

        graph = workflow_for(inference_settings(source), base_model_of(tensors, metadata) if base == "auto" else base,
                             out.name, checkpoint)
    written = export_kohya(source, out, base) if format == "kohya" else copy_lora(source, out)
    if dtype != "keep":
        cast_lora(written, written, dtype)
    if workflow:
        typer.echo(f"wrote {write_workflow(workflow_path(out), graph)}")
    typer.echo(f"wrote {written} ({format}{'' if dtype == 'keep' else ', ' + dtype}, from {source})")


@app.command("fuse")
def lora_fuse(model: Path = typer.Option(..., help="Diffusers pipeline folder."),
              lora: list[str] = typer.Option(..., help="LoRA file, FILE or FILE:SCALE; repeatable."),
              out: Path = typer.Option(..., "--out", help="Pipeline folder to write."),
              overwrite: bool = OVERWRITE):
    """Write a full pipeline with the LoRA(s) fused into the UNet; the first LoRA's sampling settings
    go with it (hypersd_inference.json, applied by `hypersd sample --model OUT`)."""
    from hypersd.inference.fuse import fuse_into_pipeline

    specs = lora_specs(lora)
    for spec in specs:
        require(spec.path.is_file(), f"LoRA file not found: {spec.path}")
    output_folder(out, overwrite)
    typer.echo(f"wrote {fuse_into_pipeline(model, specs, out, overwrite)}")


@app.command("schedule")
def lora_schedule(lora: Path = typer.Argument(..., help="A LoRA file with recommended sampling settings."),
                  at: list[str] = typer.Option(..., "--at", help="STEPS=T1,T2,...: the timesteps to sample with at "
                                                                 "that step count, e.g. 1=700 or 2=900,450; repeatable."),
                  out: Path = typer.Option(..., "--out", help="New LoRA file to write (.safetensors).")):
    """Write a copy of a (unified) LoRA whose metadata names the timesteps to use at some step counts
    (`step_timesteps`); `hypersd generate`, the app and the benchmarks then sample those step counts there."""
    from hypersd.inference.settings import check_step_timesteps
    from hypersd.lora.files import inference_settings, with_step_timesteps

    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    require(not out.exists(), f"--out {out} already exists; choose a new file name")
    require(lora.is_file(), f"LoRA file not found: {lora}")
    require(bool(inference_settings(lora)), f"{lora} has no recommended sampling settings to extend")
    table = {}
    for item in at:
        steps, _, timesteps = item.partition("=")
        try:
            table[steps.strip()] = [int(t) for t in timesteps.split(",")]
        except ValueError:
            raise UserError(f"--at {item!r}: expected STEPS=T1,T2,... with integer timesteps, e.g. 2=900,450") from None
    require_writable_dir(out.parent)
    with_step_timesteps(lora, out, check_step_timesteps(table, "--at"))
    typer.echo(f"wrote {out}: " + ", ".join(f"{k} step(s) at {v}" for k, v in table.items()))
