"""A complete diffusers pipeline folder with LoRAs fused into the UNet weights (diffusers'
fuse_lora), for tools that take a model but no LoRA. The first LoRA's inference settings go to
hypersd_inference.json, which `hypersd sample --model FOLDER` applies."""

from __future__ import annotations

from pathlib import Path

from hypersd.inference.sample import apply_loras
from hypersd.inference.settings import recommended_settings
from hypersd.lora.files import LoraSpec
from hypersd.models.pipelines import load_pipeline, save_pipeline


def fuse_into_pipeline(model: Path, loras: list[LoraSpec], out: Path, overwrite: bool = False) -> Path:
    """Load `model`, fuse `loras` at their scales, save the plain pipeline to `out` (atomically)."""
    pipe = load_pipeline(model)
    apply_loras(pipe, loras)
    pipe.fuse_lora(components=["unet"], lora_scale=1.0)  # adapter weights (the LoRA scales) are already set
    pipe.unload_lora_weights()
    return save_pipeline(pipe, out, recommended_settings(loras), overwrite)
