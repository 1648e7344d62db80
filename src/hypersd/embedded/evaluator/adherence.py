"""Scribble adherence: does a generated image hold the scribbled objects where they were drawn?

An image adheres to a scribbled scene when the ShapesEval detector's objects pair one to one with
the scene's objects, each pair with the same shape, the caption's colour (every Shapes caption names
each object's colour) and centres at most `tolerance` pixels apart (3 by default, Euclidean), with
no object besides. Size is not asked: a scribble's outline gives it, and the shape and the centre
already tell whether the drawing was followed.
"""

from __future__ import annotations

from itertools import permutations

import numpy as np

from hypersd.shapes.world import Scene

TOLERANCE = 3.0  # pixels between a detected centre and the scribbled object's centre


def pair_matches(found, obj, tolerance: float = TOLERANCE) -> bool:
    """One detection (shape, color, cx, cy) against one scene object."""
    cx, cy = obj.center
    return (found.shape == obj.shape and found.color == obj.color
            and float(np.hypot(found.cx - cx, found.cy - cy)) <= tolerance)


def adheres(detections: list, scene: Scene, tolerance: float = TOLERANCE) -> bool:
    """True when the detections are exactly the scene's objects, each where it was drawn."""
    objects = scene.objects
    if len(detections) != len(objects):
        return False
    return any(all(pair_matches(d, o, tolerance) for d, o in zip(order, objects))
               for order in permutations(detections))  # at most 3 objects: 6 orders


def adherence(detector, images: np.ndarray, scenes: list[Scene], tolerance: float = TOLERANCE,
              batch: int = 500) -> list[bool]:
    """Per image (uint8 (n, H, W, 3), image i drawn from scene i's scribble): does it adhere?"""
    from hypersd.shapes.batches import to_tensor

    out = []
    for start in range(0, len(scenes), batch):
        found = detector.detect(to_tensor(images[start:start + batch]))
        out += [adheres(f, s, tolerance) for f, s in zip(found, scenes[start:start + batch])]
    return out
