"""Run checkpoints: adapter and head weights (safetensors), optimizer states, RNG state and the
run's position, written atomically (hypersd.io.atomic_dir).

Optimizer states are plain tensor dictionaries saved with torch.save and read back with
`weights_only=True` (no arbitrary pickled objects are ever loaded).

Several processes: weights and optimizer states are the same on every process (averaged gradients),
so one copy is kept; the random state is per process: rng.safetensors is process 0's (the only one
of a single-process run), rng-rank{r}.safetensors process r's. A process whose file is missing (the
checkpoint was written by fewer processes) gets process 0's state and reseeds (see the loop).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hypersd.io import atomic_dir


def rng_state() -> dict[str, torch.Tensor]:
    """The CPU random state, and every CUDA device's where there is one (GPU runs draw noise there)."""
    state = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda_rng"]))


def preserved_rng():
    """`with preserved_rng():` code whose random draws must not move the training stream (torch's
    fork_rng: the CPU generator and every initialised CUDA device's are restored on exit)."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else [])


def lora_state(unet) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu().contiguous() for k, p in unet.named_parameters() if "lora_" in k}


def rng_file(rank: int = 0) -> str:
    return "rng.safetensors" if rank == 0 else f"rng-rank{rank}.safetensors"


def save_checkpoint(folder: Path, unet, position: dict, optimizers: dict | None = None,
                    modules: dict | None = None, rng_states: list[dict] | None = None) -> None:
    """rng_states: every process's random state in rank order (default: this process's only)."""
    with atomic_dir(folder) as tmp:
        _write_checkpoint(tmp, unet, position, optimizers, modules, rng_states)


def _write_checkpoint(tmp: Path, unet, position: dict, optimizers: dict | None, modules: dict | None,
                      rng_states: list[dict] | None) -> None:
    save_file(lora_state(unet), tmp / "adapters.safetensors")
    for name, module in (modules or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  tmp / f"{name}.safetensors")
    for name, optimizer in (optimizers or {}).items():
        torch.save(optimizer.state_dict() if optimizer is not None else {}, tmp / f"optimizer-{name}.pt")
    for rank, state in enumerate(rng_states or [rng_state()]):
        save_file(state, tmp / rng_file(rank))
    (tmp / "state.json").write_text(json.dumps(position, indent=2))


def read_position(folder: Path) -> dict | None:
    state = Path(folder) / "state.json"
    return json.loads(state.read_text()) if state.is_file() else None


def restore_checkpoint(folder: Path, unet, optimizers: dict | None = None, modules: dict | None = None,
                       rank: int = 0) -> bool:
    """Load adapter weights, module weights, optimizer states and process `rank`'s RNG state; returns
    whether the checkpoint had that RNG state (a checkpoint of fewer processes has not)."""
    folder = Path(folder)
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for key, value in load_file(folder / "adapters.safetensors").items():
            if key in params:
                params[key].copy_(value)
    for name, module in (modules or {}).items():
        path = folder / f"{name}.safetensors"
        if path.is_file():
            module.load_state_dict(load_file(path))
    for name, optimizer in (optimizers or {}).items():
        path = folder / f"optimizer-{name}.pt"
        state = torch.load(path, weights_only=True) if path.is_file() else {}
        if state and optimizer is not None:
            optimizer.load_state_dict(state)
    own = folder / rng_file(rank)
    if own.is_file():
        set_rng_state(load_file(own))
    return own.is_file()
