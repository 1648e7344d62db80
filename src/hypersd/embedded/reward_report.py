"""Reward scores of a set of generated Shapes images, for the tables of feedback learning: the
clean-image reward, the presence reward, and the segmenter's agreement with the prompt (the
perceptual model read as a judge of which objects are there; not the ShapesEval evaluator)."""

from __future__ import annotations

import numpy as np
import torch

from hypersd.rewards.segmenter import ShapesSegmenter, decode_instances
from hypersd.rewards.shapes_clean import ShapesCleanReward
from hypersd.rewards.shapes_presence import ShapesPresenceReward
from hypersd.shapes.batches import to_tensor
from hypersd.shapes.captions import parse_caption


def named_objects(prompt: str) -> list[tuple[str, str]]:
    """The sorted (colour, shape) of every object a caption names."""
    return sorted((w.color, w.shape) for w in parse_caption(prompt).objects)


@torch.no_grad()
def reward_scores(images: np.ndarray, prompts: list[str], segmenter: ShapesSegmenter, batch: int = 200) -> dict:
    """Mean clean-image and presence rewards (0-10) and the fraction of images whose segmented instances are
    exactly the objects the prompt names (colour and shape; positions not checked)."""
    clean = ShapesCleanReward().freeze()
    presence = ShapesPresenceReward.from_segmenter(segmenter)
    scores, present, agree = [], [], 0
    for start in range(0, len(prompts), batch):
        x = to_tensor(images[start:start + batch])
        chunk = prompts[start:start + batch]
        scores.append(clean.score(x, chunk))
        present.append(presence.score(x, chunk))
        for found, prompt in zip(decode_instances(segmenter(x)), chunk):
            agree += found == named_objects(prompt)
    return {"shapes_clean": round(float(torch.cat(scores).mean()), 4),
            "shapes_presence": round(float(torch.cat(present).mean()), 4),
            "segmenter_agreement": round(agree / max(len(prompts), 1), 4)}
