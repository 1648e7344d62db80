"""Sampling with the diffusers pipeline and schedulers (nothing re-implemented here).

A scheduler is chosen by name; LoRAs are loaded with diffusers' own loader; every image gets its
own seed so results do not depend on batching. Outputs: PNGs, samples.jsonl, a labelled grid.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from hypersd.data.imagefolder import write_image_folder
from hypersd.errors import UserError, require
from hypersd.inference.grids import labelled_grid
from hypersd.inference.settings import SCHEDULERS, SampleSettings, check_negative_prompts
from hypersd.io import atomic_dir
from hypersd.lora.files import LoraSpec
from hypersd.progress import progress


def make_scheduler(name: str, base_config):
    """A diffusers scheduler by project name, built from the model's own noise-schedule config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, LCMScheduler, TCDScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(base_config, timestep_spacing="leading", steps_offset=1)
    if name == "ddim-trailing":
        return DDIMScheduler.from_config(base_config, timestep_spacing="trailing", steps_offset=1)
    if name == "tcd":
        return TCDScheduler.from_config(base_config, timestep_spacing="trailing")
    if name == "lcm":
        return LCMScheduler.from_config(base_config, timestep_spacing="trailing")
    if name == "euler":
        return EulerDiscreteScheduler.from_config(base_config, timestep_spacing="trailing")
    if name == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(base_config, timestep_spacing="trailing")
    raise UserError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")



def apply_loras(pipe, loras: list[LoraSpec]) -> None:
    """Load each LoRA file as its own adapter and activate them with their scales."""
    if not loras:
        return
    names = []
    for i, spec in enumerate(loras):
        name = f"lora{i}"
        try:
            with quiet_loading():
                pipe.load_lora_weights(str(spec.path), adapter_name=name)
        except Exception as exc:  # diffusers raises many types for a bad file
            raise UserError(f"cannot load LoRA {spec.path}: {load_problem(exc)}") from None
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[spec.scale for spec in loras])


