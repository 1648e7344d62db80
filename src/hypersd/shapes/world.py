"""Scenes of the Shapes world: sampling (category -> objects -> caption) and rendering.

Everything here follows shared/shapes-world.md to the letter: canvas 32x32 drawn at 4x and
box-filtered, vertical HSV-drawn gradient background, six flat colours, four shapes, two sizes,
1 px margin, 2 px gap between boxes, six caption categories.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 210),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 190),
    "cyan": (30, 180, 200),
}
SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES = {"small": 8, "large": 14}
CATEGORIES = ("single", "position", "two_objects", "color_attr", "counting", "relation")
REGIONS = ("center", "top left", "top right", "bottom left", "bottom right")
RELATIONS = ("to the left of", "to the right of", "above", "below")
COUNT_WORDS = {2: "two", 3: "three"}
SUPERSAMPLE = 4
MARGIN = 1
GAP = 2


@dataclass(frozen=True)
class ShapeObject:
    """One object: its box is [x, x + side) x [y, y + side) in canvas pixels."""

    shape: str
    color: str
    size: str
    x: int
    y: int

    @property
    def side(self) -> int:
        return SIZES[self.size]

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.side / 2, self.y + self.side / 2)


@dataclass
class Scene:
    caption: str
    category: str
    objects: list[ShapeObject]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    canvas: int = 32
    meta: dict = field(default_factory=dict)


def region_of(cx: float, cy: float) -> str | None:
    """The named region that holds a centre, or None (the centre is then re-drawn)."""
    if 12 <= cx <= 20 and 12 <= cy <= 20:
        return "center"
    vertical = "top" if cy < 12 else "bottom" if cy > 20 else None
    horizontal = "left" if cx < 12 else "right" if cx > 20 else None
    if vertical is None or horizontal is None:
        return None
    return f"{vertical} {horizontal}"


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether `A {relation} B` holds for centres a and b (image y grows downwards)."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    if relation == "to the left of":
        return dx >= 4 and abs(dx) >= abs(dy)
    if relation == "to the right of":
        return -dx >= 4 and abs(dx) >= abs(dy)
    if relation == "above":
        return dy >= 4 and abs(dy) >= abs(dx)
    if relation == "below":
        return -dy >= 4 and abs(dy) >= abs(dx)
    raise ValueError(f"unknown relation {relation!r}")


def _separated(a: ShapeObject, b: ShapeObject) -> bool:
    return (
        a.x + a.side + GAP <= b.x
        or b.x + b.side + GAP <= a.x
        or a.y + a.side + GAP <= b.y
        or b.y + b.side + GAP <= a.y
    )


def _random_background(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    def one() -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0, 0.2), rng.uniform(0.75, 1.0))
        return (round(r * 255), round(g * 255), round(b * 255))

    return one(), one()


def _place(rng: random.Random, specs, canvas: int, accept, tries: int = 2000):
    """Uniform placement of (shape, color, size) specs by rejection; None when it keeps failing."""
    for _ in range(tries):
        objects = []
        for shape, color, size in specs:
            side = SIZES[size]
            hi = canvas - MARGIN - side
            obj = ShapeObject(shape, color, size, rng.randint(MARGIN, hi), rng.randint(MARGIN, hi))
            if not all(_separated(obj, other) for other in objects):
                break
            objects.append(obj)
        else:
            if accept(objects):
                return objects
    return None


def _article_phrase(obj_color: str, shape: str, size: str | None = None) -> str:
    return f"a {size} {obj_color} {shape}" if size else f"a {obj_color} {shape}"


def _draw_category(rng: random.Random, category: str, canvas: int):
    """Returns (caption, objects) for one category, or None if placement failed (re-drawn)."""
    colors, size_names = list(COLORS), list(SIZES)
    pick_size = lambda: rng.choice(size_names)  # noqa: E731
    if category == "single":
        shape, color, size = rng.choice(SHAPES), rng.choice(colors), pick_size()
        named = rng.random() < 0.5
        objects = _place(rng, [(shape, color, size)], canvas, lambda o: True)
        caption = _article_phrase(color, shape, size if named else None)
    elif category == "position":
        shape, color, region = rng.choice(SHAPES), rng.choice(colors), rng.choice(REGIONS)
        objects = _place(rng, [(shape, color, pick_size())], canvas,
                         lambda o: region_of(*o[0].center) == region)
        caption = f"a {color} {shape} in the {region}"
    elif category == "two_objects":
        s1, s2 = rng.sample(SHAPES, 2)
        c1, c2 = rng.choice(colors), rng.choice(colors)
        objects = _place(rng, [(s1, c1, pick_size()), (s2, c2, pick_size())], canvas, lambda o: True)
        caption = f"a {c1} {s1} and a {c2} {s2}"
    elif category == "color_attr":
        shape = rng.choice(SHAPES)
        c1, c2 = rng.sample(colors, 2)
        objects = _place(rng, [(shape, c1, pick_size()), (shape, c2, pick_size())], canvas,
                         lambda o: True)
        caption = f"a {c1} {shape} and a {c2} {shape}"
    elif category == "counting":
        n, shape, color = rng.choice((2, 3)), rng.choice(SHAPES), rng.choice(colors)
        objects = _place(rng, [(shape, color, pick_size()) for _ in range(n)], canvas, lambda o: True)
        caption = f"{COUNT_WORDS[n]} {color} {PLURALS[shape]}"
    elif category == "relation":
        while True:
            s1, s2 = rng.choice(SHAPES), rng.choice(SHAPES)
            c1, c2 = rng.choice(colors), rng.choice(colors)
            if (s1, c1) != (s2, c2):
                break
        relation = rng.choice(RELATIONS)
        objects = _place(rng, [(s1, c1, pick_size()), (s2, c2, pick_size())], canvas,
                         lambda o: relation_holds(relation, o[0].center, o[1].center))
        caption = f"a {c1} {s1} {relation} a {c2} {s2}"
    else:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    return None if objects is None else (caption, objects)


def sample_scene(rng: random.Random, category: str | None = None, canvas: int = 32) -> Scene:
    """Draw a category uniformly (unless given), then objects and positions that make it true."""
    category = category or rng.choice(CATEGORIES)
    while True:
        drawn = _draw_category(rng, category, canvas)
        if drawn is not None:
            caption, objects = drawn
            return Scene(caption, category, objects, _random_background(rng), canvas)


def draw_object(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill=None) -> None:
    """Draw one object at 4x into `draw` (its colour unless `fill` is given: masks use 255)."""
    k = SUPERSAMPLE
    x0, y0, side = obj.x * k, obj.y * k, obj.side * k
    fill = COLORS[obj.color] if fill is None else fill
    if obj.shape == "circle":
        draw.ellipse([x0, y0, x0 + side - 1, y0 + side - 1], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x0 + side / 2, y0), (x0 + side, y0 + side), (x0, y0 + side)], fill=fill)
    elif obj.shape == "cross":
        bar = round(obj.side / 3) * k
        off = (side - bar) // 2
        draw.rectangle([x0, y0 + off, x0 + side - 1, y0 + off + bar - 1], fill=fill)
        draw.rectangle([x0 + off, y0, x0 + off + bar - 1, y0 + side - 1], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def render(scene: Scene, size: int | None = None) -> Image.Image:
    """Render a scene at `size` pixels (default: its canvas): draw at 4x, box-filter down."""
    canvas = scene.canvas
    size = size or canvas
    big = canvas * SUPERSAMPLE
    top, bottom = (np.array(c, dtype=np.float64) for c in scene.background)
    ramp = np.linspace(0.0, 1.0, big)[:, None]
    rows = top[None, :] * (1 - ramp) + bottom[None, :] * ramp
    pixels = np.broadcast_to(rows[:, None, :], (big, big, 3))
    image = Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_object(draw, obj)
    return image.resize((size, size), Image.BOX)


def render_array(scenes: list[Scene]) -> np.ndarray:
    """Stack rendered scenes into a uint8 array of shape (n, H, W, 3)."""
    return np.stack([np.asarray(render(s)) for s in scenes])
