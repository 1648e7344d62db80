"""Sampling with the diffusers pipeline and schedulers (nothing re-implemented here).

A scheduler is chosen by name; LoRAs are loaded with diffusers' own loader; every image gets its
own seed so results do not depend on batching. Outputs: PNGs, samples.jsonl, a labelled grid.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from hypersd.errors import UserError, load_error, pickle_allowed, require, require_model, require_model_folder

SCHEDULERS = ("ddim", "ddim-trailing", "tcd", "lcm", "euler", "dpmpp")


@dataclass
class LoraSpec:
    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """`FILE` or `FILE:SCALE`."""
        path, scale = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                path, scale = head, float(tail)
            except ValueError:
                path = text
        return cls(Path(path), scale)


@dataclass
class SampleSettings:
    steps: int = 4
    scheduler: str = "ddim-trailing"
    guidance: float = 0.0
    eta: float | None = None
    timesteps: list[int] | None = None
    seed: int = 0
    batch_size: int = 125
    loras: list[LoraSpec] = field(default_factory=list)

    def validate(self) -> None:
        require(self.steps > 0, f"steps must be a positive integer, got {self.steps}")
        require(self.scheduler in SCHEDULERS,
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        require(self.eta is None or 0.0 <= self.eta <= 1.0, f"eta must be in [0, 1], got {self.eta}")
        require(self.guidance >= 0, f"guidance must be >= 0, got {self.guidance}")
        require(self.batch_size > 0, f"batch size must be positive, got {self.batch_size}")
        if self.timesteps is not None:
            require(all(0 <= t < 1000 for t in self.timesteps),
                    f"timesteps must lie in [0, 999], got {self.timesteps}")
        for lora in self.loras:
            require(lora.path.is_file(), f"LoRA file not found: {lora.path}")

    def record(self) -> dict:
        """What goes into each samples.jsonl line besides file, prompt and seed."""
        return {
            "steps": len(self.timesteps) if self.timesteps else self.steps,
            "scheduler": self.scheduler,
            "guidance": self.guidance,
            "eta": self.eta,
            "timesteps": self.timesteps,
            "lora": [f"{spec.path}:{spec.scale:g}" for spec in self.loras],
        }


INFERENCE_FILE = "hypersd_inference.json"  # sampling settings a distilled or fused pipeline folder carries
SETTING_DEFAULTS = {"steps": 4, "scheduler": "ddim-trailing", "guidance": 0.0, "eta": None, "timesteps": None}


def recommended_settings(loras: list[LoraSpec]) -> dict:
    """Sampling settings stored in the first LoRA file that has them (see hypersd.lora), else those
    of the first file named like an official Hyper-SD release (hypersd.conventions)."""
    from hypersd.conventions import released_settings
    from hypersd.lora import inference_settings

    for spec in loras:
        stored = inference_settings(spec.path)
        if stored:
            return {key: stored[key] for key in SETTING_DEFAULTS if key in stored}
    for spec in loras:
        named = released_settings(Path(spec.path).name)
        if named:
            return named
    return {}


def model_settings(model: Path | None) -> dict:
    """Sampling settings a distilled full-UNet pipeline folder carries (hypersd_inference.json)."""
    path = Path(model) / INFERENCE_FILE if model is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(stored, dict):
        raise UserError(f"{path} must hold a JSON object of sampling settings")
    return {key: stored[key] for key in SETTING_DEFAULTS if key in stored}


def resolve_settings(given: dict, loras: list[LoraSpec], model: Path | None = None,
                     fallback: dict | None = None) -> dict:
    """What the user gave over one recommendation taken whole: the LoRA's, else `fallback` (e.g. a
    one-step UNet file's convention), else the model folder's, else the defaults (None = not given).
    A recommendation's eta and timesteps belong to its scheduler (and timesteps to its steps): they
    are dropped when the user picks another scheduler (or other steps)."""
    chosen = {**SETTING_DEFAULTS, **(recommended_settings(loras) or fallback or model_settings(model))}
    if given.get("scheduler") is not None and given["scheduler"] != chosen["scheduler"]:
        chosen.update(eta=None, timesteps=None)
    if given.get("steps") is not None:
        chosen["timesteps"] = None
    chosen.update({key: value for key, value in given.items() if value is not None})
    return chosen


def make_scheduler(name: str, base_config):
    """A diffusers scheduler by project name, built from the model's own noise-schedule config."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        LCMScheduler,
        TCDScheduler,
    )

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


PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")  # what training and sampling support


def load_pipeline(model: Path, dtype: torch.dtype = torch.float32, model_config: Path | None = None):
    """An SD1.x or SDXL pipeline from a diffusers folder or a single-file checkpoint, offline, progress
    bar off. A single file needs `model_config` (or $HYPERSD_MODEL_CONFIG): a diffusers folder of the
    same architecture whose configs and tokenizers are used (its weights are not read)."""
    model = require_model(model)
    allow_pickle = pickle_allowed()
    if model.is_file():
        pipe = _load_single_file(model, dtype, model_config or os.environ.get("HYPERSD_MODEL_CONFIG"), allow_pickle)
    else:
        pipe = _load_folder(model, dtype, allow_pickle)
    pipe.set_progress_bar_config(disable=True)
    pipe.hypersd_scheduler_config = dict(pipe.scheduler.config)  # every sampler is built from this
    return pipe


def _pipeline_class(folder: Path) -> str:
    try:
        name = json.loads((folder / "model_index.json").read_text()).get("_class_name", "?")
    except (json.JSONDecodeError, AttributeError):
        raise UserError(f"{folder / 'model_index.json'} is not a valid pipeline index") from None
    require(name in PIPELINES, f"{folder} holds a {name}; supported are {', '.join(PIPELINES)}")
    return name


def _load_folder(model: Path, dtype: torch.dtype, allow_pickle: bool):
    import diffusers

    cls = getattr(diffusers, _pipeline_class(model))
    try:
        return cls.from_pretrained(model, dtype=dtype, local_files_only=True,
                                   use_safetensors=None if allow_pickle else True)
    except (OSError, ValueError, KeyError) as exc:
        raise load_error("model", model, exc) from None


def _load_single_file(path: Path, dtype: torch.dtype, config, allow_pickle: bool):
    """A single-file (original Stable Diffusion / SGM layout) checkpoint through diffusers'
    from_single_file, with the configs of a local diffusers folder (nothing fetched)."""
    import diffusers

    require(path.suffix == ".safetensors" or allow_pickle,
            f"{path} is a pickle checkpoint; pass --allow-pickle if you trust it, or convert it to .safetensors")
    require(config is not None, f"a single-file checkpoint needs --model-config DIR: a diffusers folder of the same "
                                f"architecture (configs and tokenizers; its weights are not read) for {path.name}")
    cls = getattr(diffusers, _pipeline_class(require_model_folder(Path(config))))
    try:
        return cls.from_single_file(str(path), config=str(config), torch_dtype=dtype, local_files_only=True)
    except Exception as exc:  # diffusers raises many types for a checkpoint that does not fit the configs
        raise load_error("model", path, exc) from None


def derived_pipeline(pipe, cls=None, **components):
    """`pipe` as another pipeline class (e.g. its ControlNet pipeline) or with some modules replaced,
    sharing every other module and its config options (diffusers' from_pipe); the project's
    sampler settings, the watermark choice and the quiet progress bar carried over."""
    import inspect

    cls = cls or type(pipe)
    if "add_watermarker" in inspect.signature(cls.__init__).parameters:  # not stored in the config
        components["add_watermarker"] = getattr(pipe, "watermark", None) is not None
    other = cls.from_pipe(pipe, **components)
    other.hypersd_scheduler_config = pipe.hypersd_scheduler_config
    other.set_progress_bar_config(disable=True)
    return other


LDM_UNET_PREFIX = "model.diffusion_model."


def diffusers_unet_keys(state: dict, config) -> dict:
    """A UNet state dict in the original LDM/SGM layout (`input_blocks...`, with or without the
    checkpoint prefix; e.g. the release's ComfyUI one-step UNet) in diffusers' layout, by diffusers'
    own converter; a diffusers-layout dict is returned as it is."""
    if not any(k.startswith((LDM_UNET_PREFIX, "input_blocks.")) for k in state):
        return state
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    prefixed = {k if k.startswith(LDM_UNET_PREFIX) else LDM_UNET_PREFIX + k: v for k, v in state.items()}
    return convert_ldm_unet_checkpoint(prefixed, dict(config))


