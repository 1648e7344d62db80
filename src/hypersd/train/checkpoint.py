"""Run checkpoints: adapter and head weights (safetensors), optimizer states, RNG state and the
run's position, crash-safe.

Layout: RUN/checkpoints/s{stage:02d}-{step:07d}/ one folder per checkpoint, and RUN/checkpoints/latest,
a one-line file naming the newest published one. A checkpoint is written as a hidden temporary
folder, ends with manifest.json (every file's size and SHA-256), is flushed to disk, renamed to its
numbered name (the publishing step), then `latest` is replaced atomically and older checkpoints
beyond the newest `keep` are removed: a kill at any moment leaves the previous complete checkpoint
in place. Resuming takes the newest checkpoint whose files all match its manifest, and says in one
line which damaged one it passed over (`latest_checkpoint`). Runs written before this layout keep
RUN/checkpoint/ (no manifest), which is still read.

Optimizer states are plain tensor dictionaries saved with torch.save and read back with
`weights_only=True` (no arbitrary pickled objects are ever loaded).

Several processes: weights and optimizer states are the same on every process (averaged gradients),
so one copy is kept; the random state is per process: rng.safetensors is process 0's (the only one
of a single-process run), rng-rank{r}.safetensors process r's. A process whose file is missing (the
checkpoint was written by fewer processes) gets process 0's state and reseeds (see the loop).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hypersd.errors import UserError
from hypersd.io import fsync_dir, fsync_tree, require_finite, temporary_name, writing


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


CHECKPOINTS, LATEST, MANIFEST, LEGACY = "checkpoints", "latest", "manifest.json", "checkpoint"
KEEP = 2  # complete checkpoints kept: the newest and the one before

fault_hook = None  # tests only: called with the name of each step of a checkpoint write (to kill there)


def fault_point(point: str) -> None:
    """Where a test may kill the process (fault_hook); nothing otherwise."""
    if fault_hook is not None:
        fault_hook(point)


def checkpoint_name(position: dict) -> str:
    return f"s{position['stage']:02d}-{position['step']:07d}"


def save_checkpoint(run_dir: Path, unet, position: dict, optimizers: dict | None = None,
                    modules: dict | None = None, rng_states: list[dict] | None = None, keep: int = KEEP) -> Path:
    """Write, flush and publish a checkpoint of `position` (see the module doc); returns its folder.
    rng_states: every process's random state in rank order (default: this process's only)."""
    root = Path(run_dir) / CHECKPOINTS
    final = root / checkpoint_name(position)
    tmp = temporary_name(final)
    try:
        tmp.mkdir()
        with writing(final):
            _write_checkpoint(tmp, unet, position, optimizers, modules, rng_states)
        _write_manifest(tmp)
        fault_point("manifest")
        fsync_tree(tmp)
        fault_point("flushed")
        aside = temporary_name(final, "old") if final.exists() else None
        if aside is not None:  # the same position again (a resumed stage boundary): replace it
            final.rename(aside)
        try:
            tmp.rename(final)
        except BaseException:
            if aside is not None:
                aside.rename(final)
            raise
        fsync_dir(root)
        fault_point("renamed")
        _publish_latest(root, final.name)
        fault_point("published")
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(root, keep)
    fault_point("pruned")
    return final


def _write_checkpoint(tmp: Path, unet, position: dict, optimizers: dict | None, modules: dict | None,
                      rng_states: list[dict] | None) -> None:
    adapters = lora_state(unet)
    require_finite(adapters, "a checkpoint")
    save_file(adapters, tmp / "adapters.safetensors")
    fault_point("file")
    for name, module in (modules or {}).items():
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
                  tmp / f"{name}.safetensors")
        fault_point("file")
    for name, optimizer in (optimizers or {}).items():
        torch.save(optimizer.state_dict() if optimizer is not None else {}, tmp / f"optimizer-{name}.pt")
        fault_point("file")
    for rank, state in enumerate(rng_states or [rng_state()]):
        save_file(state, tmp / rng_file(rank))
        fault_point("file")
    (tmp / "state.json").write_text(json.dumps(position, indent=2))
    fault_point("file")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(folder: Path) -> None:
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir())}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2))


def _publish_latest(root: Path, name: str) -> None:
    pointer = temporary_name(root / LATEST)
    pointer.write_text(name + "\n")
    fsync_tree(pointer)
    os.replace(pointer, root / LATEST)
    fsync_dir(root)


def _prune(root: Path, keep: int) -> None:
    """Remove all but the newest `keep` published checkpoints, and temporaries of killed writers."""
    for path in root.glob(".*-*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    published = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for path in published[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def verify(folder: Path) -> str | None:
    """None when every file of the checkpoint is present and matches its manifest; else why not."""
    folder = Path(folder)
    try:
        if not (folder / MANIFEST).is_file():
            return _verify_legacy(folder)
        files = json.loads((folder / MANIFEST).read_text())["files"]
        for name, entry in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
                return f"{name} does not match its manifest (truncated or changed)"
        read_position(folder)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, this checkpoint is not usable
        return f"unreadable ({type(exc).__name__})"
    return None


def _verify_legacy(folder: Path) -> str | None:
    """A checkpoint of the older layout (no manifest): every file must at least read back."""
    from safetensors import safe_open

    if read_position(folder) is None or not (folder / "adapters.safetensors").is_file():
        return "state.json or adapters.safetensors missing"
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        elif path.suffix == ".pt":
            torch.load(path, weights_only=True)
    return None


def candidates(run_dir: Path) -> list[Path]:
    """Published checkpoints of a run, newest first (by position), the older layout's last."""
    root = Path(run_dir) / CHECKPOINTS
    found = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True) \
        if root.is_dir() else []
    legacy = Path(run_dir) / LEGACY
    return found + ([legacy] if legacy.is_dir() else [])


def latest_checkpoint(run_dir: Path, warn=None) -> Path | None:
    """The newest checkpoint of the run that verifies; each damaged one passed over is reported in
    one line through `warn`; None when the run has none. A run whose checkpoints are all damaged is
    a UserError naming them."""
    problems = []
    for folder in candidates(run_dir):
        reason = verify(folder)
        if reason is None:
            if problems and warn is not None:
                passed = "; ".join(f"{f} ({r})" for f, r in problems)
                warn(f"warning: damaged checkpoint passed over: {passed}; resuming from {folder}")
            return folder
        problems.append((folder, reason))
    if problems:
        raise UserError(f"no usable checkpoint in {run_dir}: " + "; ".join(f"{f.name}: {r}" for f, r in problems))
    return None


def has_checkpoint(run_dir: Path) -> bool:
    return bool(candidates(run_dir))


def read_position(folder: Path) -> dict | None:
    state = Path(folder) / "state.json"
    if not state.is_file():
        return None
    position = json.loads(state.read_text())
    if not isinstance(position, dict) or not {"stage", "step"} <= position.keys():
        raise ValueError(f"{state} holds no run position")
    return position


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
