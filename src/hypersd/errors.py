"""User-facing errors: one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """Bad input from the user; the CLI prints `error: <message>` and exits with status 2."""


def pickle_allowed() -> bool:
    """Whether the user passed --allow-pickle (pickle-based weight files are refused otherwise)."""
    from hypersd.options import loading

    return loading.allow_pickle


def load_error(what: str, path: Path, exc: Exception) -> UserError:
    """One line for weights diffusers could not load: a damaged or missing weights file named as
    such, --allow-pickle pointed at only where pickle files are the reason."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    damaged = weights_problem(Path(path)) if Path(path).is_dir() else None
    if damaged:
        return UserError(f"cannot load {what} {path}: {damaged}")
    if not pickle_allowed() and "safetensors" in message.lower():
        return UserError(f"cannot load {what} {path}: no safetensors weights (pickle checkpoints are refused; "
                         "pass --allow-pickle if you trust the files)")
    return UserError(f"cannot load {what} {path}: {message}")


def weights_problem(folder: Path) -> str | None:
    """What is wrong with the weights of a diffusers folder (or of its component folders): a
    safetensors file whose header cannot be read, or a component without any weights file."""
    from safetensors import safe_open

    parts = [folder] if (folder / "config.json").is_file() else [
        p for p in sorted(folder.iterdir()) if p.is_dir() and (p / "config.json").is_file()]
    for part in parts:
        files = sorted(part.glob("*.safetensors"))
        for file in files:
            try:
                with safe_open(str(file), "pt") as f:
                    for key in f.keys():
                        f.get_slice(key)
            except Exception:  # noqa: BLE001 - any unreadable header or body is "damaged"
                return f"{file.relative_to(folder.parent)} is damaged or truncated"
        pickles = [p for p in part.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if not files and not pickles and part.name in ("unet", "vae", "text_encoder", "text_encoder_2", ""):
            return f"{part.relative_to(folder.parent)} has no weights file"
    return None


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def require_model_folder(path: Path) -> Path:
    path = Path(path)
    require(path.is_dir(), f"model folder not found: {path}")
    require((path / "model_index.json").is_file(),
            f"not a diffusers pipeline folder (no model_index.json): {path}")
    return path


SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")  # single-file checkpoints (.ckpt only with --allow-pickle)


def require_model(path: Path) -> Path:
    """A diffusers pipeline folder or an existing single-file checkpoint."""
    path = Path(path)
    if path.suffix in SINGLE_FILE_SUFFIXES:
        require(path.is_file(), f"model checkpoint not found: {path}")
        return path
    return require_model_folder(path)


def require_writable_dir(path: Path) -> Path:
    """Create `path` (and parents) or fail with one line; also refuses a file in the way."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".hypersd-write-probe-{os.getpid()}"  # one per process: launched runs probe together
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write output folder {path}: {exc.strerror or exc}") from None
    return path
