"""Scribble maps of Shapes scenes, drawn the way a hand would: the objects' outlines traced from their
exact masks, with 1-2 pixel strokes, a pixel of jitter, small gaps, and now and then a filled shape;
white strokes on black, the convention of `hypersd generate --control scribble`. The training pairs
of the scribble ControlNet (issue 15) and the scenes of its adherence benchmark."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from hypersd.shapes.annotations import instance_masks
from hypersd.shapes.world import Scene


@dataclass(frozen=True)
class ScribbleStyle:
    filled: float = 0.15        # chance that an object is drawn as a filled blob
    thick: float = 0.4          # chance of a 2-pixel stroke (else 1 pixel) at 32 pixels
    jitter: int = 1             # outline points moved by up to this many pixels
    gap: float = 0.12           # chance that each outline segment is left out (a pen lifted)


def _outline(mask: np.ndarray) -> np.ndarray:
    """(n, 2) outline vertices (x, y) of a coverage mask: its longest contour, simplified."""
    import cv2

    contours, _ = cv2.findContours((mask >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros((0, 2), np.int32)
    contour = max(contours, key=len)
    return cv2.approxPolyDP(contour, 0.7, True)[:, 0, :]  # the corners a hand would aim for


def _pieces(polyline: np.ndarray, length: float) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The polyline's segments cut into pieces of at most `length` pixels (integer end points)."""
    out = []
    for a, b in zip(polyline[:-1].astype(np.float32), polyline[1:].astype(np.float32)):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / length)))
        ends = [tuple(int(round(v)) for v in a + (b - a) * i / n) for i in range(n + 1)]
        out += list(zip(ends[:-1], ends[1:]))
    return out


def scribble_map(scene: Scene, rng: random.Random, style: ScribbleStyle = ScribbleStyle(),
                 size: int | None = None) -> np.ndarray:
    """(size, size, 3) uint8: white strokes on black for every object of the scene."""
    import cv2

    size = size or scene.canvas
    scale = size / scene.canvas
    canvas = np.zeros((size, size), np.uint8)
    for mask in instance_masks(scene):
        points = _outline(mask)
        if len(points) < 2:
            continue
        points = (points.astype(np.float32) + 0.5) * scale - 0.5
        points += np.array([[rng.randint(-style.jitter, style.jitter) for _ in range(2)]
                            for _ in range(len(points))], np.float32) * (rng.random() < 0.5)
        points = np.round(points).astype(np.int32).clip(0, size - 1)
        if rng.random() < style.filled:
            cv2.fillPoly(canvas, [points], 255)
            continue
        thickness = max(1, round((2 if rng.random() < style.thick else 1) * scale))
        for a, b in _pieces(np.concatenate([points, points[:1]]), 3 * scale):
            if rng.random() >= style.gap:  # a gap is a short lift of the pen, not a missing side
                cv2.line(canvas, a, b, 255, thickness)
    return np.repeat(canvas[:, :, None], 3, axis=2)
