"""Scribble adherence (hypersd.embedded.evaluator.adherence): the pairing rule, and the shipped
detector on real renders (the benchmark's ceiling) against renders with the objects moved."""

import random
from dataclasses import replace

import pytest

from hypersd.assets import EVALUATOR
from hypersd.embedded.evaluator.adherence import adherence, adheres
from hypersd.embedded.evaluator.detector import Detection, ShapesDetector
from hypersd.shapes.world import CATEGORIES, ShapeObject, render_array, sample_scene


def _scene(*objects):
    scene = sample_scene(random.Random(0), "two_objects")
    return replace(scene, objects=list(objects))


def _found(obj, dx=0, dy=0, **change):
    cx, cy = obj.center
    values = {"shape": obj.shape, "color": obj.color, "size": obj.size, "cx": int(cx) + dx, "cy": int(cy) + dy,
              "score": 1.0}
    return Detection(**{**values, **change})


A = ShapeObject("circle", "red", "small", 4, 4)
B = ShapeObject("square", "blue", "large", 16, 14)


def test_pairs_in_any_order_within_three_pixels():
    scene = _scene(A, B)
    assert adheres([_found(B), _found(A)], scene)
    assert adheres([_found(A, 3, 0), _found(B, 0, -3)], scene)
    assert adheres([_found(A, 2, 2), _found(B)], scene)       # 2.83 px
    assert not adheres([_found(A, 3, 1), _found(B)], scene)   # 3.16 px


@pytest.mark.parametrize("change", [{"shape": "triangle"}, {"color": "green"}])
def test_wrong_shape_or_colour_fails(change):
    assert not adheres([_found(A, **change), _found(B)], _scene(A, B))


def test_missing_or_extra_objects_fail():
    scene = _scene(A, B)
    assert not adheres([_found(A)], scene)
    assert not adheres([_found(A), _found(B), _found(A, 10, 10)], scene)
    assert adheres([_found(A, size="large"), _found(B)], scene)  # size is not asked


def test_detector_finds_real_renders_where_drawn_and_not_elsewhere():
    shipped_detector = ShapesDetector.load(EVALUATOR)
    rng = random.Random(7)
    scenes = [sample_scene(rng, CATEGORIES[i % len(CATEGORIES)]) for i in range(120)]
    images = render_array(scenes)
    assert sum(adherence(shipped_detector, images, scenes)) / len(scenes) >= 0.9
    moved = [replace(s, objects=[replace(o, x=o.x + 5) for o in s.objects]) for s in scenes]
    assert sum(adherence(shipped_detector, images, moved)) / len(scenes) <= 0.05