@contextlib.contextmanager
def quiet_loading():
    """No log lines or warnings from the loaders: a failure becomes one line of ours."""
    names = ("diffusers", "peft", "transformers")
    levels = {name: logging.getLogger(name).level for name in names}
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def load_problem(exc: Exception) -> str:
    """The first specific line of a state-dict error (which key or shape differs), and how many
    such lines there are; else the error's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if line.startswith(("size mismatch", "Missing key", "Unexpected key"))]
    if specific:
        more = f" (and {len(specific) - 1} more)" if len(specific) > 1 else ""
        return f"it does not fit this model's UNet: {specific[0].rstrip('.')}{more}"
    return lines[0] if lines else type(exc).__name__


def _supports_custom_timesteps(scheduler) -> bool:
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


def generate(pipe, prompts: list[str], settings: SampleSettings, seeds: list[int] | None = None,
             progress_desc: str | None = None, extra_call: dict | None = None,
             negative_prompts: list[str | None] | None = None) -> np.ndarray:
    """Images for the prompts as uint8 (n, H, W, 3); image i uses seed `seeds[i]` and negative prompt
    `negative_prompts[i]` (None: none, i.e. the empty prompt of classifier-free guidance). `extra_call`
    adds pipeline-specific arguments to every call (a ControlNet pipeline's `image=`, for example). The
    sampler is built from the pipeline's own scheduler config and put back afterwards."""
    with settings_scheduler(pipe, settings):
        check_negative_prompts(negative_prompts, settings)
        call = _call_arguments(pipe, settings, extra_call)
        seeds = seeds if seeds is not None else [settings.seed + i for i in range(len(prompts))]
        desc = progress_desc or f"{settings.scheduler} {settings.steps} steps"
        return np.concatenate([(np.clip(images, 0, 1) * 255).round().astype(np.uint8) for images in
                               _pipeline_batches(pipe, prompts, settings.batch_size, seeds, call, desc, negative_prompts)])


def generate_latents(pipe, prompts: list[str], settings: SampleSettings, seeds: list[int],
                     progress_desc: str | None = None) -> torch.Tensor:
    """The latents the model hands its VAE for the prompts (pipeline output_type "latent", i.e. still multiplied
    by the VAE's scaling factor), one seed per prompt as in `generate`; float32 on the CPU."""
    with settings_scheduler(pipe, settings):
        call = _call_arguments(pipe, settings, {"output_type": "latent"})
        return torch.cat([latents.float().cpu() for latents in
                          _pipeline_batches(pipe, prompts, settings.batch_size, seeds, call, progress_desc or "latents")])


@contextlib.contextmanager
def settings_scheduler(pipe, settings: SampleSettings):
    """`pipe` sampling with the settings' scheduler (built from the pipeline's own scheduler config; "default":
    the one loaded), put back afterwards; the settings are validated against the model first."""
    settings.validate()
    own = pipe.scheduler
    limit = own.config.num_train_timesteps
    require(settings.timesteps or settings.steps <= limit,
            f"steps must be at most the model's {limit} training timesteps, got {settings.steps}")
    if settings.scheduler != "default":
        pipe.scheduler = make_scheduler(settings.scheduler, own.config)
    try:
        yield pipe
    finally:
        pipe.scheduler = own


def _call_arguments(pipe, settings: SampleSettings, extra_call: dict | None) -> dict:
    """The pipeline call's keyword arguments for the settings (output as numpy unless extra_call says)."""
    call = {"guidance_scale": settings.guidance, "output_type": "np"}
    if settings.timesteps:
        require(_supports_custom_timesteps(pipe.scheduler),
                f"scheduler {settings.scheduler!r} does not take custom timesteps")
        call["timesteps"] = list(settings.timesteps)
    else:
        call["num_inference_steps"] = settings.steps
    if settings.eta is not None:
        call["eta"] = settings.eta
    call.update(extra_call or {})
    return call


def _pipeline_batches(pipe, prompts: list[str], batch_size: int, seeds: list[int], call: dict, desc: str,
                      negative_prompts: list[str | None] | None = None):
    """The pipeline's output (`.images`) for each batch of prompts: prompt i with its own generator seeded
    `seeds[i]` (so results do not depend on batching) and negative prompt `negative_prompts[i]`, if any."""
    call = dict(call)
    for start in progress(range(0, len(prompts), batch_size), desc=desc):
        end = start + batch_size
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[start:end]]
        if negative_prompts is not None and any(negative_prompts[start:end]):
            call["negative_prompt"] = [n or "" for n in negative_prompts[start:end]]
        else:
            call.pop("negative_prompt", None)
        with torch.inference_mode():
            yield pipe(prompt=prompts[start:end], generator=generators, **call).images


def write_samples(out: Path, images: np.ndarray, prompts: list[str], seeds: list[int],
                  settings: SampleSettings, grid_columns: int = 8, grid_limit: int = 64,
                  extra_record: dict | None = None, extra_files: dict | None = None, overwrite: bool = False,
                  negative_prompts: list[str | None] | None = None) -> Path:
    """PNGs + samples.jsonl + grid.png, written atomically (hypersd.io). A line has `negative_prompt`
    where image i had one. `extra_record` is added to every samples.jsonl line; `extra_files` maps file names to PIL images
    saved beside the samples (e.g. the control image that conditioned them). An existing `out` is
    replaced only if hypersd wrote it, or with `overwrite` (hypersd.io.check_output_dir)."""
    common = {**settings.record(), **(extra_record or {})}
    negatives = negative_prompts or [None] * len(prompts)
    records = [{"prompt": p, **({"negative_prompt": n} if n else {}), "seed": s, **common}
               for p, n, s in zip(prompts, negatives, seeds)]
    with atomic_dir(out, overwrite) as tmp:
        write_image_folder(tmp, images, records)
        labelled_grid(images[:grid_limit], prompts[:grid_limit], columns=grid_columns).save(tmp / "grid.png")
        for name, image in (extra_files or {}).items():
            image.save(tmp / name)
    return Path(out)
