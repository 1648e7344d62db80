"""LoRA files in the kohya layout that ComfyUI and A1111 load: `lora_unet_*` module names with
`lora_down` / `lora_up` / `alpha` tensors. Keys come from diffusers' own converter
(`convert_state_dict_to_kohya`); each module's alpha is set from the file's peft config (alpha / r
per module), so a LoRA trained with alpha != rank keeps its scale. The project's inference settings
stay in the safetensors metadata."""

from __future__ import annotations

from pathlib import Path

import torch

from hypersd.errors import UserError
from hypersd.io import save_tensors
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


def export_kohya(source: Path, out: Path) -> Path:
    """Write `source` (a diffusers-format LoRA file) as a kohya-format file, atomically."""
    tensors, metadata = read_lora(source)
    kohya = kohya_tensors(tensors, metadata)
    ranks = {t.shape[0] for k, t in kohya.items() if k.endswith(".lora_down.weight")}
    meta = {k: v for k, v in metadata.items() if k != CONFIG_KEY and k != "format"}
    meta.update({"ss_network_module": "networks.lora", "ss_network_dim": str(max(ranks))})
    save_tensors(kohya, out, meta, what="LoRA")
    return out
