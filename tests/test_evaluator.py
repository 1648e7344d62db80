import random

import torch

from hypersd.embedded.evaluator.detector import HEAD_LAYOUT, ShapesDetector, detector_loss, targets_for
from hypersd.embedded.evaluator.judge import judge
from hypersd.shapes import parse_caption, sample_scene


def _perfect_outputs(scenes):
    """Logits that encode the ground truth exactly, to test decoding without training."""
    t = targets_for(scenes)
    n, g = len(scenes), t["obj"].shape[-1]
    out = {"obj": t["obj"] * 20 - 10}
    for name, k in HEAD_LAYOUT.items():
        if name == "obj":
            continue
        logits = torch.zeros(n, k, g, g)
        idx = t[name].clamp_min(0)
        logits.scatter_(1, idx[:, None], 10.0)
        out[name] = logits
    return out


def test_targets_decode_back_to_scenes_that_pass(monkeypatch):
    rng = random.Random(3)
    scenes = [sample_scene(rng) for _ in range(200)]
    model = ShapesDetector()
    monkeypatch.setattr(model, "forward", lambda images: _perfect_outputs(scenes))
    found = model.detect(torch.zeros(len(scenes), 3, 32, 32))
    for scene, detections in zip(scenes, found):
        assert judge(detections, parse_caption(scene.caption)), (scene.caption, detections)
        centres = sorted((d.cx, d.cy) for d in detections)
        assert centres == sorted(tuple(int(c) for c in o.center) for o in scene.objects)


def test_loss_is_low_for_perfect_outputs_and_high_for_zero():
    scenes = [sample_scene(random.Random(i)) for i in range(8)]
    targets = targets_for(scenes)
    perfect = detector_loss(_perfect_outputs(scenes), targets)
    zero = detector_loss({k: torch.zeros_like(v) for k, v in _perfect_outputs(scenes).items()}, targets)
    assert perfect < 0.01 < 1.0 < zero

