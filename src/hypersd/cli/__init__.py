"""The `hypersd` command line: one module per verb group, assembled here.

  data.py      hypersd data shapes|prompts, hypersd cache
  sample.py    hypersd sample, generate, eval
  distill.py   hypersd distill, demo
  lora.py      hypersd lora merge|export|fuse
  rewards.py   hypersd rewards ...
  embedded.py  hypersd pretrain, hypersd evaluator train|check
  common.py    option parsers and helpers shared by the verbs

Each verb imports the library modules it runs inside its own body, so that `hypersd --help` and a
bad argument answer at once instead of after importing torch and diffusers (tests/test_layers.py
checks function-local imports like any other: no cycles, nothing upward).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import typer  # noqa: E402

from hypersd.cli import data, distill, embedded, lora, rewards, sample  # noqa: E402
from hypersd.errors import UserError  # noqa: E402
from hypersd.options import configure_loading  # noqa: E402
from hypersd.progress import quiet_libraries  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyper-SD: distill diffusion models into 1-8 step generators.")
app.add_typer(data.app, name="data")
app.add_typer(embedded.evaluator_app, name="evaluator")
app.add_typer(rewards.app, name="rewards")
app.add_typer(lora.app, name="lora")
for command, name in ((embedded.pretrain, "pretrain"), (sample.sample, "sample"), (sample.generate, "generate"),
                      (sample.eval_cmd, "eval"), (distill.distill, "distill"), (distill.demo, "demo"),
                      (data.cache_cmd, "cache")):
    app.command(name)(command)


@app.callback()
def _global_options(allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Also load pickle-based weight files (.bin/.ckpt); only for files you trust."),
        model_config: Optional[Path] = typer.Option(
        None, "--model-config", help="For a single-file checkpoint given as a model: a diffusers folder of the same "
                                     "architecture (SD1.5 or SDXL) whose configs and tokenizers are used.")):
    """Hyper-SD: distill diffusion models into 1-8 step generators."""
    configure_loading(allow_pickle=allow_pickle, model_config=model_config)
    quiet_libraries()  # here, not in main(): `hypersd --help` needs neither diffusers nor transformers


def main() -> None:
    try:
        app()
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