def load_unet_file(pipe, path: Path) -> None:
    """Replace the pipeline's UNet weights with a UNet state dict from a .safetensors file (e.g. the
    released one-step UNet) in diffusers' or the original layout; every key must match."""
    from safetensors.torch import load_file

    path = Path(path)
    require(path.is_file(), f"UNet file not found: {path}")
    require(path.suffix == ".safetensors", f"UNet file must be .safetensors (pickle files are refused): {path}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for a bad header
        raise UserError(f"cannot read UNet file {path}: not a safetensors file ({type(exc).__name__})") from None
    own = pipe.unet.state_dict()
    state = diffusers_unet_keys(state, pipe.unet.config)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        example = (unexpected or missing)[0]
        raise UserError(f"UNet file {path} does not fit this model ({len(missing)} keys missing, {len(unexpected)} "
                        f"unexpected, e.g. {example!r}); it needs the UNet keys of the same architecture")
    bad = [k for k in own if own[k].shape != state[k].shape]
    require(not bad, f"UNet file {path}: {bad[:1]} has another shape than this model's UNet")
    pipe.unet.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def save_pipeline(pipe, folder: Path, settings: dict | None = None) -> Path:
    """Save `pipe` as a diffusers folder (safetensors) with the model's own scheduler (sampling swaps
    in others) and, if given, its sampling settings in INFERENCE_FILE; atomically."""
    import diffusers

    config = getattr(pipe, "hypersd_scheduler_config", None) or dict(pipe.scheduler.config)
    pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    if settings:
        (tmp / INFERENCE_FILE).write_text(json.dumps(settings, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def apply_loras(pipe, loras: list[LoraSpec]) -> None:
    """Load each LoRA file as its own adapter and activate them with their scales."""
    if not loras:
        return
    names = []
    for i, spec in enumerate(loras):
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(str(spec.path), adapter_name=name)
        except Exception as exc:  # diffusers raises many types for a bad file
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"cannot load LoRA {spec.path}: {first}") from None
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[spec.scale for spec in loras])


def _supports_custom_timesteps(scheduler) -> bool:
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


def generate(pipe, prompts: list[str], settings: SampleSettings, seeds: list[int] | None = None,
             progress_desc: str | None = None, extra_call: dict | None = None) -> np.ndarray:
    """Images for the prompts as uint8 (n, H, W, 3); image i uses seed `seeds[i]`. `extra_call` adds
    pipeline-specific arguments to every call (a ControlNet pipeline's `image=`, for example)."""
    from hypersd.progress import progress

    settings.validate()
    base_config = getattr(pipe, "hypersd_scheduler_config", None) or dict(pipe.scheduler.config)
    pipe.scheduler = make_scheduler(settings.scheduler, base_config)
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
    seeds = seeds if seeds is not None else [settings.seed + i for i in range(len(prompts))]
    chunks = []
    starts = range(0, len(prompts), settings.batch_size)
    for start in progress(starts, desc=progress_desc or f"{settings.scheduler} {settings.steps} steps"):
        end = start + settings.batch_size
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[start:end]]
        with torch.inference_mode():
            images = pipe(prompt=prompts[start:end], generator=generators, **call).images
        chunks.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(chunks)


def write_samples(out: Path, images: np.ndarray, prompts: list[str], seeds: list[int],
                  settings: SampleSettings, grid_columns: int = 8, grid_limit: int = 64,
                  extra_record: dict | None = None, extra_files: dict | None = None) -> Path:
    """PNGs + samples.jsonl + grid.png, written to a temp folder then moved into place.
    `extra_record` is added to every samples.jsonl line; `extra_files` maps file names to PIL images
    saved beside the samples (e.g. the control image that conditioned them)."""
    from hypersd.data.imagefolder import write_image_folder
    from hypersd.grids import labelled_grid

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    common = {**settings.record(), **(extra_record or {})}
    records = [{"prompt": p, "seed": s, **common} for p, s in zip(prompts, seeds)]
    write_image_folder(tmp, images, records)
    labelled_grid(images[:grid_limit], prompts[:grid_limit], columns=grid_columns).save(tmp / "grid.png")
    for name, image in (extra_files or {}).items():
        image.save(tmp / name)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def settings_dict(settings: SampleSettings) -> dict:
    d = asdict(settings)
    d["loras"] = [f"{spec.path}:{spec.scale:g}" for spec in settings.loras]
    return d
