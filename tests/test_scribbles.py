"""Scribble maps of Shapes scenes (hypersd.shapes.scribbles): strokes where the objects are, white on
black, with the hand-drawn variations (thickness, gaps, fills) the ControlNet is trained on."""

import random

import numpy as np

from hypersd.shapes.scribbles import ScribbleStyle, scribble_map
from hypersd.shapes.world import ShapeObject, sample_scene


def _ink_centre(image: np.ndarray) -> tuple[float, float]:
    """The centre of the strokes' bounding box (an object's centre is its box's)."""
    ys, xs = np.nonzero(image[..., 0])
    return (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2


def test_strokes_trace_each_object_where_it_is():
    rng = random.Random(0)
    for _ in range(40):
        scene = sample_scene(rng, "single")
        image = scribble_map(scene, rng)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and set(np.unique(image)) <= {0, 255}
        cx, cy = _ink_centre(image)
        ox, oy = scene.objects[0].center
        assert abs(cx - ox) <= 3 and abs(cy - oy) <= 3  # the adherence check's tolerance


def test_outline_is_hollow_and_a_filled_style_is_not():
    obj = ShapeObject("square", "red", "large", 8, 8)
    scene = sample_scene(random.Random(1), "single")
    scene.objects = [obj]
    hollow = scribble_map(scene, random.Random(2), ScribbleStyle(filled=0, gap=0, jitter=0, thick=0))
    filled = scribble_map(scene, random.Random(2), ScribbleStyle(filled=1, jitter=0))
    cx, cy = (int(v) for v in obj.center)
    assert hollow[cy, cx, 0] == 0 and hollow[obj.y, cx, 0] == 255
    assert filled[cy, cx, 0] == 255 and filled[..., 0].sum() > 2 * hollow[..., 0].sum()


def test_gaps_and_thickness_vary_the_strokes():
    scene = sample_scene(random.Random(3), "single")
    scene.objects = [ShapeObject("circle", "blue", "large", 6, 6)]
    plain = scribble_map(scene, random.Random(4), ScribbleStyle(filled=0, gap=0, jitter=0, thick=0))
    gappy = scribble_map(scene, random.Random(4), ScribbleStyle(filled=0, gap=0.5, jitter=0, thick=0))
    thick = scribble_map(scene, random.Random(4), ScribbleStyle(filled=0, gap=0, jitter=0, thick=1))
    assert gappy[..., 0].sum() < plain[..., 0].sum() < thick[..., 0].sum()


def test_maps_scale_to_a_larger_canvas():
    rng = random.Random(5)
    scene = sample_scene(rng, "two_objects")
    big = scribble_map(scene, rng, size=256)
    assert big.shape == (256, 256, 3) and big[..., 0].any()
