"""What a run checks before any work, so that a bad input stops it in one line and leaves nothing behind:
reward weights, teacher pair files and the --init-unet weights."""

from __future__ import annotations

from pathlib import Path

from hypersd.data.pairs import is_pair_file
from hypersd.errors import UserError, require
from hypersd.models.pipelines import unet_weights_file
from hypersd.rewards import check_reward_files
from hypersd.train.recipe import Recipe


def check_inputs(recipe: Recipe) -> None:
    """Every file the recipe names exists and is of the right kind."""
    check_reward_file_paths(recipe)
    check_pair_files(recipe)


def check_pair_files(recipe: Recipe) -> None:
    """Fail now, in one line, if a regression stage's teacher pair file is missing or foreign."""
    for i, stage in enumerate(recipe.stages):
        if stage.method == "dmd" and stage.dmd.regression_weight > 0:
            path = Path(stage.dmd.regression_pairs)
            if not is_pair_file(path):
                problem = "not found" if not path.exists() else "not a teacher pair file"
                raise UserError(f"stages.{i}.dmd.regression_pairs: {path} {problem} (make one with "
                                "`hypersd data pairs`, or pass --set)")


def check_reward_file_paths(recipe: Recipe) -> None:
    """Missing reward weights stop the run before it starts, not when the feedback stage begins."""
    for stage in recipe.stages:
        if stage.uses_feedback():
            for spec in stage.feedback.rewards:
                check_reward_files(spec)


def init_unet_file(recipe: Recipe, init_unet: Path | None) -> Path | None:
    """--init-unet needs a full-UNet generator stage to start; its file is checked before any work."""
    if init_unet is None:
        return None
    require(any(s.method == "dmd" and s.dmd.generator == "unet" for s in recipe.stages),
            "--init-unet starts a full-UNet generator: the recipe needs a dmd stage with dmd.generator: unet")
    unet_weights_file(init_unet)
    return Path(init_unet)
