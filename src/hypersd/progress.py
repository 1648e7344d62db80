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


def quiet_libraries() -> None:
    """Our own progress bars only: silence the loaders' bars and advisory warnings."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)
