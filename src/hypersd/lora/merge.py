"""Merge two LoRA files into one, exactly: delta W = delta W_a + ratio * delta W_b.

Hyper-SD trains human feedback as a separate LoRA with the TSCD LoRA loaded, then merges the two
at a chosen ratio (section 3.2). Two low-rank products add up to one of rank r_a + r_b: stack the
down matrices (lora_A) and put the up matrices (lora_B), each multiplied by its own scale
alpha / r (and by the ratio), side by side; the merged file has alpha = rank, so scale 1. Conv
LoRAs stack the same way (down: output channels; up: its 1x1 input channels). A module that only
one file adapts keeps that file's rank (a per-module rank in the merged config).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from hypersd.errors import UserError
from hypersd.io import save_tensors
from hypersd.lora.files import INFERENCE_KEY, read_metadata

CONFIG_KEY = "lora_adapter_metadata"


def read_lora(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and safetensors metadata of a diffusers-format (peft-keyed) LoRA file."""
    from safetensors.torch import load_file

    metadata = read_metadata(path)
    if CONFIG_KEY not in metadata:
        raise UserError(f"LoRA {path} has no {CONFIG_KEY} metadata (not written by diffusers/hypersd)")
    tensors = load_file(str(path))
    if not any(key.endswith(".lora_A.weight") for key in tensors):
        raise UserError(f"LoRA {path} has no lora_A/lora_B tensors")
    return tensors, metadata


def module_scales(tensors: dict, metadata: dict) -> dict[str, float]:
    """alpha / r for every adapted module: r from the tensor's shape, alpha from alpha_pattern
    (peft's own pattern matching) or lora_alpha."""
    from peft.utils.other import get_pattern_key

    config = json.loads(metadata[CONFIG_KEY])
    for flag in ("unet.use_rslora", "unet.use_dora"):
        if config.get(flag):
            raise UserError(f"cannot merge LoRAs with {flag.split('.')[-1]} (only plain LoRA scaling is supported)")
    alpha, alpha_pattern = config["unet.lora_alpha"], config.get("unet.alpha_pattern") or {}
    scales = {}
    for key, tensor in tensors.items():
        if not key.endswith(".lora_A.weight"):
            continue
        if not key.startswith("unet."):
            raise UserError(f"cannot merge {key}: only UNet LoRAs are supported")
        module = key[: -len(".lora_A.weight")]
        short = module[len("unet."):]
        a = alpha_pattern.get(get_pattern_key(list(alpha_pattern), short), alpha)
        scales[module] = a / tensor.shape[0]
    return scales


def merge_lora_files(a: Path, b: Path, out: Path, ratio: float = 1.0) -> Path:
    """Write the exact merge of LoRA files a and b (b weighted by `ratio`) to `out`."""
    if not math.isfinite(ratio):
        raise UserError(f"the merge ratio must be a finite number, got {ratio}")
    ta, ma = read_lora(a)
    tb, mb = read_lora(b)
    sa, sb = module_scales(ta, ma), module_scales(tb, mb)
    merged, ranks = {}, set()
    for module in sorted(set(sa) | set(sb)):
        downs, ups = [], []
        for tensors, scales, weight in ((ta, sa, 1.0), (tb, sb, ratio)):
            if module in scales:  # a file that does not adapt the module adds no rank there
                downs.append(tensors[f"{module}.lora_A.weight"].float())
                ups.append(tensors[f"{module}.lora_B.weight"].float() * (scales[module] * weight))
        _require_same_module(module, downs, ups, a, b)
        merged[f"{module}.lora_A.weight"] = torch.cat(downs, 0).contiguous()
        merged[f"{module}.lora_B.weight"] = torch.cat(ups, 1).contiguous()
        ranks.add(merged[f"{module}.lora_A.weight"].shape[0])
    config = json.loads(ma[CONFIG_KEY])
    rank = max(ranks)
    config["unet.r"], config["unet.lora_alpha"] = rank, float(rank)
    config["unet.rank_pattern"] = {k: v for k, v in _rank_pattern(merged).items() if v != rank}
    config["unet.alpha_pattern"] = dict(config["unet.rank_pattern"])  # alpha = rank everywhere: scale 1
    targets = set(config.get("unet.target_modules") or []) | set(json.loads(mb[CONFIG_KEY]).get("unet.target_modules") or [])
    config["unet.target_modules"] = sorted(targets)
    config["unet.use_rslora"], config["unet.use_dora"] = False, False
    metadata = {CONFIG_KEY: json.dumps(config, indent=2), "format": "pt",
                "hypersd_merge": json.dumps({"a": str(a), "b": str(b), "ratio": ratio})}
    inference = ma.get(INFERENCE_KEY) or mb.get(INFERENCE_KEY)  # the base LoRA (a) decides how it samples
    if inference:
        metadata[INFERENCE_KEY] = inference
    save_tensors(merged, out, metadata, what="merged LoRA")
    return Path(out)


def _rank_pattern(merged: dict[str, torch.Tensor]) -> dict[str, int]:
    return {key[len("unet."): -len(".lora_A.weight")]: t.shape[0]
            for key, t in merged.items() if key.endswith(".lora_A.weight")}


def _require_same_module(module: str, downs: list, ups: list, a: Path, b: Path) -> None:
    """Both files must adapt `module` of the same UNet: equal input and output sizes."""
    ins = {tuple(d.shape[1:]) for d in downs}
    outs = {tuple(u.shape[:1]) + tuple(u.shape[2:]) for u in ups}
    if len(ins) > 1 or len(outs) > 1:
        raise UserError(f"cannot merge {a} and {b}: they were made for different UNets ({module} has "
                        f"input {sorted(ins)} and output {sorted(outs)} sizes)")
