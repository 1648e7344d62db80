"""LoRA files in the kohya layout that ComfyUI and A1111 load: `lora_unet_*` module names with
`lora_down` / `lora_up` / `alpha` tensors. Keys come from diffusers' own converter
(`convert_state_dict_to_kohya`); each module's alpha is set from the file's peft config (alpha / r
per module), so a LoRA trained with alpha != rank keeps its scale. The project's inference settings
stay in the safetensors metadata, beside what the web UIs read: kohya's `ss_*` keys (A1111 and Forge
list a LoRA under the base model of `ss_base_model_version`) and Stability's ModelSpec 1.0 keys
(`modelspec.architecture`, ...)."""

from __future__ import annotations

from pathlib import Path

import torch

from hypersd.errors import UserError
from hypersd.io import save_tensors
from hypersd.lora.files import BASE_MODEL_KEY
from hypersd.lora.merge import CONFIG_KEY, module_scales, read_lora


def kohya_tensors(tensors: dict[str, torch.Tensor], metadata: dict) -> dict[str, torch.Tensor]:
    """The kohya state dict of a diffusers-format (peft-keyed, `unet.` prefixed) LoRA."""
    from diffusers.utils import convert_state_dict_to_kohya

    out = {}
    for module, scale in module_scales(tensors, metadata).items():
        down, up = tensors[f"{module}.lora_A.weight"], tensors.get(f"{module}.lora_B.weight")
        if up is None:
            raise UserError(f"LoRA has {module}.lora_A.weight without its lora_B")
        converted = convert_state_dict_to_kohya({f"{module}.lora_A.weight": down, f"{module}.lora_B.weight": up})
        alpha_key = next(k for k in converted if k.endswith(".alpha"))
        converted[alpha_key] = torch.tensor(scale * down.shape[0], dtype=torch.float32)
        out.update(converted)
    return out


# base model -> (ss_base_model_version, modelspec.architecture prefix, modelspec.implementation, resolution)
BASE_MODELS = {
    "sd1": ("sd_v1", "stable-diffusion-v1", "diffusers", "512x512"),
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base", "https://github.com/Stability-AI/generative-models",
             "1024x1024"),
}
SDXL_CROSS_ATTENTION = 2048  # the width of SDXL's two text encoders' joint embedding


def base_model_of(tensors: dict, metadata: dict) -> str:
    """'sd1' or 'sdxl': the file's own record (hypersd_base_model, written at training), else the
    cross-attention width its attn2.to_k adapters read (2048 for SDXL)."""
    recorded = metadata.get(BASE_MODEL_KEY)
    if recorded in BASE_MODELS:
        return recorded
    widths = {t.shape[1] for k, t in tensors.items() if k.endswith("attn2.to_k.lora_A.weight")}
    return "sdxl" if SDXL_CROSS_ATTENTION in widths else "sd1"


def web_ui_metadata(base: str, ranks: set[int], alphas: set[float], title: str) -> dict[str, str]:
    """kohya's ss_* keys and the ModelSpec 1.0 keys of a LoRA for `base` (see BASE_MODELS)."""
    version, architecture, implementation, resolution = BASE_MODELS[base]
    alpha = f"{alphas.pop():g}" if len(alphas) == 1 else "Dynamic"  # kohya's word for per-module alphas
    return {"ss_network_module": "networks.lora", "ss_network_dim": str(max(ranks)), "ss_network_alpha": alpha,
            "ss_base_model_version": version, "ss_v2": "False",
            "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": f"{architecture}/lora",
            "modelspec.implementation": implementation, "modelspec.title": title,
            "modelspec.resolution": resolution, "modelspec.prediction_type": "epsilon"}


def export_kohya(source: Path, out: Path, base: str = "auto") -> Path:
    """Write `source` (a diffusers-format LoRA file) as a kohya-format file, atomically. `base`: sd1,
    sdxl, or auto (from the file, see base_model_of)."""
    if base != "auto" and base not in BASE_MODELS:
        raise UserError(f"base model must be auto, {' or '.join(BASE_MODELS)}, got {base!r}")
    tensors, metadata = read_lora(source)
    kohya = kohya_tensors(tensors, metadata)
    ranks = {t.shape[0] for k, t in kohya.items() if k.endswith(".lora_down.weight")}
    alphas = {round(float(t), 6) for k, t in kohya.items() if k.endswith(".alpha")}
    meta = {k: v for k, v in metadata.items() if k != CONFIG_KEY and k != "format"}
    base = base_model_of(tensors, metadata) if base == "auto" else base
    meta.update(web_ui_metadata(base, ranks, alphas, Path(out).stem))
    save_tensors(kohya, out, meta, what="LoRA")
    return out
