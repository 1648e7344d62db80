"""One progress-bar style for every long loop of the project."""

from __future__ import annotations

from tqdm.auto import tqdm


def progress(iterable=None, *, total=None, desc: str = "", disable: bool | None = None, **kw):
    """A tqdm bar; hidden when not attached to a terminal unless HYPERSD_PROGRESS=1."""
    import os
    import sys

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("HYPERSD_PROGRESS") == "1")
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, **kw)
