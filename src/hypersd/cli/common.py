"""Helpers shared by the verbs: option parsers, prompt loading, sampling settings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.errors import UserError, require, require_writable_dir
from hypersd.io import check_output_dir

OVERWRITE = typer.Option(False, "--overwrite", help="Replace --out even if it holds files hypersd did not write "
                                                   "(never the working folder, a folder above it, home or root).")


def output_folder(out: Path, overwrite: bool = False) -> Path:
    """Check --out before any work: its parent writable, and the folder one hypersd may replace."""
    require_writable_dir(out.parent)
    return check_output_dir(out, overwrite)


def evaluator_dir(path: Optional[Path]) -> Path:
    folder = path or assets.EVALUATOR
    require((folder / "detector.safetensors").is_file(), f"evaluator not found: {folder}")
    return folder


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--steps must be comma-separated integers, got {text!r}") from None
    require(steps and all(s > 0 for s in steps), f"steps must be positive integers, got {text!r}")
    return steps


def parse_timesteps(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        timesteps = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--timesteps must be comma-separated integers, got {text!r}") from None
    require(bool(timesteps), f"--timesteps names no timestep: {text!r}")
    return timesteps


def load_prompts(prompt: Optional[list[str]], prompts: Optional[Path],
                 negative_prompt: Optional[str] = None) -> tuple[list[str], list[Optional[str]]]:
    """(prompts, negative prompts): a .jsonl line's own `negative_prompt`, else --negative-prompt."""
    from hypersd.inference.prompts import read_prompt_records

    require(not (prompt and prompts), "give --prompt or --prompts, not both")
    if prompts is not None:
        records = read_prompt_records(prompts)
    else:
        require(bool(prompt), "give --prompt TEXT or --prompts FILE")
        records = [(p, None) for p in prompt]
    return [p for p, _ in records], [n or negative_prompt or None for _, n in records]


def lora_specs(lora: Optional[list[str]]) -> list:
    from hypersd.lora.files import LoraSpec

    return [LoraSpec.parse(x) for x in lora or []]


def sample_settings(chosen: dict, seed: int, loras: list, batch_size: Optional[int] = None):
    """Validated SampleSettings from resolved settings (steps, scheduler, guidance, eta, timesteps)."""
    from hypersd.inference.settings import SampleSettings

    settings = SampleSettings(**{k: chosen[k] for k in ("steps", "scheduler", "guidance", "eta", "timesteps")},
                              seed=seed, loras=loras)
    if batch_size is not None:
        settings.batch_size = batch_size
    settings.validate()
    return settings


def sample_and_write(pipe, prompts: list[str], settings, out: Path, extra_call: Optional[dict] = None,
                     extra_record: Optional[dict] = None, extra_files: Optional[dict] = None,
                     overwrite: bool = False, negative_prompts: Optional[list] = None) -> None:
    """Image i with seed settings.seed + i, written with samples.jsonl and a grid (sample, generate)."""
    from hypersd.inference.sample import generate, write_samples

    seeds = [settings.seed + i for i in range(len(prompts))]
    images = generate(pipe, prompts, settings, seeds, extra_call=extra_call, negative_prompts=negative_prompts)
    write_samples(out, images, prompts, seeds, settings, extra_record=extra_record, extra_files=extra_files,
                  overwrite=overwrite, negative_prompts=negative_prompts)


def check_shapes_prompts(texts: list[str]) -> None:
    from hypersd.shapes.captions import parse_caption

    for text in texts:
        try:
            parse_caption(text)
        except ValueError as exc:
            raise UserError(f"ShapesEval needs Shapes-world prompts: {exc}") from None
