"""Writing outputs atomically: a file or folder appears whole under its final name, or not at all.

Everything is written under a temporary name beside the final one (same filesystem, so the last
step is a rename) and published only when complete; on any error, KeyboardInterrupt included, the
temporary is removed and whatever stood under the final name is left as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def temporary_name(final: Path) -> Path:
    final = Path(final)
    return final.with_name(final.name + ".tmp")


def replace_dir(tmp: Path, final: Path) -> Path:
    """Publish folder `tmp` as `final`: the previous `final` is moved aside, then removed."""
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """`with atomic_dir(out) as tmp:` write into the empty folder `tmp`; on success it becomes `out`."""
    final = Path(final)
    tmp = temporary_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """`with atomic_file(path) as tmp:` write the file `tmp`; on success it replaces `path`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(final)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
