"""Options that change how model files are read, set once per command by the command line.

They are plain attributes of one object, not environment variables: `hypersd --allow-pickle ...`
and `hypersd --model-config DIR ...` set them for that command (each command sets both), and
library callers set them directly (`hypersd.options.loading.allow_pickle = True`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadingOptions:
    allow_pickle: bool = False        # also read pickle-based weight files (.bin, .ckpt, .pt, .pth)
    model_config: Path | None = None  # configs and tokenizers for a single-file checkpoint


loading = LoadingOptions()


def configure_loading(allow_pickle: bool = False, model_config: Path | None = None) -> None:
    loading.allow_pickle, loading.model_config = allow_pickle, model_config
