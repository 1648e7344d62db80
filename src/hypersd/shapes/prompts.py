"""The standard ShapesEval prompt set: balanced over the six caption categories, fixed seed."""

from __future__ import annotations

import random

from hypersd.shapes.world import CATEGORIES, sample_scene

STANDARD_SEED = 20240421
STANDARD_SIZE = 600  # the ShapesEval prompt set (100 per category)
EVAL_SIZE = 2400  # default of `hypersd eval`: enough images for the Frechet distance; starts with the 600


def standard_prompts(n: int = STANDARD_SIZE, seed: int = STANDARD_SEED) -> list[str]:
    """n prompts balanced over the six categories (round-robin), fixed seed.

    Prompt i depends only on i, so a longer set starts with every shorter one.
    """
    rng = random.Random(seed)
    return [sample_scene(rng, CATEGORIES[i % len(CATEGORIES)]).caption for i in range(n)]
