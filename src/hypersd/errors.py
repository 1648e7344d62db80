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
    """One line for weights diffusers could not load, pointing at --allow-pickle where that is why."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not pickle_allowed() and "safetensors" in message.lower():
        return UserError(f"cannot load {what} {path}: no safetensors weights (pickle checkpoints are refused; "
                         "pass --allow-pickle if you trust the files)")
    return UserError(f"cannot load {what} {path}: {message}")


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
