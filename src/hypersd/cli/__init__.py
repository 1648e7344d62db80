"""The `hypersd` command line: one module per verb group, assembled here.

  data.py      hypersd data shapes|prompts|pairs|merge-pairs, hypersd cache
  sample.py    hypersd sample, generate, eval
  distill.py   hypersd distill, demo
  lora.py      hypersd lora merge|export|fuse|schedule
  unet.py      hypersd unet export
  tiny_vae.py  hypersd tiny-vae train
  rewards.py   hypersd rewards ...
  embedded.py  hypersd pretrain, hypersd evaluator train|check, hypersd controlnet train
  app.py       hypersd app (the web demos)
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

from hypersd.cli import app as app_verb  # noqa: E402
from hypersd.cli import data, distill, embedded, lora, rewards, sample, tiny_vae, unet  # noqa: E402
from hypersd.errors import UserError  # noqa: E402
from hypersd.options import configure_loading  # noqa: E402
from hypersd.progress import quiet_libraries  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Hyper-SD: distill diffusion models into 1-8 step generators.")
app.add_typer(data.app, name="data")
app.add_typer(embedded.evaluator_app, name="evaluator")
app.add_typer(embedded.controlnet_app, name="controlnet")
app.add_typer(rewards.app, name="rewards")
app.add_typer(lora.app, name="lora")
app.add_typer(unet.app, name="unet")
app.add_typer(tiny_vae.app, name="tiny-vae")
for command, name in ((embedded.pretrain, "pretrain"), (sample.sample, "sample"), (sample.generate, "generate"),
                      (sample.eval_cmd, "eval"), (distill.distill, "distill"), (distill.demo, "demo"),
                      (data.cache_cmd, "cache"), (app_verb.app_cmd, "app")):
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
        code = app(standalone_mode=False)  # typer's own errors come back here, to be said in one line
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # an unknown option, a value of the wrong type, a missing one
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            sys.exit(2)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {' '.join(message.split())}{where}", err=True)
        sys.exit(2)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:  # a full disk, a folder that cannot be written, ...: one line, not a traceback
        where = f": {exc.filename}" if exc.filename else ""
        typer.echo(f"error: {exc.strerror or str(exc).splitlines()[0]}{where}", err=True)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode does


if __name__ == "__main__":
    main()
