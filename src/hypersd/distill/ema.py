"""Exponential moving average of one LoRA adapter into another adapter on the same UNet."""

from __future__ import annotations

import torch


def adapter_parameters(unet, name: str) -> dict[str, torch.nn.Parameter]:
    """The parameters of adapter `name`, keyed by their name with the adapter name removed."""
    marker = f".{name}."
    return {key.replace(marker, "."): p for key, p in unet.named_parameters() if marker in key and "lora_" in key}


@torch.no_grad()
def copy_adapter(unet, source: str, target: str) -> None:
    src, dst = adapter_parameters(unet, source), adapter_parameters(unet, target)
    assert src.keys() == dst.keys(), "adapters differ in layout"
    for key, p in src.items():
        dst[key].copy_(p)


@torch.no_grad()
def ema_update(unet, source: str, target: str, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source; decay 0 copies (online target)."""
    src, dst = adapter_parameters(unet, source), adapter_parameters(unet, target)
    for key, p in src.items():
        dst[key].lerp_(p, 1.0 - decay)
