"""Diffusers pipelines on disk: load (a folder or a single-file checkpoint, offline), derive
(another pipeline class over the same modules), replace the UNet from a file, save (atomically).

Only SD1.x-style and SDXL text-to-image pipelines are supported, epsilon-prediction; a pipeline
folder may carry its recommended sampling settings in INFERENCE_FILE.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from hypersd.errors import UserError, load_error, pickle_allowed, require, require_model, require_model_folder
from hypersd.io import atomic_dir, require_finite, writing
from hypersd.options import loading

INFERENCE_FILE = "hypersd_inference.json"  # sampling settings a distilled or fused pipeline folder carries

def resolve_device(name: str) -> torch.device:
    """"auto": cuda when available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")  # what training and sampling support


def load_pipeline(model: Path, dtype: torch.dtype = torch.float32, model_config: Path | None = None):
    """An SD1.x or SDXL pipeline from a diffusers folder or a single-file checkpoint, offline, progress
    bar off. A single file needs `model_config` (default: `hypersd --model-config`, see
    hypersd.options): a diffusers folder of the same architecture whose configs and tokenizers are
    used (its weights are not read)."""
    model = require_model(model)
    allow_pickle = pickle_allowed()
    if model.is_file():
        pipe = _load_single_file(model, dtype, model_config or loading.model_config, allow_pickle)
    else:
        pipe = _load_folder(model, dtype, allow_pickle)
    pipe.set_progress_bar_config(disable=True)
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
    sharing every other module and its config options (diffusers' from_pipe); the watermark choice
    and the quiet progress bar carried over."""
    cls = cls or type(pipe)
    if "add_watermarker" in inspect.signature(cls.__init__).parameters:  # not stored in the config
        components["add_watermarker"] = getattr(pipe, "watermark", None) is not None
    other = cls.from_pipe(pipe, **components)
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


UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


def unet_weights_file(path: Path) -> Path:
    """The UNet weight file that `path` names: a .safetensors file itself, or UNET_WEIGHTS in a UNet
    folder or in a pipeline folder's unet/."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "unet" / UNET_WEIGHTS, path / UNET_WEIGHTS):
            if candidate.is_file():
                return candidate
        raise UserError(f"no UNet weights in {path} (no {UNET_WEIGHTS} there or in its unet/ folder)")
    require(path.is_file(), f"UNet file not found: {path}")
    require(path.suffix == ".safetensors", f"UNet file must be .safetensors (pickle files are refused): {path}")
    return path


def load_unet_weights(unet, path: Path) -> None:
    """Replace `unet`'s weights with a UNet state dict read from `path` (see unet_weights_file; e.g. the
    released one-step UNet or a distilled full UNet) in diffusers' or the original layout; every key
    and shape must match."""
    from safetensors.torch import load_file

    path = unet_weights_file(path)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for a bad header
        raise UserError(f"cannot read UNet file {path}: not a safetensors file ({type(exc).__name__})") from None
    own = unet.state_dict()
    state = diffusers_unet_keys(state, unet.config)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        example = (unexpected or missing)[0]
        raise UserError(f"UNet file {path} does not fit this model ({len(missing)} keys missing, {len(unexpected)} "
                        f"unexpected, e.g. {example!r}); it needs the UNet keys of the same architecture")
    bad = [k for k in own if own[k].shape != state[k].shape]
    require(not bad, f"UNet file {path}: {bad[:1]} has another shape than this model's UNet")
    unet.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def load_unet_file(pipe, path: Path) -> None:
    """The pipeline's UNet weights replaced by those in `path` (load_unet_weights)."""
    load_unet_weights(pipe.unet, path)


def with_unet_file(pipe, path: Path):
    """`pipe` with its own copy of the UNet carrying the weights in `path` (a one-step UNet beside the
    base model); text encoder, VAE and scheduler stay shared."""
    import copy

    unet = copy.deepcopy(pipe.unet)
    load_unet_weights(unet, path)
    return derived_pipeline(pipe, unet=unet)


def save_pipeline(pipe, folder: Path, settings: dict | None = None, overwrite: bool = False) -> Path:
    """Save `pipe` as a diffusers folder (safetensors) with its own scheduler and, if given, its
    sampling settings in INFERENCE_FILE; atomically, only over a folder hypersd wrote (or with
    `overwrite`), and only with finite UNet weights."""
    require_finite(dict(pipe.unet.named_parameters()), f"the UNet of {folder}")
    with atomic_dir(folder, overwrite) as tmp, writing(folder):
        pipe.save_pretrained(tmp, safe_serialization=True)
        if settings:
            (tmp / INFERENCE_FILE).write_text(json.dumps(settings, indent=2))
    return Path(folder)

