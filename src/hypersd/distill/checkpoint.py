"""Run checkpoints: adapter weights (safetensors), optimizer state, RNG state and position, written atomically.

The optimizer state is a plain tensor dictionary saved with torch.save and read back with
`weights_only=True` (no arbitrary pickled objects are ever loaded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def lora_state(unet) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu().contiguous() for k, p in unet.named_parameters() if "lora_" in k}


def save_checkpoint(folder: Path, unet, optimizer, position: dict) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(lora_state(unet), tmp / "adapters.safetensors")
    torch.save(optimizer.state_dict() if optimizer is not None else {}, tmp / "optimizer.pt")
    save_file({"torch_rng": torch.get_rng_state()}, tmp / "rng.safetensors")
    (tmp / "state.json").write_text(json.dumps(position, indent=2))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def read_position(folder: Path) -> dict | None:
    state = Path(folder) / "state.json"
    return json.loads(state.read_text()) if state.is_file() else None


def restore_checkpoint(folder: Path, unet, optimizer) -> dict:
    """Load adapter weights, optimizer and RNG state; returns the saved position."""
    folder = Path(folder)
    weights = load_file(folder / "adapters.safetensors")
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for key, value in weights.items():
            if key in params:
                params[key].copy_(value)
    if optimizer is not None:
        state = torch.load(folder / "optimizer.pt", weights_only=True)
        if state:
            optimizer.load_state_dict(state)
    torch.set_rng_state(load_file(folder / "rng.safetensors")["torch_rng"])
    return read_position(folder)
