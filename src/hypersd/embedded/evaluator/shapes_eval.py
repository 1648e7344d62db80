"""ShapesEval scoring: judge images against captions, per category and overall (GenEval mean)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from hypersd.embedded.evaluator.detector import ShapesDetector
from hypersd.embedded.evaluator.judge import judge
from hypersd.shapes.batches import to_tensor
from hypersd.shapes.captions import parse_caption
from hypersd.shapes.world import CATEGORIES


@torch.no_grad()
def judge_images(detector: ShapesDetector, images: np.ndarray, prompts: list[str],
                 batch: int = 500) -> list[dict]:
    """One record per image: category, pass/fail and what the detector saw."""
    records = []
    for start in range(0, len(prompts), batch):
        x = to_tensor(images[start:start + batch])
        for prompt, found in zip(prompts[start:start + batch], detector.detect(x)):
            caption = parse_caption(prompt)
            records.append({
                "prompt": prompt,
                "category": caption.category,
                "passed": judge(found, caption),
                "detected": [f"{d.size} {d.color} {d.shape} @({d.cx},{d.cy})" for d in found],
            })
    return records


def accuracy_table(records: list[dict]) -> dict[str, float]:
    """Accuracy per category present, and `overall` as the mean over the categories present."""
    by_cat = defaultdict(list)
    for r in records:
        by_cat[r["category"]].append(r["passed"])
    table = {c: float(np.mean(by_cat[c])) for c in CATEGORIES if by_cat[c]}
    table["overall"] = float(np.mean(list(table.values()))) if table else float("nan")
    return table
