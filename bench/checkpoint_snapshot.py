"""A LoRA snapshot from a run's latest checkpoint, for a run that stopped without keeping snapshots:
RUN/snapshots/<stage>-<step>.safetensors, as the stage's file would hold it at that step (then
`python bench/snapshots.py RUN` evaluates it beside the others).

    python bench/checkpoint_snapshot.py bench/runs/long/dmd2-one-step-base-s0
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hypersd.assets import TEACHER
from hypersd.progress import quiet_libraries
from hypersd.train.checkpoint import latest_checkpoint, read_position, restore_checkpoint
from hypersd.train.outputs import stage_name
from hypersd.train.recipe import load_recipe
from hypersd.train.run import Run
from hypersd.train.stages import _save_student


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args()
    folder = latest_checkpoint(args.run)
    if folder is None:
        raise SystemExit(f"{args.run}: no checkpoint")
    position = read_position(folder)
    recipe = load_recipe(args.run / "recipe.yaml", ["data.pool_size=16"])  # the data is not used here
    index = position["stage"]
    stage = recipe.stages[index]
    out = args.run / "snapshots" / f"{stage_name(stage)}-{position['step']:07d}.safetensors"
    if out.exists():
        raise SystemExit(f"{out} exists")
    with tempfile.TemporaryDirectory() as scratch:
        run = Run(recipe, TEACHER, Path(scratch) / "run")
        run.model.unet.set_adapter(run.roles(index)[0])
        restore_checkpoint(folder, run.model.unet)
        _save_student(run, index, stage, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
