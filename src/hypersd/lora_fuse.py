"""A complete diffusers pipeline folder with LoRAs fused into the UNet weights (diffusers'
fuse_lora), for tools that take a model but no LoRA. The first LoRA's inference settings go to
hypersd_inference.json, which `hypersd sample --model FOLDER` applies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hypersd.sampling import INFERENCE_FILE, LoraSpec, apply_loras, load_pipeline, recommended_settings


def fuse_into_pipeline(model: Path, loras: list[LoraSpec], out: Path) -> Path:
    """Load `model`, fuse `loras` at their scales, save the plain pipeline to `out` (atomically)."""
    import diffusers

    pipe = load_pipeline(model)
    apply_loras(pipe, loras)
    pipe.fuse_lora(components=["unet"], lora_scale=1.0)  # adapter weights (the LoRA scales) are already set
    pipe.unload_lora_weights()
    config = pipe.hypersd_scheduler_config  # save the model's own scheduler, not a sampler swapped in
    pipe.scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    settings = recommended_settings(loras)
    if settings:
        (tmp / INFERENCE_FILE).write_text(json.dumps(settings, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
