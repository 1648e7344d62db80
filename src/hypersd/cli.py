"""The `hypersd` command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import typer  # noqa: E402

from hypersd.errors import UserError, pickle_allowed, require, require_writable_dir  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyper-SD: distill diffusion models into 1-8 step generators.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets and prompt sets.")
evaluator_app = typer.Typer(no_args_is_help=True, help="The ShapesEval evaluator network.")
rewards_app = typer.Typer(no_args_is_help=True, help="Reward and perceptual models of feedback learning.")
app.add_typer(data_app, name="data")
app.add_typer(evaluator_app, name="evaluator")
lora_app = typer.Typer(no_args_is_help=True, help="LoRA files: merge.")
app.add_typer(rewards_app, name="rewards")
app.add_typer(lora_app, name="lora")


@app.callback()
def _global_options(allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Also load pickle-based weight files (.bin/.ckpt); only for files you trust."),
        model_config: Optional[Path] = typer.Option(
        None, "--model-config", help="For a single-file checkpoint given as a model: a diffusers folder of the same "
                                     "architecture (SD1.5 or SDXL) whose configs and tokenizers are used.")):
    """Hyper-SD: distill diffusion models into 1-8 step generators."""
    if allow_pickle:
        os.environ["HYPERSD_ALLOW_PICKLE"] = "1"
    if model_config is not None:
        os.environ["HYPERSD_MODEL_CONFIG"] = str(model_config)


def _assets():
    from hypersd import assets

    return assets


@data_app.command("shapes")
def data_shapes(n: int = typer.Option(1000, "--n", help="Number of images."),
                out: Path = typer.Option(..., "--out", help="Output folder (PNGs + samples.jsonl)."),
                seed: int = typer.Option(0, help="Random seed."),
                size: int = typer.Option(32, help="Image size in pixels.")):
    """Render a Shapes-world image-folder dataset."""
    import random

    import numpy as np

    from hypersd.data.imagefolder import write_image_folder
    from hypersd.progress import progress
    from hypersd.shapes.world import render, sample_scene

    require(n > 0, f"--n must be positive, got {n}")
    require(size >= 32, f"--size must be at least 32, got {size}")
    require_writable_dir(out.parent)
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    images = [np.asarray(render(s, size)) for s in progress(scenes, desc="render")]
    records = [{"prompt": s.caption, "seed": seed, "category": s.category,
                "objects": [{"shape": o.shape, "color": o.color, "size": o.size,
                             "cx": o.center[0], "cy": o.center[1]} for o in s.objects]}
               for s in scenes]
    tmp = out.with_name(out.name + ".tmp")
    write_image_folder(tmp, images, records)
    _replace_dir(tmp, out)
    typer.echo(f"wrote {n} images to {out}")


@data_app.command("prompts")
def data_prompts(out: Path = typer.Option(..., "--out", help="Prompt file to write (.txt)."),
                 n: int = typer.Option(600, "--n", help="Number of prompts (balanced over the 6 categories)."),
                 seed: int = typer.Option(20240421, help="Random seed of the standard set.")):
    """Write the standard ShapesEval prompt set (fixed seed, balanced categories)."""
    from hypersd.prompts import standard_prompts, write_prompt_file

    require(n > 0, f"--n must be positive, got {n}")
    require_writable_dir(out.parent)
    write_prompt_file(out, standard_prompts(n, seed))
    typer.echo(f"wrote {n} prompts to {out}")


@app.command()
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
             init: Optional[Path] = typer.Option(None, help="Continue from this pipeline folder (keeps its VAE).")):
    """Train the tiny Stable Diffusion of the Shapes world (VAE, CLIP text encoder, UNet)."""
    from hypersd.errors import require_model_folder
    from hypersd.pretrain import PretrainConfig
    from hypersd.pretrain import pretrain as run

    require(vae_steps > 0 and unet_steps > 0, "step counts must be positive")
    require(unet_stop_at is None or unet_stop_at > 0, "--unet-stop-at must be positive")
    require(unet_lr > 0 and 0 <= unet_warmup < unet_steps, "--unet-lr must be > 0, --unet-warmup in [0, unet-steps)")
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    if init is not None:
        require_model_folder(init)
        require(init.resolve() != out.resolve(), "--init and --out must be different folders")
    require_writable_dir(out.parent)
    cfg = PretrainConfig(seed=seed, vae_steps=vae_steps, unet_steps=unet_steps, threads=threads,
                         unet_lr=unet_lr, unet_warmup=unet_warmup, unet_stop_at=unet_stop_at,
                         device=device, init=str(init) if init else None)
    record = run(cfg, out)
    typer.echo(f"wrote {out} (VAE PSNR {record['vae_psnr_db']:.2f} dB, {record['train_seconds'] / 60:.1f} min)")


@evaluator_app.command("train")
def evaluator_train(out: Path = typer.Option(Path("assets/shapes-evaluator"), help="Folder to write."),
                    steps: int = typer.Option(3000, help="Training steps."),
                    seed: int = typer.Option(0, help="Random seed.")):
    """Train the ShapesEval detector on rendered images with their ground-truth objects."""
    from hypersd.evaluator.train import DetectorTrainConfig, train_detector

    require(steps > 0, f"--steps must be positive, got {steps}")
    require_writable_dir(out)
    train_detector(DetectorTrainConfig(seed=seed, steps=steps), out, log=lambda r: None)
    typer.echo(f"wrote {out}")


@evaluator_app.command("check")
def evaluator_check(n: int = typer.Option(1000, "--n", help="Number of real images."),
                    evaluator: Optional[Path] = typer.Option(None, help="Evaluator folder."),
                    seed: int = typer.Option(999, help="Random seed of the real images.")):
    """Score freshly rendered real images: the evaluator must read the world (target >= 0.97)."""
    import json

    from hypersd.evaluator.detector import ShapesDetector
    from hypersd.evaluator.shapes_eval import accuracy_table, judge_images
    from hypersd.shapes.batches import ShapesStream
    from hypersd.shapes.world import render_array

    folder = _evaluator_dir(evaluator)
    scenes = ShapesStream(seed).scenes(n)
    table = accuracy_table(judge_images(ShapesDetector.load(folder), render_array(scenes),
                                        [s.caption for s in scenes]))
    typer.echo(json.dumps({k: round(v, 4) for k, v in table.items()}))


@rewards_app.command("train-segmenter")
def rewards_train_segmenter(out: Path = typer.Option(Path("assets/shapes-segmenter"), help="Folder to write."),
                            steps: int = typer.Option(2000, help="Training steps."),
                            seed: int = typer.Option(11, help="Random seed.")):
    """Train the Shapes instance segmenter (the perceptual model of eq. 14) on rendered images."""
    import json

    from hypersd.rewards.train_segmenter import SegmenterTrainConfig, check_segmenter, train_segmenter

    require(steps > 0, f"--steps must be positive, got {steps}")
    require_writable_dir(out)
    model = train_segmenter(SegmenterTrainConfig(seed=seed, steps=steps), out, log=lambda r: None)
    typer.echo(json.dumps(check_segmenter(model, n=500)))


@rewards_app.command("check-segmenter")
def rewards_check_segmenter(segmenter: Optional[Path] = typer.Option(None, help="Segmenter folder."),
                            n: int = typer.Option(1000, "--n", help="Number of real images.")):
    """Instance-set accuracy and semantic mIoU of the segmenter on freshly rendered images."""
    import json

    from hypersd.rewards.segmenter import ShapesSegmenter
    from hypersd.rewards.train_segmenter import check_segmenter

    require(n > 0, f"--n must be positive, got {n}")
    model = ShapesSegmenter.load(segmenter or _assets().SEGMENTER)
    typer.echo(json.dumps(check_segmenter(model, n=n)))


@rewards_app.command("score")
def rewards_score(images: Path = typer.Argument(..., help="Image folder (PNGs + samples.jsonl)."),
                  reward: list[str] = typer.Option(["shapes-clean"], help="Reward spec; repeatable."),
                  size: int = typer.Option(32, help="Images are resized to SIZE x SIZE first."),
                  batch: int = typer.Option(64, help="Images per batch.")):
    """Mean reward of an image folder, per reward model (JSON)."""
    import json

    import torch

    from hypersd.data.imagefolder import load_images, read_image_folder
    from hypersd.rewards import load_reward
    from hypersd.shapes.batches import to_tensor

    folder = read_image_folder(images)
    require(len(folder) > 0, f"no images in {images}")
    require(size > 0 and batch > 0, "--size and --batch must be positive")
    arrays, prompts = load_images(folder, size=size)
    result = {}
    for spec in reward:
        model = load_reward(spec)
        with torch.no_grad():
            scores = torch.cat([model.score(to_tensor(arrays[i:i + batch]), prompts[i:i + batch])
                                for i in range(0, len(prompts), batch)])
        result[model.name] = round(scores.mean().item(), 4)
    typer.echo(json.dumps({"images": len(prompts), **result}))


@rewards_app.command("convert-head")
def rewards_convert_head(source: Path = typer.Argument(..., help="Released aesthetic head (.pth)."),
                         out: Path = typer.Option(..., "--out", help="safetensors file to write.")):
    """Convert the LAION aesthetic head to safetensors (the .pth is a pickle: needs --allow-pickle)."""
    from hypersd.rewards import convert_head

    require_writable_dir(out.parent)
    convert_head(source, out, allow_pickle=pickle_allowed())
    typer.echo(f"wrote {out}")


@rewards_app.command("convert-image-reward")
def rewards_convert_image_reward(source: Path = typer.Argument(..., help="Released ImageReward.pt (pickle)."),
                                 tokenizer: Path = typer.Option(..., help="BERT tokenizer folder (bert-base-uncased)."),
                                 out: Path = typer.Option(..., "--out", help="Folder to write.")):
    """Convert the released ImageReward checkpoint into a folder `image-reward:FOLDER` loads."""
    from hypersd.rewards.image_reward import convert_release

    require_writable_dir(out.parent)
    convert_release(source, tokenizer, out, allow_pickle=pickle_allowed())
    typer.echo(f"wrote {out}")


@lora_app.command("merge")
def lora_merge(a: Path = typer.Argument(..., help="Base LoRA (e.g. TSCD); its inference settings are kept."),
               b: Path = typer.Argument(..., help="LoRA to add (e.g. the feedback LoRA)."),
               out: Path = typer.Option(..., "--out", help="Merged LoRA file to write (.safetensors)."),
               ratio: float = typer.Option(1.0, help="Weight of B: delta W = delta W_A + RATIO * delta W_B.")):
    """Merge two LoRAs exactly into one file (ranks add up)."""
    from hypersd.lora_merge import merge_lora_files

    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    require_writable_dir(out.parent)
    merge_lora_files(a, b, out, ratio)
    typer.echo(f"wrote {out}")


@lora_app.command("export")
def lora_export(source: Path = typer.Argument(..., help="A LoRA file, or a run folder (its unified LoRA, else "
                                                       "its final TSCD LoRA)."),
                out: Path = typer.Option(..., "--out", help="File to write (.safetensors)."),
                format: str = typer.Option("kohya", "--format", help="kohya (ComfyUI, A1111) or diffusers.")):
    """Export a LoRA for other tools: kohya layout (lora_unet_* keys with alpha) or diffusers (peft keys)."""
    from hypersd.distill.rows import final_lora, phase_lora
    from hypersd.lora import copy_lora
    from hypersd.lora_export import export_kohya
    from hypersd.lora_merge import read_lora

    require(format in ("kohya", "diffusers"), f"--format must be kohya or diffusers, got {format!r}")
    require(out.suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    if source.is_dir():
        require((source / "loras").is_dir(), f"{source} is neither a LoRA file nor a run folder (no loras/)")
        try:
            source = phase_lora(source, "unified") or final_lora(source)
        except FileNotFoundError as exc:
            raise UserError(str(exc)) from None
    require_writable_dir(out.parent)
    read_lora(source)  # a clear error for anything that is not a LoRA file
    written = export_kohya(source, out) if format == "kohya" else copy_lora(source, out)
    typer.echo(f"wrote {written} ({format}, from {source})")


@lora_app.command("fuse")
def lora_fuse(model: Path = typer.Option(..., help="Diffusers pipeline folder."),
              lora: list[str] = typer.Option(..., help="LoRA file, FILE or FILE:SCALE; repeatable."),
              out: Path = typer.Option(..., "--out", help="Pipeline folder to write.")):
    """Write a full pipeline with the LoRA(s) fused into the UNet; the first LoRA's sampling settings
    go with it (hypersd_inference.json, applied by `hypersd sample --model OUT`)."""
    from hypersd.lora_fuse import fuse_into_pipeline

    specs = _loras(lora)
    for spec in specs:
        require(spec.path.is_file(), f"LoRA file not found: {spec.path}")
    require_writable_dir(out.parent)
    typer.echo(f"wrote {fuse_into_pipeline(model, specs, out)}")


def _evaluator_dir(path: Optional[Path]) -> Path:
    folder = path or _assets().EVALUATOR
    require((folder / "detector.safetensors").is_file(), f"evaluator not found: {folder}")
    return folder


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--steps must be comma-separated integers, got {text!r}") from None
    require(steps and all(s > 0 for s in steps), f"steps must be positive integers, got {text!r}")
    return steps


def _parse_timesteps(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--timesteps must be comma-separated integers, got {text!r}") from None


def _load_prompts(prompt: Optional[list[str]], prompts: Optional[Path]) -> list[str]:
    from hypersd.prompts import read_prompt_file

    require(not (prompt and prompts), "give --prompt or --prompts, not both")
    if prompts is not None:
        return read_prompt_file(prompts)
    require(bool(prompt), "give --prompt TEXT or --prompts FILE")
    return list(prompt)


def _loras(lora: Optional[list[str]]) -> list:
    from hypersd.sampling import LoraSpec

    return [LoraSpec.parse(x) for x in lora or []]


def _settings(chosen: dict, seed: int, loras: list, batch_size: Optional[int] = None):
    """Validated SampleSettings from resolved settings (steps, scheduler, guidance, eta, timesteps)."""
    from hypersd.sampling import SampleSettings

    settings = SampleSettings(**{k: chosen[k] for k in ("steps", "scheduler", "guidance", "eta", "timesteps")},
                              seed=seed, loras=loras)
    if batch_size is not None:
        settings.batch_size = batch_size
    settings.validate()
    return settings


def _sample_and_write(pipe, prompts: list[str], settings, out: Path, extra_call: Optional[dict] = None,
                      extra_record: Optional[dict] = None, extra_files: Optional[dict] = None) -> None:
    """Image i with seed settings.seed + i, written with samples.jsonl and a grid (sample, generate)."""
    from hypersd.sampling import generate, write_samples

    seeds = [settings.seed + i for i in range(len(prompts))]
    images = generate(pipe, prompts, settings, seeds, extra_call=extra_call)
    write_samples(out, images, prompts, seeds, settings, extra_record=extra_record, extra_files=extra_files)


@app.command()
def sample(model: Path = typer.Option(..., help="Diffusers pipeline folder."),
           lora: Optional[list[str]] = typer.Option(None, help="LoRA file, FILE or FILE:SCALE; repeatable."),
           prompt: Optional[list[str]] = typer.Option(None, help="A prompt; repeatable."),
           prompts: Optional[Path] = typer.Option(None, help="Prompt file: .txt (one per line) or .jsonl."),
           steps: Optional[int] = typer.Option(None, help="Sampling steps (default: the LoRA's, else 4)."),
           scheduler: Optional[str] = typer.Option(
               None, help="ddim, ddim-trailing, tcd, lcm, euler or dpmpp (default: the LoRA's, else ddim-trailing)."),
           eta: Optional[float] = typer.Option(None, help="Stochasticity (TCD gamma / DDIM eta), in [0, 1]."),
           guidance: Optional[float] = typer.Option(
               None, help="Classifier-free guidance scale, <= 1: off (default: the LoRA's, else 0)."),
           seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
           timesteps: Optional[str] = typer.Option(None, help="Custom timesteps, e.g. 800 (LCM/TCD)."),
           batch_size: int = typer.Option(125, help="Images per pipeline call."),
           out: Path = typer.Option(..., help="Output folder.")):
    """Generate images: PNGs, samples.jsonl and a labelled grid.

    Settings not given on the command line come from the first LoRA's metadata, if it has them, or
    from a distilled full-UNet model folder (hypersd_inference.json).
    """
    from hypersd.sampling import apply_loras, load_pipeline, resolve_settings

    given = {"steps": steps, "scheduler": scheduler, "guidance": guidance, "eta": eta,
             "timesteps": _parse_timesteps(timesteps)}
    specs = _loras(lora)
    settings = _settings(resolve_settings(given, specs, model), seed, specs, batch_size)
    texts = _load_prompts(prompt, prompts)
    require_writable_dir(out.parent)
    pipe = load_pipeline(model)
    apply_loras(pipe, settings.loras)
    _sample_and_write(pipe, texts, settings, out)
    typer.echo(f"wrote {len(texts)} images to {out} (grid: {out / 'grid.png'})")


@app.command()
def generate(prompt: list[str] = typer.Argument(..., help="Prompt(s)."),
             base: Path = typer.Option(..., help="Base model: diffusers folder (SD1.x or SDXL) or a single-file "
                                                 "checkpoint (with --model-config)."),
             lora: Optional[list[str]] = typer.Option(None, help="LoRA file (diffusers or kohya), FILE:SCALE; repeatable."),
             unet: Optional[Path] = typer.Option(None, help="UNet weights (.safetensors; diffusers or original/ComfyUI "
                                                            "layout) replacing the base's, e.g. a one-step UNet."),
             steps: Optional[int] = typer.Option(None, help="Sampling steps (default: from the files)."),
             scheduler: Optional[str] = typer.Option(None, help="Scheduler (default: from the files)."),
             eta: Optional[float] = typer.Option(None, help="TCD gamma / DDIM eta in [0, 1]."),
             guidance: Optional[float] = typer.Option(None, help="CFG scale (default: from the files, else 0)."),
             seed: int = typer.Option(0, help="Seed of the first image."),
             controlnet: Optional[Path] = typer.Option(None, help="Diffusers ControlNet folder (needs "
                                                                  "--control-image)."),
             control_image: Optional[Path] = typer.Option(None, help="Image that conditions the ControlNet."),
             control: str = typer.Option("canny", help="Control image preprocessing: canny (white edges on "
                                                      "black), scribble (white strokes on black) or none."),
             control_scale: float = typer.Option(1.0, help="ControlNet conditioning scale (0: no effect)."),
             canny_low: int = typer.Option(100, help="Canny lower hysteresis threshold."),
             canny_high: int = typer.Option(200, help="Canny upper hysteresis threshold."),
             out: Path = typer.Option(Path("runs/generate"), help="Output folder.")):
    """Generate with a distilled model. Scheduler, steps, guidance and eta come from the LoRA's metadata,
    else from the conventions of the released Hyper-SD files (N-step LoRAs: DDIM trailing; 1-step
    unified LoRA: TCD; 1-step UNet: LCM at timestep 800); options override. With --controlnet, the
    preprocessed control image conditions every sample and is saved as control.png beside them."""
    from hypersd.conventions import released_settings
    from hypersd.sampling import apply_loras, load_pipeline, load_unet_file, resolve_settings

    given = {"steps": steps, "scheduler": scheduler, "guidance": guidance, "eta": eta, "timesteps": None}
    specs = _loras(lora)
    chosen = resolve_settings(given, specs, base, fallback=released_settings(unet.name) if unet else None)
    settings = _settings(chosen, seed, specs)
    spec = _control_spec(controlnet, control_image, control, control_scale, canny_low, canny_high)
    raw_control = spec.validate() if spec else None  # bad control input fails before any model loads
    require_writable_dir(out.parent)
    pipe = load_pipeline(base)
    if unet is not None:
        load_unet_file(pipe, unet)
    apply_loras(pipe, settings.loras)
    extra_call, extra_record, extra_files = {}, {}, {}
    if spec is not None:
        from hypersd.controlnet import CONTROL_FILE, with_controlnet

        pipe, control_png, extra_call = with_controlnet(pipe, spec, raw_control)
        extra_record, extra_files = spec.record(), {CONTROL_FILE: control_png}
    _sample_and_write(pipe, list(prompt), settings, out, extra_call, extra_record, extra_files)
    typer.echo(f"wrote {len(prompt)} images to {out} ({settings.scheduler}, {settings.steps} steps)")


def _control_spec(controlnet: Optional[Path], image: Optional[Path], mode: str, scale: float,
                  canny_low: int, canny_high: int):
    """The ControlNet conditioning of `generate`, or None; the two paths only make sense together."""
    from hypersd.controlnet import ControlSpec

    require(image is None or controlnet is not None, "--control-image needs --controlnet DIR")
    if controlnet is None:
        return None
    require(image is not None, "--controlnet needs --control-image IMAGE")
    return ControlSpec(controlnet, image, mode, scale, canny_low, canny_high)


@app.command("eval")
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
             out: Path = typer.Option(..., help="Output folder.")):
    """Sample at several step counts and score: ShapesEval, FD, PSNR vs the teacher."""
    from hypersd.evaluator.evaluate import Row, evaluate, with_steps
    from hypersd.prompts import EVAL_SIZE, read_prompt_file, standard_prompts

    assets = _assets()
    step_list = _parse_steps(steps)
    settings = _settings({"steps": step_list[0], "scheduler": scheduler, "eta": eta, "timesteps": None,
                          "guidance": assets.TEACHER_GUIDANCE if guidance is None else guidance}, seed, _loras(lora))
    texts = read_prompt_file(prompts) if prompts else standard_prompts(EVAL_SIZE)
    if n_prompts is not None:
        require(n_prompts > 0, f"--n-prompts must be positive, got {n_prompts}")
        texts = texts[:n_prompts]
    _check_shapes_prompts(texts)
    require(n_real >= 10, f"--n-real must be at least 10, got {n_real}")
    detector = _evaluator_dir(evaluator)
    model = model or assets.TEACHER
    from hypersd.errors import require_model_folder

    require_model_folder(model)
    require_writable_dir(out)
    rows = [Row(f"{label} @{s}", with_steps(settings, s)) for s in step_list]
    evaluate(model, rows, texts, detector, out, n_real=n_real, seed=seed, log=typer.echo)
    typer.echo(f"wrote {out / 'metrics.md'}")


def _check_shapes_prompts(texts: list[str]) -> None:
    from hypersd.shapes.captions import parse_caption

    for text in texts:
        try:
            parse_caption(text)
        except ValueError as exc:
            raise UserError(f"ShapesEval needs Shapes-world prompts: {exc}") from None


@app.command()
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
    from hypersd.errors import require_model
    from hypersd.recipe import load_recipe

    overrides = list(set_ or []) + ([f"data.source={data}"] if data else [])
    resolved = load_recipe(recipe, overrides)
    if dry_run:
        typer.echo(resolved.to_yaml().rstrip())
        return
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    model = require_model(model or _assets().TEACHER)
    require(not out.exists() or out.is_dir(), f"--out {out} is a file, not a run folder")
    require_writable_dir(out if out.is_dir() else out.parent)  # the run creates `out` once model, LoRA and
    # rewards are checked, so a refused run leaves no empty folder
    if not resume and (out / "checkpoint").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    from hypersd.distill.loop import Run

    run = Run(resolved, model, out, device=device, init_lora=init_lora)
    metrics = run.train(resume=resume)
    if not run.accelerator.is_main_process:  # several processes: one report
        return
    for name, stage in metrics["stages"].items():
        typer.echo(f"{name}: {stage['lora']}")
    typer.echo(f"run: {out}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="Report folder."),
         n_prompts: int = typer.Option(600, help="Prompts of the standard set to use."),
         n_real: int = typer.Option(2000, help="Real images for the Frechet distance."),
         recipe: Path = typer.Option(None, help="Distillation recipe (default: configs/demo-hyper.yaml)."),
         distill: bool = typer.Option(True, help="Distill the teacher with the recipe and add its rows."),
         set_: Optional[list[str]] = typer.Option(None, "--set", help="Recipe override KEY=VALUE (repeatable).")):
    """The main job on the embedded default: distill the shipped teacher with the full Hyper-SD recipe
    (TSCD, feedback, score distillation), sample teacher and LoRAs at 1 to 50 steps, write a report."""
    from hypersd.assets import DEMO_RECIPE
    from hypersd.recipe import load_recipe
    from hypersd.report import run_demo

    require(n_prompts > 0, f"--n-prompts must be positive, got {n_prompts}")
    recipe, set_ = recipe or DEMO_RECIPE, list(set_ or [])
    if distill:
        require(recipe.is_file(), f"recipe not found: {recipe}")
        load_recipe(recipe, set_)  # bad recipes fail here, before any work
    require_writable_dir(out)
    report = run_demo(out, n_prompts=n_prompts, n_real=n_real, recipe=recipe if distill else None,
                      recipe_overrides=set_, log=typer.echo)
    typer.echo(f"report: {report}")


@app.command("cache")
def cache_cmd(model: Path = typer.Option(..., help="Model whose VAE and text encoder(s) encode: diffusers folder or "
                                                    "single-file checkpoint (with --model-config)."),
              data: str = typer.Option(..., "--data", help="Image folder or tar shards (a .tar, shards-{000..009}.tar, "
                                                           "a glob or a folder of .tar files)."),
              out: Path = typer.Option(..., "--out", help="Cache folder to write (safetensors shards + cache-index.json)."),
              resolution: Optional[int] = typer.Option(None, help="Image side in pixels (default: the model's own)."),
              crop: str = typer.Option("center", help="center or random (seeded per image)."),
              batch_size: int = typer.Option(16, help="Images encoded at once."),
              seed: int = typer.Option(0, help="Seed of random crops."),
              device: str = typer.Option("auto", help="auto (cuda if available), cpu or cuda.")):
    """Encode a dataset once for one model: VAE posterior (mean, std), the text conditioning, captions
    and size ids of every usable item. Train on it with data.source: OUT (same model and resolution)."""
    from hypersd.data.cache import write_cache
    from hypersd.data.sources import source_kind
    from hypersd.data.transforms import CROPS, describe_skipped
    from hypersd.errors import require_model
    from hypersd.pretrain import resolve_device

    require(batch_size > 0, f"--batch-size must be positive, got {batch_size}")
    require(resolution is None or resolution >= 8, f"--resolution must be at least 8, got {resolution}")
    require(crop in CROPS, f"--crop must be one of {', '.join(CROPS)}, got {crop!r}")
    require(device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {device!r}")
    kind = source_kind(data)
    require(kind in ("folder", "shards"), f"--data must be an image folder or tar shards, got {kind} data: {data}")
    require_model(model)
    require_writable_dir(out.parent)
    index = write_cache(model, data, out, resolution, crop, batch_size, seed=seed, device=str(resolve_device(device)))
    typer.echo(f"wrote {index['count']} items to {out} ({len(index['shards'])} shards, resolution "
               f"{index['resolution']}; skipped: {describe_skipped(index['skipped'])})")


def _replace_dir(tmp: Path, final: Path) -> None:
    import shutil

    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)


def main() -> None:
    from hypersd.progress import quiet_libraries

    quiet_libraries()
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
