import random

import numpy as np
import pytest

from hypersd.embedded.evaluator.judge import judge
from hypersd.shapes import CATEGORIES, COLORS, parse_caption, render, sample_scene
from hypersd.shapes.world import GAP, MARGIN, Scene, ShapeObject, region_of, relation_holds


@pytest.fixture(scope="module")
def scenes():
    rng = random.Random(123)
    return [sample_scene(rng, CATEGORIES[i % 6]) for i in range(600)]


class _Truth:
    def __init__(self, o: ShapeObject):
        self.shape, self.color, self.size = o.shape, o.color, o.size
        self.cx, self.cy = o.center


def test_every_scene_satisfies_its_caption(scenes):
    for s in scenes:
        caption = parse_caption(s.caption)
        assert caption.category == s.category
        assert judge([_Truth(o) for o in s.objects], caption), s.caption


def test_boxes_keep_margin_and_gap(scenes):
    for s in scenes:
        for o in s.objects:
            assert o.x >= MARGIN and o.y >= MARGIN
            assert o.x + o.side <= s.canvas - MARGIN and o.y + o.side <= s.canvas - MARGIN
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                gap_x = max(b.x - (a.x + a.side), a.x - (b.x + b.side))
                gap_y = max(b.y - (a.y + a.side), a.y - (b.y + b.side))
                assert max(gap_x, gap_y) >= GAP


def test_same_seed_same_scenes():
    a = [sample_scene(random.Random(7)).caption for _ in range(1)]
    b = [sample_scene(random.Random(7)).caption for _ in range(1)]
    assert a == b


def test_render_flat_fill_and_gradient():
    obj = ShapeObject("square", "red", "large", 9, 9)
    scene = Scene("a red square", "single", [obj], ((255, 255, 255), (0, 0, 0)))
    img = np.asarray(render(scene)).astype(int)
    assert img.shape == (32, 32, 3)
    assert (img[16, 16] == COLORS["red"]).all()
    # the box is exactly 14 px wide: inside pixels flat, outside pixels background
    assert (img[9, 9:23] == COLORS["red"]).all() and not (img[9, 8] == COLORS["red"]).all()
    # vertical gradient from white (top) to black (bottom), constant along rows
    assert img[0, 0].min() > 240 and img[31, 0].max() < 15
    assert (img[5, 0] == img[5, 31]).all()


def test_triangle_and_cross_geometry():
    tri = ShapeObject("triangle", "blue", "large", 9, 9)
    cross = ShapeObject("cross", "green", "large", 9, 9)
    bg = ((255, 255, 255), (255, 255, 255))
    t = np.asarray(render(Scene("", "single", [tri], bg))).astype(int)
    c = np.asarray(render(Scene("", "single", [cross], bg))).astype(int)
    assert (t[22, 10] == COLORS["blue"]).all()          # base along the bottom edge
    assert (t[9, 9] == 255).all()                       # top-left corner empty
    bar = round(14 / 3)                                 # 5 px bars, centred
    assert (c[16, 9] == COLORS["green"]).all() and (c[9, 16] == COLORS["green"]).all()
    assert (c[9, 9] == 255).all()
    # coverage along the left edge of the box sums to the bar thickness (edges anti-aliased)
    red_channel = c[:, 9, 0]
    coverage = (255 - red_channel) / (255 - COLORS["green"][0])
    assert coverage.sum() == pytest.approx(bar, abs=0.05)


@pytest.mark.parametrize("cx,cy,region", [
    (12, 12, "center"), (20, 20, "center"), (11, 12, None), (11, 11, "top left"),
    (21, 11, "top right"), (11, 21, "bottom left"), (21, 21, "bottom right"), (16, 8, None),
])
def test_regions(cx, cy, region):
    assert region_of(cx, cy) == region


def test_relations():
    assert relation_holds("to the left of", (5, 10), (9, 10))
    assert not relation_holds("to the left of", (5, 10), (8, 10))      # dx < 4
    assert relation_holds("above", (10, 5), (10, 15))                  # image y grows downwards
    assert relation_holds("below", (10, 15), (10, 5))
    assert relation_holds("to the left of", (0, 0), (6, 6)) and relation_holds("above", (0, 0), (6, 6))
    assert not relation_holds("to the right of", (5, 10), (9, 10))


def test_categories_are_balanced_when_drawn():
    rng = random.Random(0)
    counts = {c: 0 for c in CATEGORIES}
    for _ in range(3000):
        counts[sample_scene(rng).category] += 1
    assert all(400 < n < 600 for n in counts.values())
