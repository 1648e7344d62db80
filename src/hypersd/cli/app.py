"""`hypersd app`: the web demos (text to image; scribble with a ControlNet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hypersd.errors import require


def app_cmd(host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default; no share links)."),
            port: int = typer.Option(7860, help="Port to listen on."),
            model: Optional[Path] = typer.Option(None, help="Base pipeline folder (default: the shipped teacher)."),
            one_step: Optional[Path] = typer.Option(None, help="One-step model: a full UNet file or a LoRA "
                                                                 "(default: the shipped one)."),
            unified: Optional[Path] = typer.Option(None, help="Unified LoRA (default: the shipped one)."),
            controlnet: Optional[Path] = typer.Option(None, help="Scribble ControlNet folder (default: the shipped "
                                                                  "one, where there is one)."),
            capacity: int = typer.Option(4, help="Requests held at once (one runs, the rest wait); one more is "
                                                 "answered 'busy, try again'.")):
    """Serve the two demos in the browser: "Text to image" (the one-step model, the unified LoRA at
    1-8 steps, the teacher at 50 steps) and "Scribble" (draw, type a prompt, generate with the ControlNet)."""
    import logging
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hypersd import assets
    from hypersd.app.service import AppService, offered_models
    from hypersd.app.ui import launch
    from hypersd.errors import require_model

    require(1 <= port <= 65535, f"--port must be in 1-65535, got {port}")
    require(capacity >= 1, f"--capacity must be >= 1, got {capacity}")
    model = require_model(model or assets.TEACHER)
    for path, what in ((one_step, "--one-step"), (unified, "--unified")):
        require(path is None or path.is_file(), f"{what} {path}: no such file")
    controlnet = controlnet or (assets.SCRIBBLE_CONTROLNET if assets.SCRIBBLE_CONTROLNET.is_dir() else None)
    require(controlnet is None or (controlnet / "config.json").is_file(),
            f"--controlnet {controlnet}: not a diffusers ControlNet folder (no config.json)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up probes
    models = offered_models(one_step or assets.ONE_STEP_MODEL, unified or assets.UNIFIED_LORA, assets.TEACHER_GUIDANCE)
    service = AppService(model, models, controlnet, capacity)
    typer.echo(f"serving on http://{host}:{port} (Ctrl-C stops)")
    launch(service, host, port)
