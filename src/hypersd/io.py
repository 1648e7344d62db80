"""Writing outputs safely: a file or folder appears whole under its final name, or not at all, and
nothing the project did not make is ever replaced.

Everything is written under a temporary name beside the final one (same filesystem, so the last
step is a rename), flushed to disk (fsync) and published only when complete; on any error,
KeyboardInterrupt and a full disk included, the temporary is removed and whatever stood under the
final name is left as it was. A folder the project writes carries OUTPUT_MARK; an existing folder
without it (and holding anything) is replaced only when the user asks (`--overwrite`), and the
working folder, a folder above it, a home folder or the root never.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from hypersd.errors import UserError

OUTPUT_MARK = ".hypersd-output"  # the file that says "hypersd wrote this folder"


def check_output_dir(final: Path, overwrite: bool = False) -> Path:
    """`final` as a folder the caller may replace, or one clear UserError saying why not."""
    final = Path(final)
    resolved, cwd = final.resolve(), Path.cwd().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve() or cwd.is_relative_to(resolved):
        raise UserError(f"refusing to replace {final}: it is the working folder, a folder above it, a home or the "
                        "root folder; give a new folder")
    if final.exists() and not final.is_dir():
        raise UserError(f"{final} is a file, not a folder; give a folder")
    if final.is_dir() and not overwrite and not (final / OUTPUT_MARK).is_file() and any(final.iterdir()):
        raise UserError(f"{final} holds files hypersd did not write; pass --overwrite to replace it, or give a new "
                        "folder")
    return final


def mark_output_dir(folder: Path) -> Path:
    """Record that hypersd wrote `folder` (so that a later run may replace it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OUTPUT_MARK).write_text("written by hypersd; it may replace this folder\n")
    return folder


def fsync_tree(root: Path) -> None:
    """Flush every file below `root`, then the folders, to disk (before a rename publishes them)."""
    root = Path(root)
    paths = [root] if root.is_file() else sorted(root.rglob("*"), key=lambda p: -len(p.parts)) + [root]
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(final: Path, kind: str = "tmp") -> Path:
    """A new hidden name beside `final` (`.NAME.tmp-XXXX`): never one that already exists."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.{kind}-", dir=final.parent)
    os.close(fd)
    os.unlink(name)
    return Path(name)


def replace_dir(tmp: Path, final: Path) -> Path:
    """Publish folder `tmp` as `final` (flushed first): the previous `final` is moved aside, then removed."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    old = temporary_name(final, "old") if final.exists() else None
    if old is not None:
        final.rename(old)
    try:
        tmp.rename(final)
    except BaseException:
        if old is not None:  # put the previous one back under its name
            old.rename(final)
        raise
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """`with atomic_dir(out) as tmp:` write into the empty folder `tmp`; on success it becomes `out`
    (which check_output_dir must allow) and carries OUTPUT_MARK."""
    final = check_output_dir(final, overwrite)
    tmp = temporary_name(final)
    tmp.mkdir()
    try:
        yield tmp
        mark_output_dir(tmp)
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """`with atomic_file(path) as tmp:` write the file `tmp`; on success it replaces `path`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        yield tmp
        fsync_tree(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def require_finite(tensors: dict, what: str) -> None:
    """Refuse to write weights that hold NaN or inf (one clear line naming the first such tensor)."""
    bad = [key for key, t in tensors.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise UserError(f"refusing to write {what}: {len(bad)} of {len(tensors)} tensors hold NaN or inf "
                        f"(e.g. {bad[0]})")


def save_tensors(tensors: dict, path: Path, metadata: dict | None = None, what: str = "weights") -> Path:
    """A safetensors file written atomically, after checking every tensor is finite."""
    from safetensors.torch import save_file

    require_finite(tensors, f"{what} {path}")
    with atomic_file(path) as tmp, writing(path):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o666 & ~current_umask())  # safetensors writes owner-only files; others' tools read ours
    return Path(path)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: reading it means setting it, which other threads would see


def current_umask() -> int:
    """The process's file-creation mask, as it was when hypersd was imported."""
    return _UMASK


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writers of other libraries (safetensors, torch, diffusers) report a full disk in their own
    error types: one clear UserError instead (the atomic helpers remove the partial output)."""
    try:
        yield
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to write is one line for the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot write {path}: {reason}") from None


LOCK_FILE = ".hypersd-lock"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[Path]:
    """Hold `folder` for this process: a second writer started on it while this one lives is refused
    with one line naming the holder. The lock is the kernel's (flock on LOCK_FILE, which also holds
    the holder's process id), so a lock whose process died, killed or not, is free again."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = (lock.read_text().strip() if lock.is_file() else "") or "?"
            raise UserError(f"{folder} is in use by process {holder} (lock file {lock}); wait for it to end, "
                            "or choose another folder") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # we hold the lock of the file that is there (not one its holder just removed)
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_text(path: Path, text: str) -> Path:
    """A text file written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)
