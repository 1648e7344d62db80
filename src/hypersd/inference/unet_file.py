"""A distilled full UNet as one file, as Hyper-SD releases its one-step UNet: the UNet's weights (diffusers
layout, safetensors, fp16 or fp32) with its recommended sampling settings in the metadata. It goes beside
the base model it was distilled from: `hypersd generate --unet FILE`, the app's and the demo's one-step
model. Files without settings fall back to the release's naming conventions (hypersd.inference.conventions)."""

from __future__ import annotations

import json
from pathlib import Path

from hypersd.errors import UserError, require
from hypersd.inference.conventions import released_settings
from hypersd.inference.settings import model_settings, recommended_part
from hypersd.io import save_tensors
from hypersd.lora.files import DTYPES, INFERENCE_KEY, inference_settings
from hypersd.models.pipelines import LDM_UNET_PREFIX, unet_weights_file

FORMAT_KEY, FORMAT = "hypersd_format", "hypersd-unet/1"


def read_unet_metadata(path: Path) -> tuple[list[str], dict]:
    """(tensor names, metadata) of a safetensors file; one clear line for anything else."""
    from safetensors import safe_open

    path = Path(path)
    require(path.is_file(), f"UNet file not found: {path}")
    try:
        with safe_open(path, "pt") as f:
            return list(f.keys()), dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own types for a bad header
        raise UserError(f"cannot read UNet file {path}: not a safetensors file ({type(exc).__name__})") from None


def is_unet_file(path: Path) -> bool:
    """A full UNet's weights (diffusers or original layout), not a LoRA."""
    keys, _ = read_unet_metadata(path)
    return any(k == "conv_in.weight" or k.startswith((LDM_UNET_PREFIX, "input_blocks.")) for k in keys)


def unet_file_settings(path: Path) -> dict:
    """The sampling settings stored in the file, else those its name gives under the release's conventions."""
    stored = inference_settings(path, read_unet_metadata(path)[1], what="UNet file")
    if stored:
        return recommended_part(stored)
    return released_settings(Path(path).name)


def export_unet(model: Path, out: Path, dtype: str = "fp16", overwrite: bool = False,
                settings_from: Path | None = None) -> Path:
    """The UNet of `model` (a pipeline folder, e.g. a full-UNet distillation's output, a UNet folder, or a
    UNet weight file such as a full-UNet checkpoint's generator.safetensors) written to `out` in `dtype`,
    with the sampling settings of `settings_from` (default: `model`; a pipeline folder's
    hypersd_inference.json) in the metadata. An existing `out` is replaced only if hypersd wrote it, or
    with `overwrite`."""
    import torch
    from safetensors.torch import load_file

    require(dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    require(Path(out).suffix == ".safetensors", f"--out must end in .safetensors, got {out}")
    if Path(out).exists() and not overwrite:
        _, metadata = read_unet_metadata(out) if Path(out).is_file() else ([], {})
        require(metadata.get(FORMAT_KEY) == FORMAT, f"{out} exists and hypersd did not write it; "
                                                   "pass --overwrite to replace it")
    source = unet_weights_file(model)
    target = getattr(torch, DTYPES[dtype])
    tensors = {k: (t.to(target) if t.is_floating_point() else t) for k, t in load_file(str(source)).items()}
    settings = model_settings(Path(settings_from or model))
    metadata = {FORMAT_KEY: FORMAT, "hypersd_dtype": dtype, "hypersd_source": str(model)}
    if settings:
        metadata[INFERENCE_KEY] = json.dumps(settings)
    return save_tensors(tensors, Path(out), metadata, what="UNet")
