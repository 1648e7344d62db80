"""`hypersd sample`, `hypersd generate` and `hypersd eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hypersd import assets
from hypersd.cli.common import (
    OVERWRITE,
    check_shapes_prompts,
    evaluator_dir,
    load_prompts,
    lora_specs,
    output_folder,
    parse_steps,
    parse_timesteps,
    sample_and_write,
    sample_settings,
)
from hypersd.errors import require, require_model_folder
from hypersd.io import mark_output_dir


def sample(model: Path = typer.Option(..., help="Diffusers pipeline folder."),
           lora: Optional[list[str]] = typer.Option(None, help="LoRA file, FILE or FILE:SCALE; repeatable."),
           prompt: Optional[list[str]] = typer.Option(None, help="A prompt; repeatable."),
           prompts: Optional[Path] = typer.Option(None, help="Prompt file: .txt (one per line) or .jsonl (fields "
                                                             "prompt and, optionally, negative_prompt)."),
           negative_prompt: Optional[str] = typer.Option(
               None, help="What to steer away from, for every prompt without its own (needs guidance > 1: a "
                          "CFG-preserved LoRA or the base model)."),
           steps: Optional[int] = typer.Option(None, help="Sampling steps (default: the LoRA's, else the model "
                                                          "folder's, else its pipeline's)."),
           scheduler: Optional[str] = typer.Option(
               None, help="ddim, ddim-trailing, tcd, lcm, euler, dpmpp or default (the model's own); default: the "
                          "LoRA's, else the model folder's, else the model's own."),
           eta: Optional[float] = typer.Option(None, help="Stochasticity (TCD gamma / DDIM eta), in [0, 1]."),
           guidance: Optional[float] = typer.Option(
               None, help="Classifier-free guidance scale, <= 1: off (default: the LoRA's, else the model "
                          "folder's, else its pipeline's)."),
           seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
           timesteps: Optional[str] = typer.Option(None, help="Custom timesteps, e.g. 800 (LCM/TCD)."),
           batch_size: int = typer.Option(125, help="Images per pipeline call."),
           out: Path = typer.Option(..., help="Output folder."),
           overwrite: bool = OVERWRITE):
    """Generate images: PNGs, samples.jsonl and a labelled grid.

    Settings not given on the command line come from the first LoRA's metadata, if it has them, or
    from a distilled full-UNet model folder (hypersd_inference.json).
    """
    from hypersd.inference.sample import apply_loras
    from hypersd.inference.settings import check_negative_prompts, resolve_settings
    from hypersd.models.pipelines import load_pipeline

    given = {"steps": steps, "scheduler": scheduler, "guidance": guidance, "eta": eta,
             "timesteps": parse_timesteps(timesteps)}
    specs = lora_specs(lora)
    settings = sample_settings(resolve_settings(given, specs, model), seed, specs, batch_size)
    texts, negatives = load_prompts(prompt, prompts, negative_prompt)
    check_negative_prompts(negatives, settings)
    output_folder(out, overwrite)
    pipe = load_pipeline(model)
    apply_loras(pipe, settings.loras)
    sample_and_write(pipe, texts, settings, out, overwrite=overwrite, negative_prompts=negatives)
    typer.echo(f"wrote {len(texts)} images to {out} (grid: {out / 'grid.png'})")


def generate(prompt: list[str] = typer.Argument(..., help="Prompt(s)."),
             base: Path = typer.Option(..., help="Base model: diffusers folder (SD1.x or SDXL) or a single-file "
                                                 "checkpoint (with --model-config)."),
             lora: Optional[list[str]] = typer.Option(None, help="LoRA file (diffusers or kohya), FILE:SCALE; repeatable."),
             unet: Optional[Path] = typer.Option(None, help="UNet weights (.safetensors; diffusers or original/ComfyUI "
                                                            "layout) replacing the base's, e.g. a one-step UNet."),
             tiny_vae: Optional[Path] = typer.Option(None, help="Decode with this tiny VAE (a diffusers AutoencoderTiny "
                                                                "folder: `hypersd tiny-vae train`, or TAESD for SD)."),
             steps: Optional[int] = typer.Option(None, help="Sampling steps (default: from the files)."),
             scheduler: Optional[str] = typer.Option(None, help="Scheduler (default: from the files)."),
             eta: Optional[float] = typer.Option(None, help="TCD gamma / DDIM eta in [0, 1]."),
             guidance: Optional[float] = typer.Option(None, help="CFG scale (default: from the files, else 0)."),
             seed: int = typer.Option(0, help="Seed of the first image."),
             negative_prompt: Optional[str] = typer.Option(
                 None, help="What to steer away from (needs guidance > 1: a CFG-preserved LoRA or the base model)."),
             controlnet: Optional[Path] = typer.Option(None, help="Diffusers ControlNet folder (needs "
                                                                  "--control-image)."),
             control_image: Optional[Path] = typer.Option(None, help="Image that conditions the ControlNet."),
             control: str = typer.Option("canny", help="Control image preprocessing: canny (white edges on "
                                                      "black), scribble (white strokes on black) or none."),
             control_scale: float = typer.Option(1.0, help="ControlNet conditioning scale (0: no effect)."),
             canny_low: int = typer.Option(100, help="Canny lower hysteresis threshold."),
             canny_high: int = typer.Option(200, help="Canny upper hysteresis threshold."),
             out: Path = typer.Option(Path("runs/generate"), help="Output folder."),
             overwrite: bool = OVERWRITE):
    """Generate with a distilled model. Scheduler, steps, guidance and eta come from the LoRA's metadata,
    else from the conventions of the released Hyper-SD files (N-step LoRAs: DDIM trailing; 1-step
    unified LoRA: TCD; 1-step UNet: LCM at timestep 800); options override. With --controlnet, the
    preprocessed control image conditions every sample and is saved as control.png beside them."""
    from hypersd.inference.sample import apply_loras
    from hypersd.inference.settings import check_negative_prompts, resolve_settings
    from hypersd.inference.unet_file import unet_file_settings
    from hypersd.models.pipelines import load_pipeline, load_unet_file

    given = {"steps": steps, "scheduler": scheduler, "guidance": guidance, "eta": eta, "timesteps": None}
    specs = lora_specs(lora)
    chosen = resolve_settings(given, specs, base, fallback=unet_file_settings(unet) if unet else None)
    settings = sample_settings(chosen, seed, specs)
    negatives = [negative_prompt] * len(prompt) if negative_prompt else None
    check_negative_prompts(negatives, settings)
    spec = _control_spec(controlnet, control_image, control, control_scale, canny_low, canny_high)
    raw_control = spec.validate() if spec else None  # bad control input fails before any model loads
    output_folder(out, overwrite)
    pipe = load_pipeline(base)
    if unet is not None:
        load_unet_file(pipe, unet)
    apply_loras(pipe, settings.loras)
    extra_call, extra_record, extra_files = {}, {}, {}
    if tiny_vae is not None:
        from hypersd.models.tiny_vae import with_tiny_vae

        pipe, extra_record["tiny_vae"] = with_tiny_vae(pipe, tiny_vae), str(tiny_vae)
    if spec is not None:
        from hypersd.inference.controlnet import CONTROL_FILE, with_controlnet

        pipe, control_png, extra_call = with_controlnet(pipe, spec, raw_control)
        extra_record, extra_files = {**extra_record, **spec.record()}, {CONTROL_FILE: control_png}
    sample_and_write(pipe, list(prompt), settings, out, extra_call, extra_record, extra_files, overwrite, negatives)
    typer.echo(f"wrote {len(prompt)} images to {out} ({settings.scheduler}, {settings.steps} steps)")


def _control_spec(controlnet: Optional[Path], image: Optional[Path], mode: str, scale: float,
                  canny_low: int, canny_high: int):
    """The ControlNet conditioning of `generate`, or None; the two paths only make sense together."""
    from hypersd.inference.controlnet import ControlSpec

    require(image is None or controlnet is not None, "--control-image needs --controlnet DIR")
    if controlnet is None:
        return None
    require(image is not None, "--controlnet needs --control-image IMAGE")
    return ControlSpec(controlnet, image, mode, scale, canny_low, canny_high)


def eval_cmd(model: Path = typer.Option(None, help="Diffusers pipeline folder (default: shipped teacher)."),
             lora: Optional[list[str]] = typer.Option(None, help="LoRA file, FILE or FILE:SCALE; repeatable."),
             steps: str = typer.Option("1,2,4,8", help="Comma-separated step counts."),
             scheduler: str = typer.Option("ddim", help="ddim, ddim-trailing, tcd, lcm, euler or dpmpp."),
             eta: Optional[float] = typer.Option(None, help="Stochasticity in [0, 1]."),
             guidance: Optional[float] = typer.Option(None, help="CFG scale (default: the teacher's)."),
             prompts: Optional[Path] = typer.Option(None, help="Prompt file (default: the standard set, 2400)."),
             n_prompts: Optional[int] = typer.Option(None, help="Use only the first N prompts (600: ShapesEval set)."),
             n_real: int = typer.Option(2400, help="Real images for the Frechet distance."),
             label: str = typer.Option("model", help="Row label in the tables."),
             evaluator: Optional[Path] = typer.Option(None, help="Evaluator folder."),
             seed: int = typer.Option(0, help="Seed of the first image."),
             out: Path = typer.Option(..., help="Output folder."),
           overwrite: bool = OVERWRITE):
    """Sample at several step counts and score: ShapesEval, FD, PSNR vs the teacher."""
    from hypersd.embedded.evaluator.evaluate import Row, evaluate, with_steps
    from hypersd.inference.prompts import read_prompt_file
    from hypersd.shapes.prompts import EVAL_SIZE, standard_prompts

    step_list = parse_steps(steps)
    settings = sample_settings({"steps": step_list[0], "scheduler": scheduler, "eta": eta, "timesteps": None,
                          "guidance": assets.TEACHER_GUIDANCE if guidance is None else guidance}, seed, lora_specs(lora))
    texts = read_prompt_file(prompts) if prompts else standard_prompts(EVAL_SIZE)
    if n_prompts is not None:
        require(n_prompts > 0, f"--n-prompts must be positive, got {n_prompts}")
        texts = texts[:n_prompts]
    check_shapes_prompts(texts)
    require(n_real >= 10, f"--n-real must be at least 10, got {n_real}")
    detector = evaluator_dir(evaluator)
    model = model or assets.TEACHER
    require_model_folder(model)
    output_folder(out, overwrite)
    mark_output_dir(out)
    rows = [Row(f"{label} @{s}", with_steps(settings, s)) for s in step_list]
    evaluate(model, rows, texts, detector, out, n_real=n_real, seed=seed, log=typer.echo)
    typer.echo(f"wrote {out / 'metrics.md'}")
