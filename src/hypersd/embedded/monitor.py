"""The quick evaluation of a training run (recipe key training.eval_every): ShapesEval overall
accuracy of the student on the first n standard prompts, fixed seeds, no FD (too few images)."""

from __future__ import annotations

from pathlib import Path

from hypersd.assets import EVALUATOR
from hypersd.embedded.evaluator.detector import ShapesDetector
from hypersd.embedded.evaluator.shapes_eval import accuracy_table, judge_images
from hypersd.inference.sample import generate
from hypersd.inference.settings import SampleSettings
from hypersd.shapes.prompts import standard_prompts


class QuickShapesEval:
    """monitor(pipe, settings) -> ShapesEval overall on `prompts` standard prompts (seeds 0..n-1)."""

    def __init__(self, prompts: int = 120, detector_dir: Path = EVALUATOR):
        self.prompts = standard_prompts()[:prompts]
        self.detector = ShapesDetector.load(detector_dir)

    def __call__(self, pipe, settings: SampleSettings) -> float:
        images = generate(pipe, self.prompts, settings, list(range(len(self.prompts))))
        return round(accuracy_table(judge_images(self.detector, images, self.prompts))["overall"], 4)


def run_monitor(recipe):
    """The monitor a recipe asks for (training.eval_every > 0 and Shapes data), else None."""
    if recipe.training.eval_every <= 0 or recipe.data.source != "shapes":
        return None
    return QuickShapesEval(recipe.training.eval_prompts)
