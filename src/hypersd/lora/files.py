"""LoRA files (diffusers format, safetensors): write an adapter, read its metadata, load one back.

A saved file is exactly what `StableDiffusionPipeline.save_lora_weights` writes (so
`pipe.load_lora_weights(file)` loads it unchanged, alpha included), plus one metadata entry,
`hypersd_inference`: the recommended scheduler, timestep spacing, steps, guidance and eta, which
`hypersd sample` applies unless the user overrides them.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypersd.errors import UserError
from hypersd.io import atomic_file, save_tensors

INFERENCE_KEY = "hypersd_inference"
STEP_TIMESTEPS = "step_timesteps"  # in INFERENCE_KEY: timesteps for some step counts, {"1": [700], "2": [900, 450]}
BASE_MODEL_KEY = "hypersd_base_model"  # sd1 or sdxl: the architecture the LoRA adapts


@dataclass
class LoraSpec:
    """A LoRA file applied at a scale."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """`FILE` or `FILE:SCALE` (a finite number)."""
        path, scale = text, 1.0
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                path, scale = head, float(tail)
            except ValueError:
                path = text
        if not math.isfinite(scale):
            raise UserError(f"LoRA scale must be a finite number, got {tail!r} in {text!r}")
        return cls(Path(path), scale)


def save_lora(path: Path, unet, name: str, inference: dict | None = None, extra: dict | None = None) -> Path:
    """Write adapter `name` of `unet` to one safetensors file, atomically."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = unet.peft_config[name]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # diffusers writes a folder; we keep one file
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=get_peft_model_state_dict(unet, adapter_name=name),
            unet_lora_adapter_metadata=config.to_dict(), weight_name="lora.safetensors")
        written = Path(tmp) / "lora.safetensors"
        with safe_open(written, "pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        if inference is not None:
            metadata[INFERENCE_KEY] = json.dumps(inference)
        metadata[BASE_MODEL_KEY] = "sdxl" if unet.config.get("addition_embed_type") == "text_time" else "sd1"
        for key, value in (extra or {}).items():
            metadata[f"hypersd_{key}"] = value if isinstance(value, str) else json.dumps(value)
    save_tensors(tensors, path, metadata, what="LoRA")
    return path


def read_metadata(path: Path) -> dict:
    """The file's safetensors metadata; one clear error for a missing or malformed file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"LoRA file not found: {path}")
    try:
        with safe_open(path, "pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise UserError(f"cannot load LoRA {path}: not a safetensors file ({type(exc).__name__})") from None


def inference_settings(path: Path, metadata: dict | None = None, what: str = "LoRA") -> dict:
    """The recommended sampling settings stored in a LoRA (or UNet) file ({} when it has none); `metadata`:
    the file's, if already read."""
    text = (read_metadata(path) if metadata is None else metadata).get(INFERENCE_KEY)
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"{what} {path}: its {INFERENCE_KEY} metadata is not valid JSON") from None
    return settings if isinstance(settings, dict) else {}


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def cast_lora(src: Path, dst: Path, dtype: str) -> Path:
    """Write `src` to `dst` with every floating tensor in `dtype` (fp32, fp16 or bf16), metadata kept
    and the dtype recorded in it (`hypersd_dtype`)."""
    import torch

    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    target = getattr(torch, DTYPES[dtype])
    return rewrite_lora(src, dst, {"hypersd_dtype": dtype}, lambda t: t.to(target) if t.is_floating_point() else t)


def with_step_timesteps(src: Path, dst: Path, table: dict[str, list[int]]) -> Path:
    """Write `src` to `dst` with `table` (step count -> timesteps, STEP_TIMESTEPS) added to its recommended
    sampling settings; weights and other metadata unchanged."""
    settings = inference_settings(src)
    settings[STEP_TIMESTEPS] = {**settings.get(STEP_TIMESTEPS, {}), **table}
    return rewrite_lora(src, dst, {INFERENCE_KEY: json.dumps(settings)})


def rewrite_lora(src: Path, dst: Path, metadata_update: dict, convert=None) -> Path:
    """`src` written to `dst` with `metadata_update` over its metadata and `convert` applied to every tensor."""
    from safetensors import safe_open

    metadata = read_metadata(src)  # one clear error for a missing or malformed file
    with safe_open(src, "pt") as f:
        tensors = {key: convert(f.get_tensor(key)) if convert else f.get_tensor(key) for key in f.keys()}
    return save_tensors(tensors, Path(dst), {**metadata, **metadata_update}, what="LoRA")


def copy_lora(src: Path, dst: Path) -> Path:
    with atomic_file(dst) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def grown_to_rank(value, own, key: str):
    """A lower-rank LoRA factor placed in a higher-rank one so that B @ A is unchanged: lora_A's first rows
    are the file's (the rest keep the adapter's fresh initialisation, so the new rank can learn), lora_B's
    first columns are the file's and the rest are zero. None when the shapes differ in more than the rank."""
    import torch

    axis = 0 if ".lora_A." in key else 1
    rank = value.shape[axis]
    other_axes_equal = all(a == b for i, (a, b) in enumerate(zip(value.shape, own.shape)) if i != axis)
    if value.dim() != own.dim() or not other_axes_equal or rank >= own.shape[axis]:
        return None
    grown = own.detach().clone() if axis == 0 else torch.zeros_like(own)
    grown.narrow(axis, 0, rank).copy_(value)
    return grown


def load_into_adapter(unet, path: Path, name: str) -> int:
    """Load a diffusers-format LoRA file's weights into existing adapter `name` (same targets; its scale
    alpha / r must match) with peft's own set_peft_model_state_dict. A file of lower rank than the adapter
    grows into it unchanged (`grown_to_rank`), so a run can add capacity to a LoRA it continues. Returns
    the number of tensors loaded."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    metadata = read_metadata(path)  # one clear line for a missing or broken file
    if "lora_adapter_metadata" in metadata:
        stored = json.loads(metadata["lora_adapter_metadata"])
        config = unet.peft_config[name]
        if stored.get("unet.rank_pattern") or abs(stored["unet.lora_alpha"] / stored["unet.r"]
                                                  - config.lora_alpha / config.r) > 1e-9:
            raise UserError(f"LoRA {path}: its scale alpha/r (or per-module ranks) differ from the run's "
                            f"lora.rank/lora.alpha; set them to the file's (r {stored['unet.r']}, "
                            f"alpha {stored['unet.lora_alpha']})")
    state = {key[len("unet."):]: value for key, value in load_file(str(path)).items()
             if key.startswith("unet.") and ".lora_" in key}
    if not state:
        raise UserError(f"LoRA {path} holds no UNet LoRA weights")
    own = get_peft_model_state_dict(unet, adapter_name=name)
    for key, value in state.items():
        if key not in own:
            raise UserError(f"LoRA {path}: unet.{key} has no place in this run's adapter (other LoRA targets?)")
        if own[key].shape != value.shape:
            grown = grown_to_rank(value, own[key], key)
            if grown is None:
                raise UserError(f"LoRA {path}: unet.{key} has shape {tuple(value.shape)}, the run's adapter "
                                f"{tuple(own[key].shape)} (set lora.rank to the file's rank or above it)")
            state[key] = grown
    set_peft_model_state_dict(unet, state, adapter_name=name)
    return len(state)
