"""Prompt files (plain text or .jsonl) and the standard ShapesEval prompt set."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hypersd.errors import UserError
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


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line (.txt), or a `prompt` field per line (.jsonl). Blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read prompt file {path}: {exc}") from None
    prompts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
                prompt = record["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{number}: expected a JSON object with a 'prompt' field") from None
            if not isinstance(prompt, str):
                raise UserError(f"{path}:{number}: 'prompt' must be a string")
            prompts.append(prompt)
        else:
            prompts.append(line.strip())
    if not prompts:
        raise UserError(f"prompt file has no prompts: {path}")
    return prompts


def write_prompt_file(path: Path, prompts: list[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(prompts) + "\n")
