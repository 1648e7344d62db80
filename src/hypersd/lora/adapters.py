"""LoRA adapters on one UNet (peft): the roles they play in a run, and what the run does with them.

Every network of a distillation run except the frozen base is a LoRA adapter on the same UNet,
named by its role (the constants below); the teacher "original" is the UNet with every adapter
disabled. This module adds adapters, lists their parameters, copies and averages one into
another (the EMA target), scales one, and fuses adapters into a plain UNet copy.
"""

from __future__ import annotations

import copy
import warnings

import torch

from hypersd.errors import UserError

STUDENT = "student"    # the LoRA being distilled (TSCD), or the generator (score distillation)
TARGET = "target"      # the target network of TSCD: an exponential moving average of the student
TEACHER = "teacher"    # teacher "previous": a frozen copy of the previous stage's student
FEEDBACK = "feedback"  # the feedback LoRA of human feedback learning, trained over the frozen student
FAKE = "fake"          # the fake score of score distillation, trained on the generator's samples
ROLES = (STUDENT, TARGET, TEACHER, FEEDBACK, FAKE)


def lora_config(rank: int, alpha: float, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True)


def add_lora(unet, rank: int, alpha: float, targets: list[str], name: str = STUDENT):
    """Add a trainable LoRA adapter to `unet` and make it the active one; returns its config. The
    adapter is kept in fp32 whatever the base's dtype (bf16 updates of small LoRA weights round away)."""
    config = lora_config(rank, alpha, targets)
    try:
        with warnings.catch_warnings():  # several adapters on one UNet is the design, not a mistake
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            unet.add_adapter(config, adapter_name=name)
    except ValueError as exc:
        raise UserError(f"cannot add LoRA to the UNet: {str(exc).splitlines()[0]}") from None
    for param in adapter_parameters(unet, name).values():
        if param.dtype != torch.float32:
            param.data = param.data.float()
    unet.set_adapter(name)
    return config


def has_adapter(unet, name: str) -> bool:
    return name in getattr(unet, "peft_config", {})


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


def set_adapter_scale(unet, name: str, scale: float) -> None:
    """Multiply adapter `name`'s delta by `scale` (on top of its alpha / r) in every LoRA layer."""
    from peft.tuners.lora import LoraLayer

    for module in unet.modules():
        if isinstance(module, LoraLayer) and name in module.scaling:
            module.set_scale(name, scale)


def fused_unet(unet, adapters: list[str]):
    """A plain fp32 copy of a peft-adapted UNet with `adapters` fused into its weights at their
    current scales (diffusers' fuse_lora, then unload_lora): the starting point of a full-UNet
    student. Cast before fusing, so that a bf16 base does not round the LoRA deltas away. The
    original is not touched."""
    fused = copy.deepcopy(unet).float()
    fused.fuse_lora(adapter_names=adapters)
    fused.unload_lora()
    return fused
