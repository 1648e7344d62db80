"""`hypersd unet ...`: a distilled full UNet as one file."""

from __future__ import annotations

from pathlib import Path

import typer

from hypersd.cli.common import OVERWRITE
from hypersd.errors import require, require_writable_dir

app = typer.Typer(no_args_is_help=True, help="Full UNet files (the one-step model): export.")


@app.command("export")
def unet_export(model: Path = typer.Argument(..., help="A pipeline folder with a distilled UNet (e.g. RUN/one-step-"
                                                      "t800-unet of a full-UNet run) or a UNet folder."),
                out: Path = typer.Option(..., "--out", help="File to write (.safetensors)."),
                dtype: str = typer.Option("fp16", "--dtype", help="fp32, fp16 or bf16 (storage type)."),
                settings_from: Path = typer.Option(None, help="Pipeline folder whose sampling settings the file "
                                                              "carries (default: MODEL; for a checkpoint's "
                                                              "generator.safetensors, the run's finished folder)."),
                overwrite: bool = OVERWRITE):
    """Write the UNet as one file with its sampling settings in the metadata, as Hyper-SD releases its
    one-step UNet; use it beside the base model: `hypersd generate PROMPT --unet FILE`."""
    from hypersd.inference.unet_file import export_unet

    require(not out.is_dir(), f"--out {out} is a folder; give a file name")
    require_writable_dir(out.parent)
    typer.echo(f"wrote {export_unet(model, out, dtype, overwrite, settings_from)} ({dtype}, from {model})")
