"""LoRA adapters on the UNet (peft) and their files (diffusers format, safetensors).

A saved file is exactly what `StableDiffusionPipeline.save_lora_weights` writes (so
`pipe.load_lora_weights(file)` loads it unchanged, alpha included), plus one metadata entry,
`hypersd_inference`: the recommended scheduler, timestep spacing, steps, guidance and eta, which
`hypersd sample` applies unless the user overrides them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from hypersd.errors import UserError

INFERENCE_KEY = "hypersd_inference"


def lora_config(rank: int, alpha: float, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True)


def add_lora(unet, rank: int, alpha: float, targets: list[str], name: str = "student"):
    """Add a trainable LoRA adapter to `unet` and make it the active one; returns its config. The
    adapter is kept in fp32 whatever the base's dtype (bf16 updates of small LoRA weights round away)."""
    import warnings

    config = lora_config(rank, alpha, targets)
    try:
        with warnings.catch_warnings():  # several adapters on one UNet is the design, not a mistake
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            unet.add_adapter(config, adapter_name=name)
    except ValueError as exc:
        raise UserError(f"cannot add LoRA to the UNet: {str(exc).splitlines()[0]}") from None
    for key, param in unet.named_parameters():
        if f".{name}." in key and "lora_" in key and param.dtype != torch.float32:
            param.data = param.data.float()
    unet.set_adapter(name)
    return config


def save_lora(path: Path, unet, name: str, inference: dict | None = None, extra: dict | None = None) -> Path:
    """Write adapter `name` of `unet` to one safetensors file, atomically."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config = unet.peft_config[name]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=get_peft_model_state_dict(unet, adapter_name=name),
            unet_lora_adapter_metadata=config.to_dict(), weight_name="lora.safetensors")
        written = Path(tmp) / "lora.safetensors"
        with safe_open(written, "pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        if inference is not None:
            metadata[INFERENCE_KEY] = json.dumps(inference)
        for key, value in (extra or {}).items():
            metadata[f"hypersd_{key}"] = value if isinstance(value, str) else json.dumps(value)
        partial = Path(tmp) / "final.safetensors"
        save_file(tensors, partial, metadata=metadata)
        os.replace(partial, path)
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


def inference_settings(path: Path) -> dict:
    """The recommended sampling settings stored in a LoRA file ({} when it has none)."""
    text = read_metadata(path).get(INFERENCE_KEY)
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"LoRA {path}: its {INFERENCE_KEY} metadata is not valid JSON") from None
    return settings if isinstance(settings, dict) else {}


def copy_lora(src: Path, dst: Path) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def load_into_adapter(unet, path: Path, name: str) -> int:
    """Copy a diffusers-format LoRA file's weights into existing adapter `name` (same targets and
    rank; its scale alpha / r must match too). Returns the number of tensors copied."""
    import torch
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
    params = {k: p for k, p in unet.named_parameters() if f".{name}." in k}
    copied = 0
    with torch.no_grad():
        for key, value in load_file(str(path)).items():
            if not key.startswith("unet.") or ".lora_" not in key:
                continue
            target = key[len("unet."):].replace(".lora_A.weight", f".lora_A.{name}.weight").replace(
                ".lora_B.weight", f".lora_B.{name}.weight")
            if target not in params:
                raise UserError(f"LoRA {path}: {key} has no place in this run's adapter (other LoRA targets?)")
            if params[target].shape != value.shape:
                raise UserError(f"LoRA {path}: {key} has shape {tuple(value.shape)}, the run's adapter "
                                f"{tuple(params[target].shape)} (set lora.rank to the file's rank)")
            params[target].copy_(value)
            copied += 1
    if copied == 0:
        raise UserError(f"LoRA {path} holds no UNet LoRA weights")
    return copied


def fused_unet(unet, adapters: list[str]):
    """A plain fp32 copy of a peft-adapted UNet with `adapters` fused into its weights at their
    current scales (diffusers' fuse_lora, then unload_lora): the starting point of a full-UNet
    student. Cast before fusing, so that a bf16 base does not round the LoRA deltas away. The
    original is not touched."""
    import copy

    fused = copy.deepcopy(unet).float()
    fused.fuse_lora(adapter_names=adapters)
    fused.unload_lora()
    return fused
